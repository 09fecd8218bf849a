//! One command against a TCP deployment of the replicated B+-tree.
//!
//! ```text
//! btree-client --config FILE --node C get 42
//! btree-client --config FILE --node C put 42 hello
//! btree-client --config FILE --node C scan 0 100 [LIMIT]
//! ```
//!
//! `C` is a client node of the deployment (a node with no subscriptions that accepts no log).

use btree_service::cli::{parse_command, render_reply, DeploymentFile};
use btree_service::service::TreeService;
use clap::Parser;
use engine::psmr::proxy::ClientProxy;
use engine::wire::ClientId;
use groups::ids::NodeId;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Run one command against the replicated B+-tree")]
struct Args {
    #[arg(long)]
    config: PathBuf,
    /// A client node of the deployment.
    #[arg(long)]
    node: u32,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
    /// get K | put K V | update K V | del K | scan LO HI [LIMIT] | size
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

fn run(args: &Args) -> Result<String, String> {
    let words: Vec<&str> = args.command.iter().map(String::as_str).collect();
    let cmd = parse_command(&words)?;
    let file = DeploymentFile::read(&args.config)?;
    let me = NodeId(args.node);
    let n = file
        .cluster
        .node(me)
        .ok_or_else(|| format!("node {me} is not in {}", args.config.display()))?;
    if !n.subscriptions.is_empty() || file.cluster.logs.iter().any(|l| l.acceptors.contains(&me)) {
        return Err(format!(
            "node {me} is a replica or acceptor, not a client node"
        ));
    }
    let service = Arc::new(TreeService::try_new(file.tree.clone())?);
    let proxy = ClientProxy::new(
        ClientId::new(me, engine::host::client::incarnation_index()),
        service,
        file.mode,
        file.workers,
        500,
    );
    let reply = engine::binary::call_once(
        &file.cluster,
        me,
        proxy,
        cmd,
        Duration::from_secs_f64(args.timeout_s),
    )?;
    match reply {
        Some(Ok(r)) => Ok(render_reply(&r)),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("no reply within {} s", args.timeout_s)),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("btree-client: {e}");
            ExitCode::from(2)
        }
    }
}
