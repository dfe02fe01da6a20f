//! `changeflow checkpoint show | set | reset`: an operator's view of the live checkpoints
//! and the only sanctioned way to move them. Every change names what it replaces, so the
//! old position can be put back.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use mongodb::Client;
use mongodb::bson::Timestamp;
use mongodb::change_stream::event::ResumeToken;
use serde_json::{Value, json};

use crate::cmd::CheckpointCommand;
use crate::config::Config;
use crate::source::connect::connect;
use crate::source::position::{
    age_seconds, cluster_time_text, datetime_rfc3339, describe, human_seconds, token_data,
};
use crate::state::checkpoints::{Checkpoint, CheckpointStore, Resume, Stored};
use crate::state::leases::Leases;
use crate::state::presence;

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
pub(crate) fn check_stream(config: &Config, stream: &str) -> anyhow::Result<()> {
    if config.watch.iter().any(|w| w.database == stream) {
        return Ok(());
    }
    let names: Vec<&str> = config.watch.iter().map(|w| w.database.as_str()).collect();
    bail!(
        "`{stream}` is not a stream (one per watched database: {})",
        names.join(", ")
    )
}

/// Refuses (unless `force`) while a live `changeflow run` holds `stream`'s lease: its
/// next checkpoint would overwrite the change.
pub(crate) async fn refuse_while_running(
    client: &Client,
    config: &Config,
    stream: &str,
    force: bool,
) -> anyhow::Result<()> {
    let database = client.database(&config.checkpoint.database);
    let holder = presence::holder(&database, stream)
        .await
        .with_context(|| format!("reading {}", crate::state::leases::COLLECTION))?;
    match holder {
        Some(holder) if !force => bail!(
            "stream `{stream}` is being processed by {holder}: its next checkpoint would \
             overwrite this change. Stop it first (a graceful stop releases the stream's \
             lease; a killed process's lease expires {} ms after its last renewal, \
             lease.ttl_ms), or pass --force",
            config.lease.ttl_ms
        ),
        Some(holder) => {
            eprintln!(
                "warning: --force while {holder} processes `{stream}`: it loses the stream \
                 at its next lease renewal (lease.renew_ms) and resumes from the new position"
            );
            Ok(())
        }
        None => Ok(()),
    }
}

/// One line per field of `stored`, for people.
pub(crate) fn describe_stored(stored: Option<&Stored>) -> String {
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
pub(crate) fn stored_json(stream: &str, stored: Option<&Stored>) -> Value {
    let token = stored.and_then(|s| match &s.resume {
        Resume::After(t) => token_data(t),
        Resume::AtTime(_) => None,
    });
    let time = stored.and_then(Stored::cluster_time);
    json!({
        "stream": stream,
        "token": token,
        "cluster_time": time.map(cluster_time_text),
        "rfc3339": time.map(crate::source::position::rfc3339),
        "start_at_time": stored.is_some_and(|s| matches!(s.resume, Resume::AtTime(_))),
    })
}

/// Moves `stream`'s checkpoint to `to`, fenced by `fence` ([`CheckpointStore::fence`]).
pub async fn set(
    store: &CheckpointStore,
    stream: &str,
    to: &NewPosition,
    fence: i64,
) -> anyhow::Result<()> {
    match to {
        NewPosition::Token(token) => store
            .save_fenced(
                &Checkpoint {
                    stream: stream.to_owned(),
                    token: token.clone(),
                    cluster_time: None,
                    wall_time: None,
                    events_since_start: 0,
                },
                fence,
            )
            .await
            .context("storing the checkpoint")?,
        NewPosition::Time(t) => store
            .set_time(stream, *t, fence)
            .await
            .context("storing the checkpoint")?,
    }
    Ok(())
}

/// The term an operator's change of `stream` carries: above every holder's so far, so a
/// holder deposed (paused, cut off) before the change cannot write over it.
async fn fence(
    client: &Client,
    config: &Config,
    store: &CheckpointStore,
    stream: &str,
) -> anyhow::Result<i64> {
    let leases = Leases::new(&client.database(&config.checkpoint.database));
    let context = || format!("reading {}", crate::state::leases::COLLECTION);
    let lease_term = leases.term(stream).await.with_context(context)?;
    let fence = store.fence(stream, lease_term).await?;
    // The next holder's term then passes the fence at its first try.
    leases
        .raise_term(stream, fence)
        .await
        .with_context(|| format!("raising the term in {}", crate::state::leases::COLLECTION))?;
    Ok(fence)
}

/// How `previous` can be put back, for the confirmation and the final message.
pub(crate) fn undo_hint(stream: &str, previous: Option<&Stored>) -> String {
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

/// `changeflow checkpoint show | set | reset`.
pub async fn command(config: &Config, command: CheckpointCommand) -> anyhow::Result<()> {
    let client = connect(&config.mongodb.uri).await?;
    let store = store(&client, config);
    match command {
        CheckpointCommand::Show { stream, json } => {
            if let Some(s) = &stream {
                check_stream(config, s)?;
            }
            let mut shown = Vec::new();
            for w in config
                .watch
                .iter()
                .filter(|w| stream.as_ref().is_none_or(|s| *s == w.database))
            {
                let stored = store.load_stored(&w.database).await?;
                if json {
                    shown.push(stored_json(&w.database, stored.as_ref()));
                } else {
                    print!(
                        "stream {}\n{}",
                        w.database,
                        describe_stored(stored.as_ref())
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
                    crate::source::position::token_data(t).unwrap_or_default()
                ),
                NewPosition::Time(t) => format!("at {}", describe(*t)),
            };
            confirm(
                &format!("Move the checkpoint of `{stream}` to resume {target}?"),
                yes,
            )?;
            let fence = fence(&client, config, &store, &stream).await?;
            set(&store, &stream, &to, fence).await?;
            println!(
                "checkpoint of `{stream}` moved; it resumes {target} when `changeflow run` starts\n{}",
                undo_hint(&stream, current.as_ref())
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
            let fence = fence(&client, config, &store, &stream).await?;
            store.reset(&stream, fence).await?;
            println!(
                "checkpoint of `{stream}` deleted\n{}",
                undo_hint(&stream, current.as_ref())
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
    check_stream(config, stream)?;
    refuse_while_running(client, config, stream, force).await?;
    Ok(store.load_stored(stream).await?)
}

fn show_now(stream: &str, current: Option<&Stored>) {
    println!("stream {stream} now:\n{}", describe_stored(current));
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
