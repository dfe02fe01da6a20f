//! Where every stream stands against the oplog: its checkpoint (token, cluster time, age),
//! the oplog window of each member, and the headroom left before the checkpoint falls off.
//! Printed by `changeflow status`; measured periodically by `run` for `/metrics` and
//! `/healthz`.

use std::fmt::Write as _;

use mongodb::Client;
use mongodb::bson::Timestamp;
use serde_json::{Value, json};

use crate::config::Config;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::source::connect::connect;
use crate::source::images::{self, Images};
use crate::source::oplog::{Basis, Headroom, OplogProbe, Windows};
use crate::source::position::{
    age_seconds, cluster_time_text, datetime_rfc3339, describe, human_seconds, rfc3339,
    seconds_between, token_data,
};
use crate::state::checkpoints::{CheckpointStore, Resume, Stored};
use crate::state::gaps::Gaps;
use crate::state::presence::{self, Holder};
use crate::state::snapshots::{Progress, Snapshots};

/// One stream's standing.
#[derive(Debug, Clone)]
pub struct StreamStatus {
    /// The stream (watched database).
    pub stream: String,
    /// Its collections.
    pub collections: Vec<String>,
    /// Its checkpoint, or why it could not be read; None when it has none yet.
    pub checkpoint: Result<Option<Stored>, String>,
    /// Gaps recorded for it (history lost and skipped).
    pub gaps: Result<u64, String>,
    /// The live `changeflow run` processing it, if any.
    pub run: Result<Option<Holder>, String>,
    /// Its collections' snapshots, running or finished.
    pub snapshots: Result<Vec<Progress>, String>,
    /// Which document its update events carry.
    pub images: Result<Images, String>,
}

impl StreamStatus {
    /// The checkpoint's cluster time.
    pub fn time(&self) -> Option<Timestamp> {
        self.checkpoint.as_ref().ok()?.as_ref()?.cluster_time()
    }
}

/// Every stream and the oplog windows.
#[derive(Debug, Clone)]
pub struct Report {
    /// One entry per watched database.
    pub streams: Vec<StreamStatus>,
    /// The windows, or why they could not be read.
    pub oplog: Result<Windows, String>,
    /// Headroom below which a stream is flagged.
    pub warning_seconds: u64,
}

impl Report {
    /// How long until `stream`'s checkpoint falls off the oplog (negative: lost), and how
    /// that was obtained.
    pub fn headroom(&self, stream: &StreamStatus) -> Option<Headroom> {
        self.oplog.as_ref().ok()?.headroom(stream.time()?)
    }

    /// Seconds from `stream`'s checkpoint to the newest oplog entry.
    pub fn lag(&self, stream: &StreamStatus) -> Option<i64> {
        let newest = self.oplog.as_ref().ok()?.newest()?;
        Some(seconds_between(stream.time()?, newest).max(0))
    }

