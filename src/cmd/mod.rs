//! The command line: the clap definitions, and the dispatch to one module per command.

pub mod check_config;
pub mod checkpoint;
pub mod demo;
pub mod hint;
pub mod replay;
pub mod run;
pub mod setup;
pub mod shutdown;
pub mod snapshot;
pub mod status;
pub mod tail;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mongodb::bson::Timestamp;
use mongodb::change_stream::event::ResumeToken;

use crate::config::role::Role;
use crate::config::{Config, LogFormat};
use crate::source::StartAt;
use crate::source::position::{Bound, parse_time, token_from_hex};

/// changeflow: MongoDB change streams as typed domain events, to handlers and Kafka.
#[derive(Debug, Parser)]
#[command(name = "changeflow", version, about, after_help = TOP_EXAMPLES)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the built-in defaults apply (they equal
    /// config/changeflow.toml). Any key can be overridden by CHANGEFLOW_<KEY_PATH>.
    #[arg(long, short, env = "CHANGEFLOW_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Override one configuration key, e.g. `--set provider.latency_ms=0` (repeatable;
    /// applied after the file and the environment).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub sets: Vec<String>,

    /// Log lines as `text` (default) or `json` (overrides `log.format`); filter them with
    /// RUST_LOG, e.g. RUST_LOG=changeflow=debug.
    #[arg(long, value_enum, global = true)]
    pub log_format: Option<LogFormat>,

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
    #[command(after_help = RUN_EXAMPLES)]
    Run {
        /// Where streams without a checkpoint start: `now`, or a time (RFC 3339 or a
        /// cluster time `SECONDS[.INCREMENT]`; startAtOperationTime). A stored checkpoint
        /// always wins.
        #[arg(long, default_value = "now", value_parser = parse_start_at)]
        start_at: StartAt,
        /// What this instance runs: `all` (streams, handlers and Kafka), `capture` (streams
        /// to Kafka, no handler) or `handlers` (the handlers, fed from the payments topic
        /// in a Kafka consumer group). README "Running several instances".
        #[arg(long, default_value = "all", value_parser = |s: &str| s.parse::<Role>())]
        role: Role,
    },
    /// Run the pipeline with a small load: create payments through the API, show their
    /// progress, print the counters; then run the agent-memory workload and print
    /// `memory_stats`; stop.
    #[command(after_help = DEMO_EXAMPLES)]
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
    #[command(after_help = TAIL_EXAMPLES)]
    Tail,
    /// Create the payments collection with its `$jsonSchema` validator and the indexes
    /// changeflow uses. Idempotent: a second run changes nothing and says so.
    #[command(after_help = SETUP_EXAMPLES)]
    Setup,
    /// Validate the configuration (file, defaults and environment) and print the result
    /// with secrets redacted. Exits 2 with the offending key when it is invalid.
    #[command(after_help = CHECK_CONFIG_EXAMPLES)]
    CheckConfig,
    /// Re-emit the events of a stretch of history, with the live run's event ids, to
    /// stdout or Kafka (into the handlers only with --handlers). The live checkpoints are
    /// never moved: the replay keeps its own, so running the same command again after an
    /// interruption continues where it stopped.
    #[command(after_help = REPLAY_EXAMPLES)]
    Replay(ReplayArgs),
    /// Show or move the live checkpoints (one per stream, i.e. per watched database).
    /// Moving one is refused while a `changeflow run` processes the stream: it would
    /// overwrite the change.
    #[command(subcommand, after_help = CHECKPOINT_EXAMPLES)]
    Checkpoint(CheckpointCommand),
    /// Snapshot watched collections while `changeflow run` keeps streaming: their
    /// documents reach Kafka and the handlers as `*_observed` events, never older than a
    /// change already delivered. Records the request; the running pipeline takes it up.
    #[command(after_help = SNAPSHOT_EXAMPLES)]
    Snapshot {
        /// Only these collections (`name` or `database.name`, comma separated); default:
        /// every watched collection with a domain or published raw.
        #[arg(long, value_name = "NAMES", value_delimiter = ',')]
        collections: Vec<String>,
    },
    /// For each stream: its checkpoint (token, cluster time, age), the oplog window of
    /// every readable member and the headroom (seconds between the checkpoint and the
    /// oldest oplog entry: how much more history may pass before the checkpoint is lost).
    #[command(after_help = STATUS_EXAMPLES)]
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

