//! `dronedelivery`: the engine's binary. Thin on purpose; see the library.

use std::process::ExitCode;

use dronedelivery_engine::config::{parse_cli, Cli, ConfigError, RoleArg};

/// The engine allocates many small, short-lived objects per delivery
/// (messages, JSON documents, actor state); mimalloc serves them with less
/// CPU and returns memory to the system more readily than glibc's malloc
/// (see BENCHMARKS.md for the measured difference).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use dronedelivery_engine::pages::{prefer_small_pages, PageSetting};
use dronedelivery_engine::runtime::{self, Scheduling};
use dronedelivery_engine::{admin_cli, telemetry, Application, Command};

fn main() -> ExitCode {
    let cli = match parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        // --help, --version and usage errors print and exit as clap does.
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Before any thread starts (see the `pages` module).
    let pages = match &cli.command {
        Command::Serve(args) => Some(prefer_small_pages(args.role == RoleArg::Gateway)),
        Command::Admin(_) => None,
    };
    match runtime::build() {
        Ok((runtime, scheduling)) => runtime.block_on(run(cli, pages, scheduling)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, pages: Option<PageSetting>, scheduling: Scheduling) -> ExitCode {
    match cli.command {
        Command::Admin(args) => admin_cli::run(args).await,
        Command::Serve(args) => {
            let _telemetry =
                match telemetry::init_telemetry(args.log_format, args.otlp_endpoint.as_deref()) {
                    Ok(guard) => guard,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return ExitCode::from(2);
                    }
                };
            if let Some(pages) = &pages {
                pages.log();
            }
            scheduling.log();
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
