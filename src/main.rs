use std::cell::Cell;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringcast::config::Command;
use ringcast::{client_command, shutdown, token_command, Config, Server};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ringcast: cannot read .env: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Before logging starts: the client's standard output carries server
    // frames only.
    match &config.command {
        Some(Command::Token(args)) => return token_command::run(&config, args),
        Some(Command::Client(args)) => return client_command::run(args),
        None => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    purge_memory_at_once();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
        .on_thread_park(release_memory_when_idle)
        .build()
        .expect("building the tokio runtime");
    runtime.block_on(serve(config))
}

/// Every how many task polls a worker takes a task from the runtime's
/// global queue. A publish to a topic of 1000 subscribers wakes 1000
/// writers; a worker's own queue holds 256, and the rest overflow to the
/// global queue, which by default (a self-tuned interval) is looked at so
/// rarely under load that those writers fall hundreds of events behind.
/// Measured (1 topic x 1000 subscribers, server on one core; report in
/// `loadtest/reports/2026-12-06/fair-tail/`): at 2M deliveries/s, p99
/// 105-150 ms by default, 15-18 ms at 2, 30-34 ms at 4, 137 ms at 16, and
/// 248 ms at 1.
const GLOBAL_QUEUE_INTERVAL: u32 = 2;

/// mimalloc keeps freed pages for reuse and returns them only while the
/// thread allocates, so after a burst of connections an idle server would
/// keep its peak memory. A worker about to sleep hands back what it can,
/// but at most every `RELEASE_INTERVAL`: the forced collection walks every
/// page of the thread's heap, and under a steady trickle of events (chat,
/// 50k events/s) a worker sleeps thousands of times a second, which made
/// that walk 12% of the server's CPU. What a skipped collection leaves is
/// small because pages are purged as soon as they fall empty
/// (`purge_memory_at_once`). Measured (`loadtest/reports/2026-12-06/park-collect/`):
/// chat 50k/s 14.4-15.0 to 12.7-13.2 µs of CPU per event; 10,000 idle
/// connections 3.79-3.82 KiB each, as with a collection at every sleep.
fn release_memory_when_idle() {
    thread_local!(static LAST_RELEASE: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    if LAST_RELEASE
        .get()
        .is_some_and(|last| now - last < RELEASE_INTERVAL)
    {
        return;
    }
    LAST_RELEASE.set(Some(now));
    // SAFETY: mi_collect has no preconditions; it only touches this
    // thread's heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// How often, at most, a worker about to sleep runs a forced collection.
const RELEASE_INTERVAL: Duration = Duration::from_millis(100);

/// mimalloc.h's `mi_option_purge_delay` (mimalloc v2, which
/// libmimalloc-sys builds by default); the crate names no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Pages that fall empty go back to the OS at once instead of after
/// mimalloc's default 10 ms, so that a worker that sleeps without
/// collecting (see `release_memory_when_idle`) keeps little.
fn purge_memory_at_once() {
    // SAFETY: setting an option has no preconditions; mimalloc reads it
    // at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

async fn serve(config: Config) -> ExitCode {
    let addr = format!("{}:{}", config.host, config.port);
    let server = match Server::bind(config).await {
        Ok(server) => server,
        Err(err) => {
            tracing::error!(%addr, error = %err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let stop = server.shutdown();
    let failure = server.startup_failure();
    tokio::spawn(async move {
        shutdown::signal().await;
        stop.begin();
    });
    server.run().await;
    match failure.get() {
        Some(_) => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    }
}
