//! The `tollgate` binary: parses the command line and runs one command.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = tollgate::cli::Cli::parse();
    std::process::exit(tollgate::cli::run(cli));
}
