//! The `tollgate` binary: parses the command line and runs a node or the echo backend.

use clap::Parser;
use tollgate::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(cmd) = cli.command else {
        use clap::CommandFactory;
        Cli::command().print_help()?;
        println!();
        return Ok(());
    };
    if let Command::Cluster(c) = &cmd {
        return tollgate::cluster_cmd::run(c);
    }
    if let Command::K8s(c) = cmd {
        return tollgate::k8s_cmd::run(c);
    }
    tollgate::cli::init_logging(&cli.log_format, &cli.log_level)?;
    let workers = cli.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // One worker: the current-thread scheduler (no work-stealing machinery, wakeups stay
    // local), like one nginx worker process.
    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(workers)
            .build()?
    };
    rt.block_on(async move {
        match cmd {
            Command::Node(args) => tollgate::node::run(*args).await,
            Command::Echo(args) => tollgate::echo::run(args).await,
            Command::Cluster(_) | Command::K8s(_) => {
                unreachable!("handled before the runtime starts")
            }
        }
    })
}
