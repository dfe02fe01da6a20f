//! The subcommands behind the CLI: each takes the loaded configuration and returns what
//! went wrong as one error; `main` prints it with a hint.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::checkpoint::admin::{self, NewPosition};
use crate::checkpoint::store::{CheckpointStore, Stored};
use crate::cli::{CheckpointCommand, Command, ReplayArgs, ReplayTo};
use crate::config::Config;
use crate::connect::{ConnectError, connect};
use crate::engine::EngineError;
use crate::engine::replay::Until;
use crate::oplog::OplogProbe;
use crate::position::{describe, human_seconds};
use crate::redact::redact_uri;
use crate::replay::{self, Destination, From};
use crate::source::StartAt;
use crate::{app, demo, setup, shutdown, status, tail};

/// Runs `command` to its end.
pub fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let stop =
        || shutdown::signal_bounded(Duration::from_millis(config.engine.shutdown_timeout_ms));
    let result = runtime.block_on(async {
        match command {
            Command::CheckConfig => check_config(&config),
            Command::Tail => run_tail(&config).await,
            Command::Setup => run_setup(&config).await,
            Command::Run { start_at } => {
                app::start(Arc::new(config.clone()), start_at)
                    .await?
                    .until(stop())
                    .await
            }
            Command::Demo {
                payments,
                memory_users,
            } => demo::run(Arc::new(config.clone()), payments, memory_users, stop()).await,
            Command::Replay(args) => run_replay(&config, args).await,
            Command::Checkpoint(command) => run_checkpoint(&config, command).await,
            Command::Status { json } => run_status(&config, json).await,
        }
    });
    // Tasks still running (a driver or broker call that never returns) must not hold the
    // process: the stop's time is already spent.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

/// One line that tells what to try next for `error`.
pub fn hint(error: &anyhow::Error, config: &Config) -> String {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<ConnectError>() {
            return match e {
                ConnectError::Options { .. } => {
                    "check mongodb.uri (or CHANGEFLOW_MONGODB_URI): mongodb://[user:password@]host[:port][/?replicaSet=NAME]".to_owned()
                }
                ConnectError::Unreachable { .. } => format!(
                    "is a replica set running at {} and are the credentials right? \
                     `cargo xtask up` starts a local one",
                    redact_uri(&config.mongodb.uri)
                ),
            };
        }
        if let Some(EngineError::Oversize { stream, token, .. }) =
            cause.downcast_ref::<EngineError>()
        {
            return format!(
                "ways out: engine.oversize = \"dead-letter\" records such a change in \
                 changeflow_dead_letters and goes on; MongoDB 6.0.9 or later splits it \
                 (with engine.split_large_events = true); or `changeflow checkpoint set \
                 --stream {stream} --token {token}` moves past it"
            );
        }
        if let Some(EngineError::HistoryLost(lost)) = cause.downcast_ref::<EngineError>() {
            return if lost.replay {
                "`changeflow status` shows the oplog window of every member".to_owned()
            } else {
                "pick one of the ways out above; `changeflow status` shows the oplog window"
                    .to_owned()
            };
        }
        if cause
            .downcast_ref::<crate::publish::kafka::PublishError>()
            .is_some()
        {
            return format!(
                "is a Kafka broker reachable at {} (kafka.brokers)?",
                config.kafka.brokers
            );
        }
    }
    for (marker, hint) in HINTS_BY_TEXT {
        if error.chain().any(|c| c.to_string().contains(marker)) {
            return hint.to_owned();
        }
    }
    "`changeflow <command> --help` lists the options with examples".to_owned()
}

/// Hints for errors recognised by their text (they reach here through several layers).
const HINTS_BY_TEXT: [(&str, &str); 2] = [
    (
        "is being processed by changeflow run",
        "`changeflow status` shows which run holds each stream; stop it with Ctrl-C or \
         SIGTERM (it stores its final checkpoint and releases the stream)",
    ),
    (
        "(Unauthorized)",
        "the MongoDB user lacks a privilege named above; README \"Privileges\" lists what \
         each command needs",
    ),
];

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
    let client = connect(&config.mongodb.uri).await?;
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
    let client = connect(&config.mongodb.uri).await?;
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
    crate::connect::close(client).await;
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

