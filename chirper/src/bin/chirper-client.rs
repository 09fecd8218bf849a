//! Runs one Chirper command against a TCP deployment.
//!
//! ```text
//! chirper-client --config FILE --node 1000 post 3 hello world
//! chirper-client --config FILE --node 1000 timeline 7
//! ```

fn main() -> std::process::ExitCode {
    engine::serve::partitioned::client::<chirper::service::Chirper>()
}
