//! `changeflow checkpoint show | set | reset`: an operator's view of the live checkpoints
//! and the only sanctioned way to move them. Every change names what it replaces, so the
//! old position can be put back.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use mongodb::Client;
use mongodb::bson::Timestamp;
use mongodb::change_stream::event::ResumeToken;
use serde_json::{Value, json};

use super::presence;
use super::store::{Checkpoint, CheckpointStore, Resume, Stored};
use crate::config::Config;
use crate::position::{
    age_seconds, cluster_time_text, datetime_rfc3339, describe, human_seconds, token_data,
};

/// Where `checkpoint set` moves a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum NewPosition {
    /// Right after the change with this token.
    Token(ResumeToken),
    /// The first change at or after this cluster time.
    Time(Timestamp),
}

/// The live checkpoint store of `config`.
pub fn store(client: &Client, config: &Config) -> CheckpointStore {
    CheckpointStore::new(&client.database(&config.checkpoint.database))
}

/// The watched database named `stream`, or an error listing them.
pub fn check_stream(config: &Config, stream: &str) -> anyhow::Result<()> {
    if config.watch.iter().any(|w| w.database == stream) {
        return Ok(());
    }
    let names: Vec<&str> = config.watch.iter().map(|w| w.database.as_str()).collect();
    bail!(
        "`{stream}` is not a stream (one per watched database: {})",
        names.join(", ")
    )
}

/// Refuses (unless `force`) while a live `changeflow run` processes `stream`: its next
/// checkpoint would overwrite the change.
pub async fn refuse_while_running(
    client: &Client,
    config: &Config,
    stream: &str,
    force: bool,
) -> anyhow::Result<()> {
    let database = client.database(&config.checkpoint.database);
    let holder = presence::holder(&database, stream)
        .await
        .with_context(|| format!("reading {}", presence::COLLECTION))?;
    match holder {
        Some(holder) if !force => bail!(
            "stream `{stream}` is being processed by {holder}: its next checkpoint would \
             overwrite this change. Stop it first (a graceful stop releases the stream; a \
             killed process counts as gone {} s after its last heartbeat), or pass --force",
            presence::GONE_AFTER.as_secs()
        ),
        Some(holder) => {
            eprintln!("warning: --force while {holder} processes `{stream}`");
            Ok(())
        }
        None => Ok(()),
    }
}

/// One line per field of `stored`, for people.
pub fn describe_stored(stored: Option<&Stored>) -> String {
    let Some(stored) = stored else {
        return "  none: the stream starts at `run --start-at` (default: now)\n".to_owned();
    };
    let mut out = String::new();
    match &stored.resume {
        Resume::After(token) => {
            let _ = writeln!(out, "  token    {}", token_data(token).unwrap_or_default());
        }
        Resume::AtTime(t) => {
            let _ = writeln!(
                out,
                "  start at {} (set by an operator; replaced by a token once the stream opens)",
                describe(*t)
            );
        }
    }
    if let Some(t) = stored.cluster_time() {
        let age = human_seconds(age_seconds(t));
        let _ = writeln!(out, "  time     {}, {age} ago", describe(t));
    }
    if let Some(at) = stored.updated_at {
        let _ = writeln!(out, "  stored   {}", datetime_rfc3339(at));
    }
    out
}

/// `stored` for scripts.
pub fn stored_json(stream: &str, stored: Option<&Stored>) -> Value {
    let token = stored.and_then(|s| match &s.resume {
        Resume::After(t) => token_data(t),
        Resume::AtTime(_) => None,
    });
    let time = stored.and_then(Stored::cluster_time);
    json!({
        "stream": stream,
        "token": token,
        "cluster_time": time.map(cluster_time_text),
        "rfc3339": time.map(crate::position::rfc3339),
        "start_at_time": stored.is_some_and(|s| matches!(s.resume, Resume::AtTime(_))),
    })
}

/// Moves `stream`'s checkpoint to `to`.
pub async fn set(store: &CheckpointStore, stream: &str, to: &NewPosition) -> anyhow::Result<()> {
    match to {
        NewPosition::Token(token) => store
            .save(&Checkpoint {
                stream: stream.to_owned(),
                token: token.clone(),
                cluster_time: None,
                wall_time: None,
                events_since_start: 0,
            })
            .await
            .context("storing the checkpoint")?,
        NewPosition::Time(t) => store
            .set_time(stream, *t)
            .await
            .context("storing the checkpoint")?,
    }
    Ok(())
}

/// How `previous` can be put back, for the confirmation and the final message.
pub fn undo_hint(stream: &str, previous: Option<&Stored>) -> String {
    match previous.map(|p| &p.resume) {
        Some(Resume::After(token)) => format!(
            "to undo: changeflow checkpoint set --stream {stream} --token {} --yes",
            token_data(token).unwrap_or_default()
        ),
        Some(Resume::AtTime(t)) => format!(
            "to undo: changeflow checkpoint set --stream {stream} --time {} --yes",
            cluster_time_text(*t)
        ),
        None => format!("to undo: changeflow checkpoint reset --stream {stream} --yes"),
    }
}
