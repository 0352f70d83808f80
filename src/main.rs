//! The `tagfence` binary: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tagfence::cli::Cli::parse();
    match tagfence::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // The whole chain on one line: "planning the firewall change: unknown service tag …".
            eprintln!("tagfence: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
