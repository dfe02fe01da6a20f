//! `changeflow replay`: re-emits the typed events of a stretch of history (from a resume
//! token or a cluster time, until a token, a time, or the moment the replay started) to
//! standard output or Kafka, and into the handlers only when asked. The events are the
//! live run's, ids included; the live checkpoints are never touched: a replay keeps its
//! own positions, so running the same command again after an interruption continues it.

mod plan;
mod progress;

pub(crate) use plan::select_streams;
use plan::{replay_config, replay_id};
use progress::report_progress;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mongodb::Client;
use mongodb::bson::Timestamp;
use mongodb::change_stream::event::ResumeToken;

use crate::cmd::{ReplayArgs, ReplayTo, shutdown};
use crate::config::routes::KAFKA;
use crate::config::{Config, WatchedDatabase};
use crate::domain::EventKind;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::pipeline::Engine;
use crate::pipeline::until::{Bounds, Progress};
use crate::source::StartAt;
use crate::source::position::Until;
use crate::source::position::{describe, human_seconds, token_data, token_time};
use crate::state::checkpoints::CheckpointStore;
use crate::state::replays::Replays;
use crate::targets::stdout::StdoutSink;

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq)]
pub enum From {
    /// Right after the change with this token.
    Token(ResumeToken),
    /// At the first change at or after this cluster time.
    Time(Timestamp),
}

impl From {
    fn start_at(&self) -> StartAt {
        match self {
            From::Token(t) => StartAt::After(t.clone()),
            From::Time(t) => StartAt::OperationTime(*t),
        }
    }

    fn time(&self) -> Option<Timestamp> {
        match self {
            From::Token(t) => token_time(t),
            From::Time(t) => Some(*t),
        }
    }

    fn describe(&self) -> String {
        match self {
            From::Token(t) => format!("token {}", token_data(t).unwrap_or_default()),
            From::Time(t) => describe(*t),
        }
    }
}

/// Where replayed events go.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// Structured CloudEvents, one JSON line each, on standard output.
    Stdout,
    /// The Kafka topics of the configuration, or all of them into `topic`.
    Kafka {
        /// One topic for every event (created when `kafka.create_topics` allows).
        topic: Option<String>,
    },
}

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// Start.
    pub from: From,
    /// End; None: the cluster time when the replay started.
    pub until: Option<Until>,
    /// Only this watched database's stream.
    pub stream: Option<String>,
    /// Only these collections (`name` or `database.name`).
    pub collections: Vec<String>,
    /// Destination of the events (ignored by a dry run).
    pub to: Destination,
    /// Decode and count only.
    pub dry_run: bool,
    /// Also feed the in-process handlers their routed kinds.
    pub handlers: bool,
}

