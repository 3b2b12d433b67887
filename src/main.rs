use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ringcast::{server, Config, Server};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let config = Config::parse();
    let addr = format!("{}:{}", config.host, config.port);
    let server = match Server::bind(config).await {
        Ok(server) => server,
        Err(err) => {
            tracing::error!(%addr, error = %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        shutdown.cancel();
    });
    server.run().await;
    ExitCode::SUCCESS
}
