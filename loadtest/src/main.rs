//! `ringcast-load`: an open-loop load generator for ringcast and NATS over
//! WebSocket. See loadtest/README.md.

mod chart;
mod cli;
mod deflate;
mod http;
mod jetstream;
mod nats;
mod pacer;
mod payload;
mod procfs;
mod publisher;
mod report;
mod ringcast;
mod rng;
mod runner;
mod scenario;
mod schedule;
mod soak;
mod sse;
mod stats;
mod subscriber;
mod ws;

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;

use cli::{Cli, Command, RunArgs, SoakArgs};
use scenario::Plan;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Chart(args) => chart::draw(&args),
        Command::Soak(args) => soak(&args),
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
    let (runtime, workers) = runtime(args.workers)?;
    let report = runtime.block_on(runner::run(&plan, workers))?;
    // Connection tasks never end by themselves; do not wait for them.
    runtime.shutdown_background();

    print!("{}", report.summary());
    write_json(args.json.as_deref(), &report)
}

fn soak(args: &SoakArgs) -> Result<()> {
    let (runtime, _) = runtime(args.workers)?;
    let report = runtime.block_on(soak::run(args))?;
    runtime.shutdown_background();

    print!("{}", report.summary());
    write_json(args.json.as_deref(), &report)?;
    if !report.passed {
        bail!("soak failed: {}", report.failures.join("; "));
    }
    Ok(())
}

/// The client runtime, with `workers` threads (default: the available
/// parallelism, which respects taskset), after raising the open-file limit.
fn runtime(workers: Option<usize>) -> Result<(tokio::runtime::Runtime, usize)> {
    if let Err(err) = procfs::raise_open_file_limit() {
        eprintln!("warning: could not raise the open file limit: {err}");
    }
    let workers = match workers {
        Some(workers) => workers.max(1),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(stats::assign_worker_slot)
        .build()?;
    Ok((runtime, workers))
}

fn write_json(path: Option<&std::path::Path>, report: &impl serde::Serialize) -> Result<()> {
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
