//! `hdx-jobs-import`: geopreview's import child, installed beside `hdx-jobs`. The worker (and
//! `hdx-jobs geopreview import`) runs it for each import, confined (cleared environment, resource
//! limits, killed at the deadline): the request comes on stdin, progress and the report go out
//! as JSON lines on stdout (`hdx_jobs::geo::child`). It is the only executable that links GDAL,
//! so `hdx-jobs` processes never load libgdal and its libraries.
//!
//! It takes no arguments; `--version` and `--help` answer for a person checking an install.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {
            let code =
                hdx_jobs_import::child_main(std::io::stdin().lock(), std::io::stdout().lock());
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        ["--version" | "-V"] => {
            println!("hdx-jobs-import {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["--help" | "-h"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

const USAGE: &str = "hdx-jobs-import: geopreview's GDAL import child, run by hdx-jobs for each \
import (an import request as JSON on stdin, progress and the report as JSON lines on stdout). \
It takes no arguments; `hdx-jobs geopreview import FILE --resource-id ID` is the command to \
import a file by hand.";
