//! `changeflow replay`: re-emits the typed events of a stretch of history (from a resume
//! token or a cluster time, until a token, a time, or the moment the replay started) to
//! standard output or Kafka, and into the handlers only when asked. The events are the
//! live run's, ids included; the live checkpoints are never touched: a replay keeps its
//! own positions, so running the same command again after an interruption continues it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mongodb::bson::{DateTime, Document, Timestamp, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::options::WriteConcern;
use mongodb::{Client, Collection};

use crate::cmd::{ReplayArgs, ReplayTo, shutdown};
use crate::config::routes::KAFKA;
use crate::config::{Config, RoutesConfig, WatchedDatabase};
use crate::domain::EventKind;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::pipeline::Engine;
use crate::pipeline::until::{Bounds, Progress, Until};
use crate::source::StartAt;
use crate::source::position::{cluster_time_text, describe, human_seconds, token_data, token_time};
use crate::state::checkpoints::CheckpointStore;
use crate::targets::stdout::StdoutSink;

/// The collection that records replays (in the checkpoint database).
pub const COLLECTION: &str = "changeflow_replays";

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

/// The watched databases `request` selects, each narrowed to the selected collections.
pub fn select_streams(
    watch: &[WatchedDatabase],
    stream: Option<&str>,
    collections: &[String],
) -> anyhow::Result<Vec<WatchedDatabase>> {
    let names: Vec<&str> = watch.iter().map(|w| w.database.as_str()).collect();
    if let Some(s) = stream
        && !names.contains(&s)
    {
        bail!(
            "--stream `{s}` is not a watched database (watched: {})",
            names.join(", ")
        );
    }
    let mut selected: Vec<WatchedDatabase> = watch
        .iter()
        .filter(|w| stream.is_none_or(|s| s == w.database))
        .cloned()
        .collect();
    if collections.is_empty() {
        return Ok(selected);
    }
    for wanted in collections {
        let known = selected.iter().any(|w| {
            w.collections
                .iter()
                .any(|c| names_collection(wanted, &w.database, c))
        });
        if !known {
            let all: Vec<String> = selected
                .iter()
                .flat_map(|w| w.collections.iter().map(|c| format!("{}.{c}", w.database)))
                .collect();
            bail!(
                "--collections: `{wanted}` is not a watched collection{} (watched: {})",
                stream
                    .map(|s| format!(" of stream `{s}`"))
                    .unwrap_or_default(),
                all.join(", ")
            );
        }
    }
    for w in &mut selected {
        let database = &w.database;
        w.collections.retain(|c| {
            collections
                .iter()
                .any(|wanted| names_collection(wanted, database, c))
        });
    }
    selected.retain(|w| !w.collections.is_empty());
    Ok(selected)
}

/// Whether `wanted` (`collection` or `database.collection`) names `database`.`collection`.
fn names_collection(wanted: &str, database: &str, collection: &str) -> bool {
    wanted == collection
        || wanted
            .strip_prefix(database)
            .and_then(|rest| rest.strip_prefix('.'))
            == Some(collection)
}

