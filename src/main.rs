//! The `provhost` binary: parse the command line, set up logging, run the command
//! (`cli/`), turn its outcome into an exit code. The only place `anyhow` is used.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::quiet_on_closed_pipe(&args.command);
    cli::init_logging(args.log_format, args.command.default_log_level());
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::exit::message(&e));
            ExitCode::from(cli::exit::code(&e))
        }
    }
}
