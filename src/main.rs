//! The `changeflow` binary: CLI, configuration, telemetry, run until a shutdown signal.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use changeflow::cli::{Cli, Command};
use changeflow::config::Config;
use changeflow::redact::redact_uri;
use changeflow::source::StartAt;
use changeflow::{app, demo, setup, shutdown, tail, telemetry};

// Every event allocates a handful of small objects; mimalloc makes that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load_with_sets(cli.config.as_deref(), &cli.sets) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let runtime = || tokio::runtime::Runtime::new().context("starting the async runtime");
    let result = match cli.command {
        Command::CheckConfig => check_config(&config),
        Command::Tail => runtime().and_then(|rt| rt.block_on(run_tail(&config))),
        Command::Setup => runtime().and_then(|rt| rt.block_on(run_setup(&config))),
        Command::Run { start_at } => runtime().and_then(|rt| {
            rt.block_on(async {
                app::start(Arc::new(config), start_at)
                    .await?
                    .until(shutdown::signal())
                    .await
            })
        }),
        Command::Demo {
            payments,
            memory_users,
        } => runtime().and_then(|rt| {
            rt.block_on(demo::run(
                Arc::new(config),
                payments,
                memory_users,
                shutdown::signal(),
            ))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "changeflow stopped");
            ExitCode::FAILURE
        }
    }
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    let mut shown = config.clone();
    shown.mongodb.uri = redact_uri(&shown.mongodb.uri);
    shown.kafka = shown.kafka.redacted();
    println!("# configuration is valid");
    print!(
        "{}",
        toml::to_string(&shown).context("rendering the configuration")?
    );
    Ok(())
}

async fn run_setup(config: &Config) -> anyhow::Result<()> {
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .with_context(|| format!("connecting to {}", redact_uri(&config.mongodb.uri)))?;
    for report in setup::run(&client, config).await? {
        let namespace = &report.namespace;
        match report.step {
            setup::Step::Created => println!("created {namespace} with its validator"),
            setup::Step::Updated => println!("brought {namespace} up to date"),
            setup::Step::Unchanged => println!("{namespace} is already set up"),
        }
    }
    println!("indexes are in place");
    Ok(())
}

async fn run_tail(config: &Config) -> anyhow::Result<()> {
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .with_context(|| format!("connecting to {}", redact_uri(&config.mongodb.uri)))?;
    let mut out = std::io::stdout().lock();
    let written = tail::tail(
        &client,
        &config.watch,
        &config.engine,
        &StartAt::Now,
        &mut out,
        shutdown::signal(),
    )
    .await;
    match written {
        Ok(n) => {
            tracing::info!(events = n, "stopped");
            Ok(())
        }
        // `changeflow tail | head` closes the pipe: a normal way to stop.
        Err(tail::TailError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}