/// A replay's id: the same request gets the same id, so running it again continues it.
fn replay_id(request: &Request, streams: &[WatchedDatabase]) -> String {
    let until = match &request.until {
        None => "start".to_owned(),
        Some(Until::Time(t)) => cluster_time_text(*t),
        Some(Until::Token(data)) => data.clone(),
    };
    let streams: Vec<String> = streams
        .iter()
        .map(|w| format!("{}:{}", w.database, w.collections.join(",")))
        .collect();
    let key = format!(
        "from={};until={until};streams={};to={:?};handlers={};dry_run={}",
        request.from.describe(),
        streams.join("|"),
        request.to,
        request.handlers,
        request.dry_run,
    );
    blake3::hash(key.as_bytes()).to_hex()[..16].to_owned()
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
    let record = state_db.collection::<Document>(COLLECTION);
    let (until, continued) = begin(client, &record, &checkpoints, &id, &request, &streams)
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
        record
            .update_one(
                doc! {"_id": &id},
                doc! {"$set": {"status": "complete", "completed_at": DateTime::now()}},
            )
            .write_concern(WriteConcern::majority())
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
/// a new one. A new run's default end is the cluster time of that record's write; a second
/// write right after puts an oplog entry beyond it, so quiet streams see their end passed
/// without waiting for other traffic.
async fn begin(
    client: &Client,
    record: &Collection<Document>,
    checkpoints: &CheckpointStore,
    id: &str,
    request: &Request,
    streams: &[WatchedDatabase],
) -> anyhow::Result<(Until, bool)> {
    let previous = record.find_one(doc! {"_id": id}).await?;
    if !request.dry_run
        && let Some(previous) = previous
        && previous.get_str("status") == Ok("running")
    {
        let until = match (
            previous.get_timestamp("until_time"),
            previous.get_str("until_token"),
        ) {
            (_, Ok(token)) => Until::Token(token.to_owned()),
            (Ok(t), _) => Until::Time(t),
            _ => bail!("replay record `{id}` in {COLLECTION} has no end; delete it to start over"),
        };
        return Ok((until, true));
    }
    for stream in streams {
        checkpoints.delete(&stream.database).await?;
    }
    let mut session = client.start_session().await?;
    let databases: Vec<&str> = streams.iter().map(|w| w.database.as_str()).collect();
    record
        .replace_one(
            doc! {"_id": id},
            doc! {
                "status": "running",
                "from": request.from.describe(),
                "streams": databases,
                "dry_run": request.dry_run,
                "started_at": DateTime::now(),
            },
        )
        .upsert(true)
        .write_concern(WriteConcern::majority())
        .session(&mut session)
        .await?;
    let until = match &request.until {
        Some(until) => until.clone(),
        None => Until::Time(
            session
                .operation_time()
                .context("the server returned no operation time (not a replica set?)")?,
        ),
    };
    let set = match &until {
        Until::Time(t) => doc! {"until_time": *t},
        Until::Token(data) => doc! {"until_token": data},
    };
    record
        .update_one(doc! {"_id": id}, doc! {"$set": set})
        .write_concern(WriteConcern::majority())
        .await?;
    Ok((until, false))
}

/// The live configuration narrowed to the replay: its streams, and routes that keep Kafka
/// only when replaying to Kafka and handlers only when asked for.
fn replay_config(config: &Config, request: &Request, streams: Vec<WatchedDatabase>) -> Config {
    let mut replay = config.clone();
    replay.watch = streams;
    let to_kafka = !request.dry_run && matches!(request.to, Destination::Kafka { .. });
    if let Destination::Kafka { topic: Some(topic) } = &request.to {
        // The topic is taken as given; dead letters keep their prefixed topic.
        let kafka = &mut replay.kafka;
        kafka.topics.dead_letters = kafka.topic(&kafka.topics.dead_letters);
        kafka.topic_prefix.clear();
        kafka.topics.payments = topic.clone();
        kafka.topics.memory = topic.clone();
        kafka.topics.namespace = topic.clone();
        for raw in &mut kafka.raw {
            raw.topic = topic.clone();
        }
    }
    if !to_kafka {
        replay.kafka.raw.clear();
    }
    for kind in RoutesConfig::KINDS {
        let keep = |target: &String| {
            !request.dry_run
                && if target == KAFKA {
                    to_kafka
                } else {
                    request.handlers
                }
        };
        let targets: Vec<String> = config
            .routes
            .targets(kind)
            .iter()
            .filter(|t| keep(t))
            .cloned()
            .collect();
        replay.routes.set_targets(kind, targets);
    }
    replay
}

/// A bar on a terminal (events, events/s, how far between start and end), a log line every
/// ten seconds elsewhere.
async fn report_progress(
    bounds: Arc<Bounds>,
    metrics: Arc<Metrics>,
    from: Option<Timestamp>,
    until: Option<Timestamp>,
) {
    use std::io::IsTerminal;
    let span = match (from, until) {
        (Some(f), Some(u)) => u64::from(u.time.saturating_sub(f.time)).max(1),
        _ => 1,
    };
    let bar = indicatif::ProgressBar::new(span);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "replay [{bar:30}] {percent:>3}%  {msg}  elapsed {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let events: u64 = metrics.received_by_kind().values().sum();
        let rate = events as f64 / started.elapsed().as_secs_f64().max(0.001);
        let at = bounds.progress.slowest();
        let done = match (at, from) {
            (Some(at), Some(f)) => u64::from(at.saturating_sub(f.time)).min(span),
            _ => 0,
        };
        let message = format!(
            "{events} events, {rate:.0}/s, at {}",
            at.map_or_else(
                || "start".to_owned(),
                |t| crate::source::position::rfc3339(Timestamp {
                    time: t,
                    increment: 0
                })
            )
        );
        if terminal {
            bar.set_position(done);
            bar.set_message(message);
        } else if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(progress = %format!("{}%", done * 100 / span), "{message}");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_are_selected_by_name_or_namespace() {
        let watch = vec![
            WatchedDatabase {
                database: "shop".into(),
                collections: vec!["payments".into(), "orders".into()],
            },
            WatchedDatabase {
                database: "mem".into(),
                collections: vec!["orders".into()],
            },
        ];
        let picked = select_streams(&watch, None, &["shop.orders".into()]).expect("known");
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].collections, ["orders"]);
        let picked = select_streams(&watch, None, &["orders".into()]).expect("known");
        assert_eq!(picked.len(), 2);
        let picked = select_streams(&watch, Some("mem"), &[]).expect("known");
        assert_eq!(picked[0].database, "mem");
        assert!(select_streams(&watch, None, &["shoporders".into()]).is_err());
        assert!(select_streams(&watch, Some("nope"), &[]).is_err());
    }
}
