//! The `changeflow` binary: CLI, configuration, telemetry; the commands live in the library.

use std::process::ExitCode;

use clap::Parser;

use changeflow::cmd::{self, Cli, Command, hint};
use changeflow::config::Config;
use changeflow::config::redact::scrub;
use changeflow::observe::{error_text, telemetry};
use changeflow::targets;

// Every event allocates a handful of small objects; mimalloc makes that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The routes are checked against the targets that exist.
    let origin = cli
        .config
        .as_ref()
        .map_or_else(|| "configuration".to_owned(), |p| p.display().to_string());
    let loaded = Config::load_with_sets(cli.config.as_deref(), &cli.sets)
        .and_then(|c| c.check_routes(&targets::built_in(), &origin).map(|()| c));
    let mut config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "hint: `changeflow check-config` validates a configuration; config/changeflow.toml documents every key"
            );
            return ExitCode::from(2);
        }
    };
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    telemetry::init(&config.log);
    let long_running = matches!(cli.command, Command::Run { .. } | Command::Demo { .. });
    let secrets = config.secrets();
    match cmd::run(cli.command, config.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = scrub(&error_text::tidy(&format!("{e:#}")), &secrets);
            let hint = scrub(&hint::hint(&e, &config), &secrets);
            if long_running {
                // Log pipelines see why the service stopped.
                tracing::error!(error = %message, hint = %hint, "changeflow stopped");
            }
            eprintln!("error: {message}");
            eprintln!("hint: {hint}");
            ExitCode::FAILURE
        }
    }
}