/// How a replay ended.
#[derive(Debug)]
pub struct Outcome {
    /// The replay's id (its positions are kept under it).
    pub id: String,
    /// Every stream reached the end (false: interrupted; the same command continues).
    pub complete: bool,
    /// Whether this run continued an interrupted one.
    pub continued: bool,
    /// Changes read, per kind label.
    pub by_kind: std::collections::BTreeMap<String, u64>,
    /// Changes read in all.
    pub events: u64,
    /// The end.
    pub until: Until,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `request` until it reaches its end or `shutdown` completes.
pub async fn run(
    config: &Config,
    request: Request,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let streams = select_streams(
        &config.watch,
        request.stream.as_deref(),
        &request.collections,
    )?;
    if matches!(request.from, From::Token(_)) && streams.len() > 1 {
        let names: Vec<&str> = streams.iter().map(|w| w.database.as_str()).collect();
        bail!(
            "a resume token belongs to one stream; choose it with --stream (streams: {})",
            names.join(", ")
        );
    }
    let id = replay_id(&request, &streams);
    let client = crate::source::connect::connect(&config.mongodb.uri).await?;
    let outcome = run_on(&client, config, request, streams, id, shutdown).await;
    crate::source::connect::close(client).await;
    outcome
}

async fn run_on(
    client: &Client,
    config: &Config,
    request: Request,
    streams: Vec<WatchedDatabase>,
    id: String,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let state_db = client.database(&config.checkpoint.database);
    let checkpoints = CheckpointStore::for_replay(&state_db, &id);
    let replays = Replays::new(client, &state_db);
    let (until, continued) = begin(&replays, &checkpoints, &id, &request, &streams)
        .await
        .context("recording the replay")?;
    if let (Some(from), Some(end)) = (request.from.time(), until.time())
        && from > end
    {
        bail!(
            "nothing to replay: the start {} is after the end {}",
            describe(from),
            describe(end)
        );
    }
    tracing::info!(
        replay = %id,
        from = %request.from.describe(),
        until = %until.time().map_or_else(|| "?".into(), describe),
        continued,
        "replay starting"
    );
    let replay_config = Arc::new(replay_config(config, &request, streams));
    let bounds = Arc::new(Bounds {
        until: until.clone(),
        dry_run: request.dry_run,
        progress: Progress::new(replay_config.watch.iter().map(|w| w.database.as_str())),
    });
    let targets = if request.dry_run {
        Vec::new()
    } else {
        let mut targets = crate::targets::build(client, &replay_config)
            .await
            .context("preparing the replay's targets")?;
        if request.to == Destination::Stdout {
            let kinds = EventKind::ALL
                .into_iter()
                .filter(|k| config.routes.lists(k.as_str(), KAFKA));
            targets.push(Arc::new(StdoutSink::new(kinds)));
        }
        targets
    };
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(
        replay_config.watch.iter().map(|w| w.database.as_str()),
    ));
    let engine = Engine::new(
        client.clone(),
        replay_config.clone(),
        &targets,
        metrics.clone(),
        health,
        request.from.start_at(),
    )
    .with_checkpoints(checkpoints)
    .with_replay(bounds.clone());
    let started = Instant::now();
    let reporter = tokio::spawn(report_progress(
        bounds.clone(),
        metrics.clone(),
        request.from.time(),
        until.time(),
    ));
    let result = engine.run(shutdown).await;
    reporter.abort();
    let _ = reporter.await;
    result?;
    let complete = bounds.progress.all_done();
    if complete && !request.dry_run {
        replays
            .complete(&id)
            .await
            .context("recording the replay as complete")?;
    }
    let by_kind = metrics.received_by_kind();
    Ok(Outcome {
        id,
        complete,
        continued,
        events: by_kind.values().sum(),
        by_kind,
        until,
        elapsed: started.elapsed(),
    })
}

/// Finds an interrupted run of the same replay (and continues it, with its end) or records
/// a new one, whose default end is the cluster time of that record's write.
async fn begin(
    replays: &Replays,
    checkpoints: &CheckpointStore,
    id: &str,
    request: &Request,
    streams: &[WatchedDatabase],
) -> anyhow::Result<(Until, bool)> {
    if !request.dry_run
        && let Some(until) = replays.interrupted_end(id).await?
    {
        return Ok((until, true));
    }
    for stream in streams {
        checkpoints.delete(&stream.database).await?;
    }
    let databases: Vec<&str> = streams.iter().map(|w| w.database.as_str()).collect();
    let written = replays
        .start(id, &request.from.describe(), &databases, request.dry_run)
        .await?;
    let until = request.until.clone().unwrap_or(Until::Time(written));
    replays.set_end(id, &until).await?;
    Ok((until, false))
}

/// `changeflow replay`: the arguments checked, then the stretch replayed.
pub async fn command(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
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
            crate::source::position::token_data(&token)
                .context("the --until-token has no `_data`")?,
        )),
        (None, Some(time)) => Some(Until::Time(time)),
        (None, None) => None,
    };
    let request = Request {
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
    let outcome = run(config, request, stop).await?;
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
