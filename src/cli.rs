//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mongodb::bson::Timestamp;

use crate::source::StartAt;

/// changeflow: MongoDB change streams as typed domain events, to handlers and Kafka.
#[derive(Debug, Parser)]
#[command(name = "changeflow", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the built-in defaults apply (they equal
    /// config/changeflow.toml). Any key can be overridden by CHANGEFLOW_<KEY_PATH>.
    #[arg(long, short, env = "CHANGEFLOW_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Override one configuration key, e.g. `--set provider.latency_ms=0` (repeatable;
    /// applied after the file and the environment).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub sets: Vec<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline: one change stream per watched database, the payment handlers
    /// (provider simulator, status updater, counters) and the HTTP API, until Ctrl-C /
    /// SIGTERM (then in-flight work finishes and the checkpoint is stored).
    Run {
        /// Where streams without a checkpoint start: `now`, or a cluster time
        /// `SECONDS[:INCREMENT]` (startAtOperationTime). A stored checkpoint always wins.
        #[arg(long, default_value = "now", value_parser = parse_start_at)]
        start_at: StartAt,
    },
    /// Run the pipeline with a small load: create payments through the API, show their
    /// progress, print the counters; then run the agent-memory workload and print
    /// `memory_stats`; stop.
    Demo {
        /// Payments to create.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        payments: u32,
        /// Users of the agent-memory workload (0: skip it). The demo runs `setup` first:
        /// the workload needs the memory collections' TTL index and pre-images.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=10_000))]
        memory_users: u32,
    },
    /// Print every change of the watched collections as one relaxed Extended JSON line,
    /// from now until Ctrl-C / SIGTERM. One change stream per watched database.
    Tail,
    /// Create the payments collection with its `$jsonSchema` validator and the indexes
    /// changeflow uses. Idempotent: a second run changes nothing and says so.
    Setup,
    /// Validate the configuration (file, defaults and environment) and print the result
    /// with secrets redacted. Exits 2 with the offending key when it is invalid.
    CheckConfig,
}

/// Parses `now` or `SECONDS[:INCREMENT]`.
pub fn parse_start_at(s: &str) -> Result<StartAt, String> {
    if s == "now" {
        return Ok(StartAt::Now);
    }
    let (secs, inc) = s.split_once(':').unwrap_or((s, "0"));
    match (secs.parse::<u32>(), inc.parse::<u32>()) {
        (Ok(time), Ok(increment)) => Ok(StartAt::OperationTime(Timestamp { time, increment })),
        _ => Err(format!(
            "`{s}` is neither `now` nor a cluster time SECONDS[:INCREMENT] (e.g. 1763683200:1)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start_at("now"), Ok(StartAt::Now));
        assert_eq!(
            parse_start_at("1763683200:7"),
            Ok(StartAt::OperationTime(Timestamp {
                time: 1_763_683_200,
                increment: 7
            }))
        );
        assert!(parse_start_at("yesterday").is_err());
        assert!(parse_start_at("-5").is_err());
    }
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_subcommand_is_an_error() {
        assert!(Cli::try_parse_from(["changeflow", "tale"]).is_err());
        let cli = Cli::try_parse_from(["changeflow", "--config", "x.toml", "tail"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
    }
}
