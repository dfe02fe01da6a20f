//! Where every stream stands against the oplog: its checkpoint (token, cluster time, age),
//! the oplog window of each member, and the headroom left before the checkpoint falls off.
//! Printed by `changeflow status`; measured periodically by `run` for `/metrics` and
//! `/healthz`.

use mongodb::Client;
use mongodb::bson::{DateTime, Timestamp};

mod render;

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
use crate::state::leases::{Lease, Leases};
use crate::state::presence::{self, Holder, Instance};
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
    /// The newest gap's repair by snapshot (`resnapshot`): when it began and ended.
    pub repair: Option<(DateTime, Option<DateTime>)>,
    /// The live `changeflow run` processing it, if any.
    pub run: Result<Option<Holder>, String>,
    /// Its collections' snapshots, running or finished.
    pub snapshots: Result<Vec<Progress>, String>,
    /// Which document its update events carry.
    pub images: Result<Images, String>,
    /// Its lease: who reads it, in which term, until when (None: never leased).
    pub lease: Option<Lease>,
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
    /// The live instances (every role), or why they could not be read.
    pub instances: Result<Vec<Instance>, String>,
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

/// Reads every stream's checkpoint and gap count and the oplog windows through `probe`.
pub(crate) async fn gather(client: &Client, config: &Config, probe: Option<&OplogProbe>) -> Report {
    let state = client.database(&config.checkpoint.database);
    let store = CheckpointStore::new(&state);
    let gaps = Gaps::new(&state);
    let snapshots = Snapshots::new(&state);
    let leases = Leases::new(&state).all().await.unwrap_or_default();
    let streams = futures::future::join_all(config.watch.iter().map(|w| {
        let (store, gaps, state, snapshots) = (&store, &gaps, &state, &snapshots);
        let lease = leases.iter().find(|l| l.stream == w.database).cloned();
        async move {
            let db = client.database(&w.database);
            let (checkpoint, gap_count, run, snapshots, images) = futures::join!(
                store.load_stored(&w.database),
                gaps.of_stream(&w.database),
                presence::holder(state, &w.database),
                snapshots.of_stream(&w.database),
                images::of(&db, &w.collections)
            );
            StreamStatus {
                stream: w.database.clone(),
                collections: w.collections.clone(),
                checkpoint: checkpoint.map_err(|e| e.to_string()),
                repair: gap_count
                    .as_ref()
                    .ok()
                    .and_then(|all| all.last())
                    .and_then(|g| g.repair_started_at.map(|at| (at, g.repair_finished_at))),
                gaps: gap_count
                    .map(|all| all.len() as u64)
                    .map_err(|e| e.to_string()),
                run: run.map_err(|e| e.to_string()),
                snapshots: snapshots.map_err(|e| e.to_string()),
                images: images.map_err(|e| e.to_string()),
                lease,
            }
        }
    }));
    let windows = async {
        match probe {
            Some(p) => Ok(p.windows().await),
            None => Err("no oplog probe".to_owned()),
        }
    };
    let (streams, oplog, instances) =
        futures::join!(streams, windows, presence::live_instances(&state));
    Report {
        streams,
        oplog,
        warning_seconds: config.history.headroom_warning_seconds,
        instances: instances.map_err(|e| e.to_string()),
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
