//! `cargo xtask`: the project's entry points.
//!
//! - `up` / `down` / `status`: a local MongoDB replica set and Kafka-protocol broker.
//! - `test`: lints, compose validation, services, the whole test suite.
//! - `demo`: services plus `changeflow tail`, with sample payments written so events show.

mod checks;
mod demo;
mod kafka;
mod mongo;
mod mongod_dist;
mod paths;
mod process;
mod services;
mod tools;
mod wheels;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::kafka::Storage;
use crate::mongo::Profile;
use crate::mongod_dist::Version;
use crate::services::{DownOptions, UpOptions};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "changeflow's local services, tests and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start MongoDB (replica set) and Kafka (tansu) unless already running or given by
    /// MONGODB_URI / KAFKA_BROKERS.
    Up(UpArgs),
    /// Stop the services `up` started (by pid file, never by name).
    Down(DownArgs),
    /// Show what runs, its addresses and its log files. Exits 1 when something is down.
    Status,
    /// Run the whole test suite: fmt, clippy, compose validation, services, cargo test.
    Test(TestArgs),
    /// Start the services and run `changeflow demo`: the full payment flow under a small
    /// load, with progress and the final counters.
    Demo {
        /// Payments to create.
        #[arg(long, default_value_t = 100)]
        payments: u32,
    },
}

#[derive(Args)]
struct UpArgs {
    /// Replica set members (1 = single-node on 27017; 3 = 27017-27019).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=7))]
    nodes: Option<u8>,
    /// `test` starts mongod with ttlMonitorSleepSecs=1 (TTL deletes within a second) and
    /// transactionLifetimeLimitSeconds=10 (transactions of killed clients end sooner).
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// Broker storage: memory (default) or sqlite (kept across broker restarts).
    #[arg(long, value_enum)]
    kafka_storage: Option<Storage>,
    /// The mongod build to fetch and start (default: MONGODB_VERSION, else 6.0.27).
    #[arg(long, value_enum)]
    mongodb_version: Option<Version>,
}

#[derive(Args)]
struct DownArgs {
    /// Only MongoDB.
    #[arg(long, conflicts_with = "kafka")]
    mongodb: bool,
    /// Only Kafka.
    #[arg(long)]
    kafka: bool,
    /// Also delete the services' data.
    #[arg(long)]
    wipe: bool,
}

#[derive(Args)]
struct TestArgs {
    /// Leave services started by this run running afterwards.
    #[arg(long)]
    keep_services: bool,
    /// The mongod build to test against (default: MONGODB_VERSION, else 6.0.27).
    #[arg(long, value_enum)]
    mongodb_version: Option<Version>,
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Cmd) -> Result<ExitCode> {
    match command {
        Cmd::Up(args) => {
            let endpoints = services::up(UpOptions {
                nodes: args.nodes,
                profile: args.profile,
                storage: args.kafka_storage,
                mongodb_version: args.mongodb_version,
            })
            .await?;
            println!("MONGODB_URI={}", endpoints.mongodb_uri);
            println!("KAFKA_BROKERS={}", endpoints.kafka_brokers);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down(args) => {
            let both = !args.mongodb && !args.kafka;
            services::down(DownOptions {
                mongodb: both || args.mongodb,
                kafka: both || args.kafka,
                wipe: args.wipe,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status => Ok(if services::status()? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Cmd::Test(args) => {
            checks::run_all(
                args.keep_services,
                args.mongodb_version,
                &args.cargo_test_args,
            )
            .await
        }
        Cmd::Demo { payments } => demo::run(payments).await,
    }
}