    /// Why `stream` needs attention, if it does.
    pub fn warning(&self, stream: &StreamStatus) -> Option<String> {
        let headroom = self.headroom(stream)?.seconds;
        if headroom < 0 {
            return Some(format!(
                "checkpoint is {} older than the oldest oplog entry: history lost",
                human_seconds(-headroom)
            ));
        }
        let limit = i64::try_from(self.warning_seconds).unwrap_or(i64::MAX);
        (headroom < limit).then(|| {
            format!(
                "headroom {} is below history.headroom_warning_seconds ({})",
                human_seconds(headroom),
                human_seconds(limit)
            )
        })
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.streams {
            let _ = writeln!(out, "stream {} ({})", s.stream, s.collections.join(", "));
            match &s.checkpoint {
                Err(e) => {
                    let _ = writeln!(out, "  checkpoint  unreadable: {e}");
                }
                Ok(None) => {
                    let _ = writeln!(
                        out,
                        "  checkpoint  none (the stream starts at `run --start-at`, default now)"
                    );
                }
                Ok(Some(c)) => {
                    let (what, value) = match &c.resume {
                        Resume::After(t) => ("token", token_data(t).unwrap_or_default()),
                        Resume::AtTime(t) => ("start at", describe(*t)),
                    };
                    let _ = writeln!(out, "  checkpoint  {what} {value}");
                    if let Some(t) = c.cluster_time() {
                        let age = age_seconds(t);
                        let _ = writeln!(
                            out,
                            "  position    {}, {} ago",
                            describe(t),
                            human_seconds(age)
                        );
                    }
                }
            }
            let _ = match &s.run {
                Ok(Some(holder)) => writeln!(out, "  run         {holder}"),
                Ok(None) => writeln!(out, "  run         none"),
                Err(e) => writeln!(out, "  run         unknown: {e}"),
            };
            if let Ok(Some(holder)) = &s.run {
                for line in &holder.stuck {
                    let _ = writeln!(out, "  STUCK       {line}");
                }
            }
            match self.headroom(s) {
                Some(h) => {
                    let _ = writeln!(out, "  headroom    {}", describe_headroom(&h));
                }
                None => {
                    let _ = writeln!(out, "  headroom    unknown");
                }
            }
            if let Ok(n) = s.gaps
                && n > 0
            {
                let _ = writeln!(out, "  gaps        {n} recorded in changeflow_gaps");
            }
            let _ = match &s.images {
                Ok(Images::PostImages) => writeln!(
                    out,
                    "  documents   post-images: each update carries the state it left"
                ),
                Ok(Images::Lookup { without }) => writeln!(
                    out,
                    "  documents   lookup (marked fulldocument=lookup; without post-images: {}; `changeflow setup` turns them on)",
                    without.join(", ")
                ),
                Err(e) => writeln!(out, "  documents   unknown: {e}"),
            };
            for p in s.snapshots.iter().flatten() {
                let state = match p.finished_at {
                    Some(at) if p.done => format!("done {}", datetime_rfc3339(at)),
                    _ => "running".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "  snapshot    {}: {state}, {} documents ({}, started {})",
                    p.collection,
                    p.documents,
                    p.reason.as_str(),
                    datetime_rfc3339(p.started_at)
                );
            }
            if let Some(w) = self.warning(s) {
                let _ = writeln!(out, "  WARNING     {w}");
            }
        }
        let _ = writeln!(out, "oplog");
        match &self.oplog {
            Err(e) => {
                let _ = writeln!(out, "  unreadable: {e}");
            }
            Ok(windows) => {
                for m in &windows.members {
                    let _ = match &m.window {
                        Ok(w) => writeln!(
                            out,
                            "  {}  {} .. {}  ({})",
                            m.host,
                            rfc3339(w.oldest),
                            rfc3339(w.newest),
                            human_seconds(w.span_seconds())
                        ),
                        Err(e) => writeln!(out, "  {}  unreadable: {e}", m.host),
                    };
                }
            }
        }
        out
    }

    /// The report for scripts.
    pub fn json(&self) -> Value {
        let time = |t: Option<Timestamp>| {
            t.map_or(
                Value::Null,
                |t| json!({"rfc3339": rfc3339(t), "cluster_time": cluster_time_text(t)}),
            )
        };
        let streams: Vec<Value> = self
            .streams
            .iter()
            .map(|s| {
                let token = match &s.checkpoint {
                    Ok(Some(Stored {
                        resume: Resume::After(t),
                        ..
                    })) => token_data(t).map_or(Value::Null, Value::from),
                    _ => Value::Null,
                };
                json!({
                    "stream": s.stream,
                    "collections": s.collections,
                    "checkpoint": {
                        "token": token,
                        "time": time(s.time()),
                        "error": s.checkpoint.as_ref().err(),
                    },
                    "headroom_seconds": self.headroom(s).map(|h| h.seconds),
                    "headroom": self.headroom(s).map(|h| headroom_json(&h)),
                    "lag_seconds": self.lag(s),
                    "gaps": s.gaps.as_ref().ok(),
                    "run": s.run.as_ref().ok(),
                    "documents": match &s.images {
                        Ok(Images::PostImages) => json!({"mode": "post-images"}),
                        Ok(Images::Lookup { without }) => json!({"mode": "lookup", "without_post_images": without}),
                        Err(e) => json!({"error": e}),
                    },
                    "snapshots": s.snapshots.as_ref().ok().map(|all| all.iter().map(|p| json!({
                        "collection": p.collection,
                        "reason": p.reason.as_str(),
                        "done": p.done,
                        "documents": p.documents,
                        "started_at": datetime_rfc3339(p.started_at),
                        "finished_at": p.finished_at.map(datetime_rfc3339),
                    })).collect::<Vec<_>>()),
                    "warning": self.warning(s),
                })
            })
            .collect();
        let oplog = match &self.oplog {
            Err(e) => json!({"error": e}),
            Ok(w) => Value::Array(
                w.members
                    .iter()
                    .map(|m| match &m.window {
                        Ok(w) => json!({
                            "host": m.host,
                            "oldest": time(Some(w.oldest)),
                            "newest": time(Some(w.newest)),
                            "size_bytes": w.fill.map(|f| f.size_bytes),
                            "max_bytes": w.fill.map(|f| f.max_bytes),
                        }),
                        Err(e) => json!({"host": m.host, "error": e}),
                    })
                    .collect(),
            ),
        };
        json!({"streams": streams, "oplog": oplog})
    }

