//! The `hdx-jobs-server` binary: reads the environment (and `--bind`), then serves until
//! SIGINT/SIGTERM. `hdx-jobs serve` does the same.

use std::process::ExitCode;

use hdx_jobs::signals::shutdown_signal;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut config = match hdx_jobs_server::ServerConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--bind", Some(addr)) => match addr.parse() {
                Ok(addr) => config.bind = addr,
                Err(e) => {
                    eprintln!("error: --bind {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            _ => {
                eprintln!("usage: hdx-jobs-server [--bind ADDR]   (settings from the environment; see README)");
                return ExitCode::FAILURE;
            }
        }
    }
    match hdx_jobs_server::serve(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