const TOP_EXAMPLES: &str = "Examples:
  changeflow setup                      # collections, validators, indexes
  changeflow run                        # the pipeline, until Ctrl-C
  changeflow status                     # checkpoints, oplog windows, headroom
  changeflow --config prod.toml --log-format json run
  RUST_LOG=changeflow=debug changeflow tail

`changeflow <command> --help` shows each command's options and examples.";

const RUN_EXAMPLES: &str = "Examples:
  changeflow run
  changeflow run --start-at 2026-11-22T14:02:00Z   # streams without a checkpoint start there
  changeflow run --role capture                    # streams to Kafka only
  changeflow run --role handlers                   # handlers fed from Kafka (scale out)
  changeflow --set provider.latency_ms=0 --log-format json run";

const DEMO_EXAMPLES: &str = "Examples:
  changeflow demo
  changeflow demo --payments 1000 --memory-users 0";

const TAIL_EXAMPLES: &str = "Examples:
  changeflow tail
  changeflow tail | jq -c 'select(.operationType == \"update\")'";

const SETUP_EXAMPLES: &str = "Examples:
  changeflow setup
  CHANGEFLOW_MONGODB_URI='mongodb://admin:secret@db1/?replicaSet=prod' changeflow setup";

const CHECK_CONFIG_EXAMPLES: &str = "Examples:
  changeflow check-config
  changeflow --config prod.toml --set kafka.brokers=k1:9092 check-config";

const REPLAY_EXAMPLES: &str = "Examples:
  # everything since 14:02 UTC into a fresh topic
  changeflow replay --from-time 2026-11-22T14:02:00Z --to kafka --topic incident-4711
  # the payment stream after a token, as CloudEvent JSON lines
  changeflow replay --stream changeflow --from-token 8269...04 --to stdout
  # count what a window holds without sending anything
  changeflow replay --from-time 1763820120.1 --until-time 1763823720.1 --dry-run

TIME is RFC 3339 (whole seconds: --from-time includes all of that second, --until-time too)
or an exact cluster time <seconds>.<increment>. Without --until-*, the replay ends at the
cluster time it started at. Kinds are those [routes] sends to `kafka`.";

const STATUS_EXAMPLES: &str = "Examples:
  changeflow status
  changeflow status --json | jq '.streams[] | {stream, headroom_seconds}'";

const SNAPSHOT_EXAMPLES: &str = "Examples:
  changeflow snapshot                          # every collection with a domain
  changeflow snapshot --collections payments
  changeflow status                            # progress";

const CHECKPOINT_EXAMPLES: &str = "Examples:
  changeflow checkpoint show
  changeflow checkpoint set --stream changeflow --time 2026-11-22T14:02:00Z
  changeflow checkpoint set --stream changeflow --token 8269...04 --yes
  changeflow checkpoint reset --stream agent_memory";

/// Where `replay` sends events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayTo {
    /// Structured CloudEvents, one JSON line each.
    Stdout,
    /// The configured topics, or --topic.
    Kafka,
}

/// `changeflow replay`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("from").required(true))]
pub struct ReplayArgs {
    /// Start right after the change with this resume token (the hex `_data`); needs
    /// --stream when several databases are watched.
    #[arg(long, value_name = "HEX", group = "from", value_parser = parse_token)]
    pub from_token: Option<ResumeToken>,
    /// Start at the first change at or after TIME.
    #[arg(long, value_name = "TIME", group = "from", value_parser = parse_from_time)]
    pub from_time: Option<Timestamp>,
    /// Stop after the change with this token.
    #[arg(long, value_name = "HEX", conflicts_with = "until_time", value_parser = parse_token)]
    pub until_token: Option<ResumeToken>,
    /// Stop after the last change at or before TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_until_time)]
    pub until_time: Option<Timestamp>,
    /// Only this stream (watched database).
    #[arg(long, value_name = "DATABASE")]
    pub stream: Option<String>,
    /// Only these collections (`name` or `database.name`, comma separated).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub collections: Vec<String>,
    /// Where the events go.
    #[arg(long, value_enum, default_value = "stdout")]
    pub to: ReplayTo,
    /// With --to kafka: every event into this topic instead of the configured ones.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// Decode and count, send nothing, store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also run the in-process handlers (provider simulator, counters, memory stats) on
    /// their routed kinds. Their effects are idempotent, but a replay older than their
    /// processed-id memory (`*.processed_ttl_hours`) applies again.
    #[arg(long)]
    pub handlers: bool,
}