    /// Sets the headroom and lag gauges and the health warnings from this report, and logs
    /// a warning for each stream that needs attention.
    pub fn publish(&self, metrics: &Metrics, health: &Health) {
        for s in &self.streams {
            if let Some(h) = self.headroom(s) {
                metrics
                    .oplog_headroom
                    .with_label_values(&[&s.stream])
                    .set(h.seconds as f64);
            }
            if let Some(lag) = self.lag(s) {
                metrics
                    .checkpoint_lag
                    .with_label_values(&[&s.stream])
                    .set(lag as f64);
            }
            let warning = self.warning(s);
            if let Some(w) = &warning {
                tracing::warn!(stream = %s.stream, "{w}; see `changeflow status`");
            }
            health.set_warning(&s.stream, warning);
        }
    }
}

/// "41d 3h (estimated: the oplog is at 0.2 % of its limit, written at 12.0 KB/s)".
fn describe_headroom(h: &Headroom) -> String {
    match h.basis {
        Basis::Measured => format!(
            "{} (measured to the oldest oplog entry)",
            human_seconds(h.seconds)
        ),
        Basis::Estimated {
            full,
            bytes_per_second,
        } => format!(
            "{} (estimated: the oplog is at {:.1} % of its size limit, written at {:.1} KB/s; \
             {} of history before the checkpoint so far)",
            human_seconds(h.seconds),
            full * 100.0,
            bytes_per_second / 1000.0,
            human_seconds(h.measured_seconds)
        ),
    }
}

fn headroom_json(h: &Headroom) -> Value {
    let mut v = json!({
        "seconds": h.seconds,
        "basis": h.basis.name(),
        "measured_seconds": h.measured_seconds,
    });
    if let Basis::Estimated {
        full,
        bytes_per_second,
    } = h.basis
    {
        v["oplog_full_ratio"] = json!(full);
        v["bytes_per_second"] = json!(bytes_per_second);
    }
    v
}

/// Reads every stream's checkpoint and gap count and the oplog windows through `probe`.
pub(crate) async fn gather(client: &Client, config: &Config, probe: Option<&OplogProbe>) -> Report {
    let state = client.database(&config.checkpoint.database);
    let store = CheckpointStore::new(&state);
    let gaps = Gaps::new(&state);
    let snapshots = Snapshots::new(&state);
    let streams = futures::future::join_all(config.watch.iter().map(|w| {
        let (store, gaps, state, snapshots) = (&store, &gaps, &state, &snapshots);
        async move {
            let db = client.database(&w.database);
            let (checkpoint, gap_count, run, snapshots, images) = futures::join!(
                store.load_stored(&w.database),
                gaps.count(&w.database),
                presence::holder(state, &w.database),
                snapshots.of_stream(&w.database),
                images::of(&db, &w.collections)
            );
            StreamStatus {
                stream: w.database.clone(),
                collections: w.collections.clone(),
                checkpoint: checkpoint.map_err(|e| e.to_string()),
                gaps: gap_count.map_err(|e| e.to_string()),
                run: run.map_err(|e| e.to_string()),
                snapshots: snapshots.map_err(|e| e.to_string()),
                images: images.map_err(|e| e.to_string()),
            }
        }
    }));
    let windows = async {
        match probe {
            Some(p) => Ok(p.windows().await),
            None => Err("no oplog probe".to_owned()),
        }
    };
    let (streams, oplog) = futures::join!(streams, windows);
    Report {
        streams,
        oplog,
        warning_seconds: config.history.headroom_warning_seconds,
    }
}

/// `changeflow status [--json]`.
pub async fn command(config: &Config, json: bool) -> anyhow::Result<()> {
    let client = connect(&config.mongodb.uri).await?;
    let probe = OplogProbe::connect(&client, &config.mongodb.uri).await;
    let mut report = gather(&client, config, probe.as_ref().ok()).await;
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
