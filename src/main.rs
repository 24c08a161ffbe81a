//! The `clef` binary: parses the command line, sets up telemetry, and hands
//! over to [`clef::cli`].

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = clef::cli::Cli::parse();
    // A server's fatal error goes to its logs; a client command's to its
    // user, once.
    let serving = matches!(cli.command, clef::cli::Command::Serve(_));
    let _telemetry = match clef::telemetry::init() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot set up telemetry: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match clef::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let said = clef::telemetry::chain(&e);
            if serving {
                tracing::error!("{said}");
            } else {
                eprintln!("error: {said}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
