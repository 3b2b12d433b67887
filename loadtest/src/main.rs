//! `ringcast-load`: an open-loop load generator for ringcast and NATS over
//! WebSocket. See loadtest/README.md.

mod chart;
mod cli;
mod nats;
mod payload;
mod procfs;
mod publisher;
mod report;
mod ringcast;
mod runner;
mod scenario;
mod stats;
mod subscriber;
mod ws;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command, RunArgs};
use scenario::Plan;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Chart(args) => chart::draw(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> Result<()> {
    let plan = Plan::from_args(args)?;
    if let Err(err) = procfs::raise_open_file_limit() {
        eprintln!("warning: could not raise the open file limit: {err}");
    }
    let workers = match args.workers {
        Some(workers) => workers.max(1),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(stats::assign_worker_slot)
        .build()?;
    let report = runtime.block_on(runner::run(&plan, workers))?;
    // Connection tasks never end by themselves; do not wait for them.
    runtime.shutdown_background();

    print!("{}", report.summary());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
