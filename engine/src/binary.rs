//! What the service binaries (`btree-server`, `chirper-server`) share around their own logic:
//! logging set-up, the check that flags fit the chosen mode, a fresh cluster id for
//! `--write-config`, and the exit convention.

use std::process::ExitCode;

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// How a server binary was asked to run, for [`check_server_flags`].
pub struct ServerFlags {
    /// `--write-config` was given.
    pub write_config: bool,
    /// `--config` was given (one node of a TCP deployment).
    pub config: bool,
    /// `--metrics-addr` was given.
    pub metrics_addr: bool,
    /// `--durability` or `--data-dir` was given.
    pub durability: bool,
}

/// Refuses flags that do not fit the mode: metrics need a TCP node, durability flags are
/// written by `--write-config` (a TCP node reads them from its deployment file).
pub fn check_server_flags(f: &ServerFlags) -> Result<(), String> {
    if f.metrics_addr && (!f.config || f.write_config) {
        return Err("--metrics-addr needs --config and --node (a node of a TCP deployment)".into());
    }
    if f.durability && !f.write_config {
        return Err(
            "--durability and --data-dir go with --write-config (a TCP node reads them \
                    from its deployment file)"
                .into(),
        );
    }
    Ok(())
}

/// A random 128-bit cluster id for a deployment file written now (`--write-config`): two
/// deployments generated with the same parameters then differ, and a data directory of one is
/// refused by the other (see `groups::log::identity`).
pub fn random_cluster_id() -> groups::ids::ClusterId {
    groups::ids::ClusterId(rand::random())
}

/// The credentials of a new deployment file written to `config_path` (`--write-config`): a
/// fresh random cluster secret beside it (`d.toml` -> `d.secret`, mode 0600), named as the
/// returned configuration's `secret_file`, so nodes of the deployment authenticate their links
/// by default; with `tls` (`--write-config --tls`) also a cluster CA and one certificate and key
/// per node, clients included, in `d.tls/` (mode 0600 each), named in its `[tls]` table, so
/// links are mutual TLS and each member proves which member it is. Says on stderr what it
/// wrote.
pub fn with_credentials(
    cluster: groups::config::ClusterConfig,
    config_path: &std::path::Path,
    tls: bool,
) -> Result<groups::config::ClusterConfig, String> {
    use groups::credentials;
    let secret = credentials::beside(config_path, "secret");
    let mut cluster = credentials::with_new_secret(cluster, &secret).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {} (the cluster secret, mode 0600; keep it with the deployment file)",
        secret.display()
    );
    if tls {
        let dir = credentials::beside(config_path, "tls");
        cluster = credentials::with_new_tls(cluster, &dir).map_err(|e| e.to_string())?;
        eprintln!(
            "wrote {}/: a cluster CA (ca.crt) and a certificate and key per node \
             (node-N.crt, node-N.key), mode 0600; give each node its own key",
            dir.display()
        );
    }
    Ok(cluster)
}

/// Exit status 0, or 2 with `name: error` on stderr.
pub fn exit(name: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs one command through `proxy` as node `me` of a TCP deployment: starts the node, waits
/// up to `timeout` for the reply, stops the node. `Ok(None)` means no reply in time.
pub fn call_once<P: crate::client::Proxy + Send + 'static>(
    cluster: &groups::config::ClusterConfig,
    me: groups::ids::NodeId,
    proxy: P,
    command: P::Command,
    timeout: std::time::Duration,
) -> Result<Option<Result<P::Reply, crate::client::ClientError>>, String>
where
    P::Command: Send + 'static,
    P::Reply: Send + 'static,
{
    let (app, handle) = crate::client::HandleApp::from_proxies(vec![proxy]);
    let node = groups::node::GroupsNode::in_memory(
        std::sync::Arc::new(cluster.clone()),
        me,
        groups::node::NodeOptions::fresh(),
    );
    let tcp = groups::runtime::tcp::TcpNode::bind(node, app).map_err(|e| e.to_string())?;
    let stop = tcp.stop_flag();
    let thread = std::thread::spawn(move || tcp.run(None).map(|_| ()));
    let reply = handle.call(0, command, timeout);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = thread.join();
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_that_do_not_fit_the_mode_are_refused() {
        let f = |write_config, config, metrics_addr, durability| ServerFlags {
            write_config,
            config,
            metrics_addr,
            durability,
        };
        assert!(check_server_flags(&f(false, true, true, false)).is_ok());
        assert!(check_server_flags(&f(true, false, false, true)).is_ok());
        assert!(check_server_flags(&f(false, false, false, false)).is_ok());
        assert!(check_server_flags(&f(false, false, true, false))
            .unwrap_err()
            .contains("--metrics-addr needs --config"));
        assert!(check_server_flags(&f(true, true, true, false)).is_err());
        assert!(check_server_flags(&f(false, true, false, true))
            .unwrap_err()
            .contains("go with --write-config"));
    }
}
