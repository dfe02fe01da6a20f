//! `cargo xtask demo`: start the services and run `changeflow demo`, the real pipeline with
//! all three payment handlers under a small load.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::checks::workspace_root;
use crate::services::{self, UpOptions};

/// Starts the services, then runs `changeflow demo --payments <payments>` against them.
pub async fn run(payments: u32) -> Result<ExitCode> {
    let endpoints = services::up(UpOptions::default()).await?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = tokio::process::Command::new(&cargo)
        .args(["run", "--quiet", "--locked", "--bin", "changeflow", "--"])
        .args(["demo", "--payments", &payments.to_string()])
        .current_dir(workspace_root())
        .env("CHANGEFLOW_MONGODB_URI", &endpoints.mongodb_uri)
        .env("CHANGEFLOW_KAFKA_BROKERS", &endpoints.kafka_brokers)
        .status()
        .await
        .context("running changeflow demo")?;
    eprintln!("the services keep running: `cargo xtask down` stops them");
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
