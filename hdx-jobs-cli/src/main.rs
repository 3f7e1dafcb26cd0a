//! The `hdx-jobs` binary: parses the command line and hands it to [`hdx_jobs_cli::run`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = hdx_jobs_cli::Cli::parse();
    match hdx_jobs_cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
