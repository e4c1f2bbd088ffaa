use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match netpath::cli::run(netpath::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netpath: {e}");
            ExitCode::FAILURE
        }
    }
}
