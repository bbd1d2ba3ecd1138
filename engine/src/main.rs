//! `dronedelivery`: the engine's binary. Thin on purpose; see the library.

use std::process::ExitCode;

use clap::Parser;
use dronedelivery_engine::{admin_cli, telemetry, Application, Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => admin_cli::run(args).await,
        Command::Serve(args) => {
            telemetry::init_logging(args.log_format);
            let result = async {
                let app = Application::build(&args).await?;
                app.run_until_stopped().await
            }
            .await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = ?e, "dronedelivery failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
