//! The `hdx-jobs` binary: parses the command line and hands it to [`hdx_jobs_cli::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Parsed before the runtime starts its threads: `--version`, `--help` and a mistyped command
    // answer at once.
    let cli = hdx_jobs_cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match hdx_jobs_cli::run(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
