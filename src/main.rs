use std::io::IsTerminal;

use clap::Parser;
use ringcast::{server, Config, Server};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let server = Server::bind(Config::parse()).await?;
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        shutdown.cancel();
    });
    server.run().await;
    Ok(())
}