/// `changeflow checkpoint …`.
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Print each stream's checkpoint: token, cluster time and age.
    #[command(after_help = CHECKPOINT_EXAMPLES)]
    Show {
        /// Only this stream.
        #[arg(long, value_name = "DATABASE")]
        stream: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move a stream's checkpoint to a token or a time (asks first; --yes for scripts).
    #[command(after_help = CHECKPOINT_EXAMPLES)]
    #[command(group = clap::ArgGroup::new("to").required(true))]
    Set {
        /// The stream (watched database).
        #[arg(long, value_name = "DATABASE")]
        stream: String,
        /// Resume right after the change with this token.
        #[arg(long, value_name = "HEX", group = "to", value_parser = parse_token)]
        token: Option<ResumeToken>,
        /// Resume at the first change at or after TIME (RFC 3339 or <seconds>.<increment>).
        #[arg(long, value_name = "TIME", group = "to", value_parser = parse_from_time)]
        time: Option<Timestamp>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Write even while a `changeflow run` processes the stream (it would overwrite
        /// the change with its next checkpoint unless stopped right after).
        #[arg(long)]
        force: bool,
    },
    /// Delete a stream's checkpoint: it starts at `run --start-at` (default now) next time,
    /// skipping everything in between (asks first; --yes for scripts).
    #[command(after_help = CHECKPOINT_EXAMPLES)]
    Reset {
        /// The stream (watched database).
        #[arg(long, value_name = "DATABASE")]
        stream: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Write even while a `changeflow run` processes the stream (it would overwrite
        /// the change with its next checkpoint unless stopped right after).
        #[arg(long)]
        force: bool,
    },
}

fn parse_token(s: &str) -> Result<ResumeToken, String> {
    token_from_hex(s).map_err(|e| e.to_string())
}

fn parse_from_time(s: &str) -> Result<Timestamp, String> {
    parse_time(s, Bound::Start).map_err(|e| e.to_string())
}

fn parse_until_time(s: &str) -> Result<Timestamp, String> {
    parse_time(s, Bound::End).map_err(|e| e.to_string())
}

/// Parses `now`, a bare `SECONDS`, or a TIME (RFC 3339, `SECONDS.INCREMENT`,
/// `SECONDS:INCREMENT`).
pub(crate) fn parse_start_at(s: &str) -> Result<StartAt, String> {
    if s == "now" {
        return Ok(StartAt::Now);
    }
    if let Ok(time) = s.parse::<u32>() {
        return Ok(StartAt::OperationTime(Timestamp { time, increment: 0 }));
    }
    parse_time(s, Bound::Start)
        .map(StartAt::OperationTime)
        .map_err(|_| {
            format!(
                "`{s}` is neither `now` nor a time (RFC 3339, or a cluster time \
                 SECONDS[.INCREMENT], e.g. 1763683200.1)"
            )
        })
}

/// Runs `command` to its end.
pub fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let stop =
        || shutdown::signal_bounded(Duration::from_millis(config.engine.shutdown_timeout_ms));
    let result = runtime.block_on(async {
        match command {
            Command::CheckConfig => check_config::command(&config),
            Command::Tail => tail::command(&config).await,
            Command::Setup => setup::command(&config).await,
            Command::Run { start_at, role } => {
                run::start_as(Arc::new(config.clone()), start_at, role)
                    .await?
                    .until(stop())
                    .await
            }
            Command::Demo {
                payments,
                memory_users,
            } => demo::run(Arc::new(config.clone()), payments, memory_users, stop()).await,
            Command::Replay(args) => replay::command(&config, args).await,
            Command::Checkpoint(command) => checkpoint::command(&config, command).await,
            Command::Status { json } => status::command(&config, json).await,
            Command::Snapshot { collections } => snapshot::command(&config, &collections).await,
        }
    });
    // Tasks still running (a driver or broker call that never returns) must not hold the
    // process: the stop's time is already spent.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
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
