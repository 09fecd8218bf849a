//! Runs one Chirper command against a TCP deployment.
//!
//! ```text
//! chirper-client --config FILE --node 1000 post 3 hello world
//! chirper-client --config FILE --node 1000 timeline 7
//! chirper-client --config FILE --node C --insecure ...   (a deployment without a secret_file)
//! ```

fn main() -> std::process::ExitCode {
    engine::serve::partitioned::client::<chirper::service::Chirper>()
}
