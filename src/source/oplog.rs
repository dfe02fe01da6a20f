//! The oplog window: the oldest and newest entry of each data-bearing replica-set member.
//! A stream can resume only from a point still inside the window of the member it reads
//! from, so the member with the youngest oldest entry bounds every checkpoint's headroom.

use std::time::Duration;

use mongodb::bson::{Document, Timestamp, doc};
use mongodb::options::{ClientOptions, ServerAddress};
use mongodb::{Client, Collection};

use crate::config::redact::redact_uri;
use crate::source::position::seconds_between;

/// How long one member may take to answer before it counts as unreadable.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);

/// Oldest and newest entry of one member's oplog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The oldest entry still kept: nothing before it can be resumed from.
    pub oldest: Timestamp,
    /// The newest entry.
    pub newest: Timestamp,
}

impl Window {
    /// Seconds between the oldest and newest entry.
    pub fn span_seconds(&self) -> i64 {
        seconds_between(self.oldest, self.newest)
    }
}

/// One member and what reading its oplog gave.
#[derive(Debug, Clone)]
pub struct MemberWindow {
    /// `host:port`, as the replica set names it.
    pub host: String,
    /// Its window, or why it could not be read (never holds a password).
    pub window: Result<Window, String>,
}

/// The windows of every member that could be read, and why the others could not.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    /// One entry per data-bearing member (a single entry for a direct connection).
    pub members: Vec<MemberWindow>,
}

impl Windows {
    /// The youngest oldest entry over the readable members: the first history to be lost.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.readable().map(|w| w.oldest).max()
    }

    /// The newest entry over the readable members.
    pub fn newest(&self) -> Option<Timestamp> {
        self.readable().map(|w| w.newest).max()
    }

    fn readable(&self) -> impl Iterator<Item = &Window> {
        self.members.iter().filter_map(|m| m.window.as_ref().ok())
    }
}

/// Why the member list could not be read at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OplogError {
    /// `hello` failed.
    #[error("asking the deployment for its members: {0}")]
    Hello(mongodb::error::Error),
    /// A mongos has no oplog of its own.
    #[error(
        "connected to a mongos: the oplog windows are per shard; run `changeflow status` \
         against each shard's replica set to see them"
    )]
    Mongos,
}

/// Reads oplog windows of one deployment, with a direct connection per member (opened
/// once, reused on every probe).
pub(crate) struct OplogProbe {
    members: Vec<(String, Result<Collection<Document>, String>)>,
}

impl OplogProbe {
    /// Finds the data-bearing members of the deployment `client` is connected to (the
    /// `hosts` and `passives` of `hello`) and prepares a direct connection to each, with
    /// the credentials and TLS settings of `uri`.
    pub async fn connect(client: &Client, uri: &str) -> Result<OplogProbe, OplogError> {
        let hello = client
            .database("admin")
            .run_command(doc! {"hello": 1})
            .await
            .map_err(OplogError::Hello)?;
        if hello.get_str("msg") == Ok("isdbgrid") {
            return Err(OplogError::Mongos);
        }
        let hosts: Vec<String> = ["hosts", "passives"]
            .iter()
            .filter_map(|key| hello.get_array(key).ok())
            .flatten()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect();
        if hosts.is_empty() {
            // Not a replica-set member (a direct connection): the server itself.
            return Ok(OplogProbe {
                members: vec![("(connected server)".to_owned(), Ok(oplog_of(client)))],
            });
        }
        // Parsed once: an SRV URI would otherwise be resolved again for every member.
        let options = ClientOptions::parse(uri)
            .await
            .map_err(|e| redact_uri(&e.to_string()));
        let members = hosts
            .into_iter()
            .map(|host| {
                let oplog = options
                    .clone()
                    .and_then(|options| direct_oplog(options, &host));
                (host, oplog)
            })
            .collect();
        Ok(OplogProbe { members })
    }

    /// Reads every member's window now.
    pub async fn windows(&self) -> Windows {
        let reads = self.members.iter().map(|(host, oplog)| async move {
            let window = match oplog {
                Ok(oplog) => read_window(oplog).await,
                Err(e) => Err(e.clone()),
            };
            MemberWindow {
                host: host.clone(),
                window,
            }
        });
        Windows {
            members: futures::future::join_all(reads).await,
        }
    }
}

fn oplog_of(client: &Client) -> Collection<Document> {
    client.database("local").collection("oplog.rs")
}

/// The oplog of `host`, over a direct connection with the deployment's `options`
/// (credentials, TLS).
fn direct_oplog(mut options: ClientOptions, host: &str) -> Result<Collection<Document>, String> {
    options.hosts = vec![ServerAddress::parse(host).map_err(|e| e.to_string())?];
    options.direct_connection = Some(true);
    options.repl_set_name = None;
    options.server_selection_timeout = Some(MEMBER_TIMEOUT);
    options.connect_timeout = Some(MEMBER_TIMEOUT);
    let direct = Client::with_options(options).map_err(|e| redact_uri(&e.to_string()))?;
    Ok(oplog_of(&direct))
}

async fn read_window(oplog: &Collection<Document>) -> Result<Window, String> {
    let (oldest, newest) = futures::try_join!(entry_time(oplog, 1), entry_time(oplog, -1))?;
    Ok(Window { oldest, newest })
}

/// The time of the first (`order` 1) or last (-1) entry of `oplog`.
async fn entry_time(oplog: &Collection<Document>, order: i32) -> Result<Timestamp, String> {
    let entry = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": order})
        .projection(doc! {"ts": 1, "_id": 0})
        .await
        .map_err(|e| redact_uri(&e.to_string()))?
        .ok_or_else(|| "the oplog is empty".to_owned())?;
    entry
        .get_timestamp("ts")
        .map_err(|e| format!("oplog entry without a timestamp: {e}"))
}

/// The oldest oplog entry of the member `client` reads from (the primary, unless its
/// read preference says otherwise): where a stream opened through it can start. Fails
/// when that oplog cannot be read (e.g. no read access to `local`).
pub(crate) async fn oldest_entry(client: &Client) -> Result<Timestamp, String> {
    entry_time(&oplog_of(client), 1).await
}

/// Seconds from the oldest oplog entry to `checkpoint`: how long until it falls off at the
/// present write rate's window (negative: already lost).
pub fn headroom_seconds(checkpoint: Timestamp, oldest: Timestamp) -> i64 {
    seconds_between(oldest, checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(time: u32) -> Timestamp {
        Timestamp { time, increment: 1 }
    }

    #[test]
    fn the_shortest_member_window_bounds_the_history() {
        let windows = Windows {
            members: vec![
                MemberWindow {
                    host: "a:1".into(),
                    window: Ok(Window {
                        oldest: ts(100),
                        newest: ts(500),
                    }),
                },
                MemberWindow {
                    host: "b:1".into(),
                    window: Ok(Window {
                        oldest: ts(300),
                        newest: ts(490),
                    }),
                },
                MemberWindow {
                    host: "c:1".into(),
                    window: Err("unreachable".into()),
                },
            ],
        };
        assert_eq!(windows.oldest(), Some(ts(300)));
        assert_eq!(windows.newest(), Some(ts(500)));
        assert_eq!(headroom_seconds(ts(450), ts(300)), 150);
        assert_eq!(headroom_seconds(ts(250), ts(300)), -50);
        assert_eq!(Windows::default().oldest(), None);
    }
}