async fn run_status(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = connect(&config.mongodb.uri).await?;
    let probe = OplogProbe::connect(&client, &config.mongodb.uri).await;
    let mut report = status::gather(&client, config, probe.as_ref().ok()).await;
    if let Err(e) = &probe {
        report.oplog = Err(e.to_string());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

async fn run_checkpoint(config: &Config, command: CheckpointCommand) -> anyhow::Result<()> {
    let client = connect(&config.mongodb.uri).await?;
    let store = admin::store(&client, config);
    match command {
        CheckpointCommand::Show { stream, json } => {
            if let Some(s) = &stream {
                admin::check_stream(config, s)?;
            }
            let mut shown = Vec::new();
            for w in config
                .watch
                .iter()
                .filter(|w| stream.as_ref().is_none_or(|s| *s == w.database))
            {
                let stored = store.load_stored(&w.database).await?;
                if json {
                    shown.push(admin::stored_json(&w.database, stored.as_ref()));
                } else {
                    print!(
                        "stream {}\n{}",
                        w.database,
                        admin::describe_stored(stored.as_ref())
                    );
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            }
        }
        CheckpointCommand::Set {
            stream,
            token,
            time,
            yes,
            force,
        } => {
            let to = match (token, time) {
                (Some(token), _) => NewPosition::Token(token),
                (None, Some(time)) => NewPosition::Time(time),
                (None, None) => bail!("give --token or --time"),
            };
            let current = before_change(&client, config, &store, &stream, force).await?;
            show_now(&stream, current.as_ref());
            let target = match &to {
                NewPosition::Token(t) => format!(
                    "right after token {}",
                    crate::position::token_data(t).unwrap_or_default()
                ),
                NewPosition::Time(t) => format!("at {}", describe(*t)),
            };
            confirm(
                &format!("Move the checkpoint of `{stream}` to resume {target}?"),
                yes,
            )?;
            admin::set(&store, &stream, &to).await?;
            println!(
                "checkpoint of `{stream}` moved; it resumes {target} when `changeflow run` starts\n{}",
                admin::undo_hint(&stream, current.as_ref())
            );
        }
        CheckpointCommand::Reset { stream, yes, force } => {
            let current = before_change(&client, config, &store, &stream, force).await?;
            if current.is_none() {
                println!("stream `{stream}` has no checkpoint; nothing to reset");
                return Ok(());
            }
            show_now(&stream, current.as_ref());
            confirm(
                &format!(
                    "Delete the checkpoint of `{stream}`? The next run starts at --start-at \
                     (default: now) and skips every change in between."
                ),
                yes,
            )?;
            store.delete(&stream).await?;
            println!(
                "checkpoint of `{stream}` deleted\n{}",
                admin::undo_hint(&stream, current.as_ref())
            );
        }
    }
    Ok(())
}

/// What `set` and `reset` do first: check the stream, refuse while a run holds it (unless
/// `force`), and read where it stands now.
async fn before_change(
    client: &mongodb::Client,
    config: &Config,
    store: &CheckpointStore,
    stream: &str,
    force: bool,
) -> anyhow::Result<Option<Stored>> {
    admin::check_stream(config, stream)?;
    admin::refuse_while_running(client, config, stream, force).await?;
    Ok(store.load_stored(stream).await?)
}

fn show_now(stream: &str, current: Option<&Stored>) {
    println!("stream {stream} now:\n{}", admin::describe_stored(current));
}

/// Asks `question` on the terminal unless `yes`; refuses when nobody can answer.
fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("{question} Not confirmed: standard input is not a terminal; pass --yes to confirm");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => bail!("not confirmed; nothing changed"),
    }
}

async fn run_replay(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    if args.topic.is_some() && args.to != ReplayTo::Kafka {
        bail!("--topic applies to --to kafka only");
    }
    let from = match (args.from_token, args.from_time) {
        (Some(token), _) => From::Token(token),
        (None, Some(time)) => From::Time(time),
        (None, None) => bail!("give --from-token or --from-time"),
    };
    let until = match (args.until_token, args.until_time) {
        (Some(token), _) => Some(Until::Token(
            crate::position::token_data(&token).context("the --until-token has no `_data`")?,
        )),
        (None, Some(time)) => Some(Until::Time(time)),
        (None, None) => None,
    };
    let request = replay::Request {
        from,
        until,
        stream: args.stream,
        collections: args.collections,
        to: match args.to {
            ReplayTo::Stdout => Destination::Stdout,
            ReplayTo::Kafka => Destination::Kafka { topic: args.topic },
        },
        dry_run: args.dry_run,
        handlers: args.handlers,
    };
    let dry_run = request.dry_run;
    let stop = shutdown::signal_bounded(Duration::from_millis(config.engine.shutdown_timeout_ms));
    let outcome = replay::run(config, request, stop).await?;
    let rate = outcome.events as f64 / outcome.elapsed.as_secs_f64().max(0.001);
    let end = outcome
        .until
        .time()
        .map_or_else(|| "?".to_owned(), describe);
    if dry_run {
        println!("dry run: {} changes up to {end}", outcome.events);
        for (kind, n) in &outcome.by_kind {
            println!("  {kind:<20} {n}");
        }
    }
    eprintln!(
        "replay {}: {} changes in {} ({rate:.0}/s){}",
        outcome.id,
        outcome.events,
        human_seconds(outcome.elapsed.as_secs() as i64),
        if outcome.continued {
            ", continuing an interrupted run"
        } else {
            ""
        }
    );
    if !outcome.complete {
        bail!(
            "replay {} interrupted before {end}; run the same command again to continue",
            outcome.id
        );
    }
    eprintln!("replay {} complete up to {end}", outcome.id);
    Ok(())
}
