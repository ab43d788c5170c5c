//! The `vfolder-controller` binary: parses the command line, loads the configuration and
//! hands over to [`vfolder_controller::cli`]; turns an error into one line on stderr and
//! its class's exit code.

use std::process::ExitCode;

use clap::Parser;
use vfolder_controller::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.load_config() {
        Ok(config) => cli::execute(cli, config).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
