//! Runs one Chirper command against a TCP deployment.
//!
//! ```text
//! chirper-client --config FILE --node 1000 post 3 hello world
//! chirper-client --config FILE --node 1000 timeline 7
//! ```

use chirper::cli::{parse_command, render_response, DeploymentFile};
use clap::Parser;
use engine::partitioned::proxy::{ClientOptions, ScaleOutClient};
use engine::wire::ClientId;
use groups::ids::NodeId;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    about = "Run one Chirper command: create U | post U TEXT | follow A B | unfollow A B | timeline U"
)]
struct Args {
    #[arg(long)]
    config: PathBuf,
    /// A client node of the deployment file.
    #[arg(long)]
    node: u32,
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
    /// The command.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

fn run(args: &Args) -> Result<String, String> {
    let file = DeploymentFile::read(&args.config)?;
    let me = NodeId(args.node);
    if file.role(me)?.is_some() {
        return Err(format!("node {me} is a replica, not a client node"));
    }
    let words: Vec<&str> = args.command.iter().map(String::as_str).collect();
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let cmd = parse_command(&words, id)?;
    let service = Arc::new(file.section.service()?);
    let mut o = ClientOptions::new(file.scheme, file.section.partitions);
    o.retry_max = file.section.retry_max;
    let proxy = ScaleOutClient::new(
        ClientId::new(me, engine::host::client::incarnation_index()),
        service,
        o,
    );
    let reply = engine::binary::call_once(
        &file.cluster,
        me,
        proxy,
        cmd,
        Duration::from_secs_f64(args.timeout_s),
    )?;
    match reply {
        Some(Ok(r)) => Ok(render_response(&r)),
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
            eprintln!("chirper-client: {e}");
            ExitCode::from(2)
        }
    }
}
