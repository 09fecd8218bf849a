//! One command against a TCP deployment of the replicated B+-tree.
//!
//! ```text
//! btree-client --config FILE --node C get 42
//! btree-client --config FILE --node C put 42 hello
//! btree-client --config FILE --node C scan 0 100 [LIMIT]
//! btree-client --config FILE --node C --insecure ...   (a deployment without a secret_file)
//! ```
//!
//! `C` is a client node of the deployment (a node with no subscriptions that accepts no log).

fn main() -> std::process::ExitCode {
    engine::serve::psmr::client::<btree_service::service::TreeService>()
}
