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

/// Oldest and newest entry of one member's oplog, and how full it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The oldest entry still kept: nothing before it can be resumed from.
    pub oldest: Timestamp,
    /// The newest entry.
    pub newest: Timestamp,
    /// Its size against its limit, when the member said (`collStats`).
    pub fill: Option<Fill>,
}

/// How much of its configured size an oplog uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Bytes of entries kept now.
    pub size_bytes: u64,
    /// The configured limit (`replication.oplogSizeMB`): beyond it the oldest entries go.
    pub max_bytes: u64,
}

/// The shortest span a write rate is taken over.
const MIN_RATE_SPAN_SECONDS: i64 = 3600;

/// The longest headroom an estimate reports: a near-idle oplog would otherwise project
/// centuries.
const ESTIMATE_CAP_SECONDS: i64 = 10 * 365 * 86_400;

/// A headroom figure and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headroom {
    /// Seconds until the checkpoint falls off the oplog (negative: already off).
    pub seconds: i64,
    /// Seconds from the oldest entry kept now to the checkpoint.
    pub measured_seconds: i64,
    /// How `seconds` was obtained.
    pub basis: Basis,
}

/// Where a headroom figure comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Basis {
    /// The oplog is at (or within a tenth of) its size limit, or did not say its size: the
    /// oldest entry goes as new ones come, so the distance to it is the headroom.
    Measured,
    /// The oplog is below its limit, so nothing is dropped yet: the headroom is the
    /// distance to the oldest entry plus the time the rest of the limit takes to fill at
    /// the write rate seen so far (over an hour at least).
    Estimated {
        /// Share of the limit in use, 0..1.
        full: f64,
        /// The average write rate over the oplog's span.
        bytes_per_second: f64,
    },
}

impl Basis {
    /// "measured" or "estimated".
    pub fn name(&self) -> &'static str {
        match self {
            Basis::Measured => "measured",
            Basis::Estimated { .. } => "estimated",
        }
    }
}

impl Window {
    /// Seconds between the oldest and newest entry.
    pub fn span_seconds(&self) -> i64 {
        seconds_between(self.oldest, self.newest)
    }

    /// The headroom of a checkpoint at `checkpoint` on this member.
    pub fn headroom(&self, checkpoint: Timestamp) -> Headroom {
        let measured = headroom_seconds(checkpoint, self.oldest);
        let measured_only = Headroom {
            seconds: measured,
            measured_seconds: measured,
            basis: Basis::Measured,
        };
        let Some(fill) = self.fill else {
            return measured_only;
        };
        // Past 90 % the oplog may already have wrapped: the server drops whole truncation
        // markers (a tenth of the limit at most), so a wrapped oplog stays that full.
        let nearly_full = u128::from(fill.size_bytes) * 10 >= u128::from(fill.max_bytes) * 9;
        if measured < 0 || nearly_full {
            return measured_only;
        }
        // The rate over at least an hour: a new set's first seconds (its initiation, the
        // first collections and indexes) are a burst, not a trend. A set written faster
        // than that shows it once its oplog nears the limit, measured.
        let span = self.span_seconds().max(MIN_RATE_SPAN_SECONDS);
        let bytes_per_second = fill.size_bytes as f64 / span as f64;
        let to_fill = if fill.size_bytes == 0 {
            ESTIMATE_CAP_SECONDS as f64
        } else {
            (fill.max_bytes - fill.size_bytes) as f64 / bytes_per_second
        };
        let seconds = measured.saturating_add(to_fill.min(ESTIMATE_CAP_SECONDS as f64) as i64);
        Headroom {
            seconds: seconds.min(ESTIMATE_CAP_SECONDS.max(measured)),
            measured_seconds: measured,
            basis: Basis::Estimated {
                full: fill.size_bytes as f64 / fill.max_bytes as f64,
                bytes_per_second,
            },
        }
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

    /// The headroom of a checkpoint at `checkpoint`: the smallest over the readable
    /// members, since the first member to drop it ends its history.
    pub fn headroom(&self, checkpoint: Timestamp) -> Option<Headroom> {
        self.readable()
            .map(|w| w.headroom(checkpoint))
            .min_by_key(|h| h.seconds)
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
    let (oldest, newest, fill) = futures::join!(
        entry_time(oplog, 1),
        entry_time(oplog, -1),
        read_fill(oplog)
    );
    Ok(Window {
        oldest: oldest?,
        newest: newest?,
        fill,
    })
}

/// The oplog's size and limit from `collStats`; None when the member does not say (no
/// privilege, another storage engine): the headroom is then the measured one.
async fn read_fill(oplog: &Collection<Document>) -> Option<Fill> {
    let stats = oplog
        .client()
        .database("local")
        .run_command(doc! {"collStats": oplog.name()})
        .await
        .ok()?;
    let number = |key: &str| -> Option<u64> {
        match stats.get(key)? {
            mongodb::bson::Bson::Int32(n) => u64::try_from(*n).ok(),
            mongodb::bson::Bson::Int64(n) => u64::try_from(*n).ok(),
            mongodb::bson::Bson::Double(n) if n.is_finite() && *n >= 0.0 => Some(*n as u64),
            _ => None,
        }
    };
    let fill = Fill {
        size_bytes: number("size")?,
        max_bytes: number("maxSize")?,
    };
    (fill.max_bytes > 0).then_some(fill)
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
    let seconds = seconds_between(oldest, checkpoint);
    // Lost within the oldest entry's second still counts as lost: -1, never 0.
    let lost = (checkpoint.time, checkpoint.increment) < (oldest.time, oldest.increment);
    if lost { seconds.min(-1) } else { seconds }
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
                        fill: None,
                    }),
                },
                MemberWindow {
                    host: "b:1".into(),
                    window: Ok(Window {
                        oldest: ts(300),
                        newest: ts(490),
                        fill: None,
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
        let same_second = Timestamp {
            time: 300,
            increment: 5,
        };
        assert_eq!(headroom_seconds(ts(300), same_second), -1, "lost");
        assert_eq!(headroom_seconds(same_second, ts(300)), 0, "still there");
        assert_eq!(Windows::default().oldest(), None);
    }

    fn window(oldest: u32, newest: u32, size_bytes: u64, max_bytes: u64) -> Window {
        Window {
            oldest: ts(oldest),
            newest: ts(newest),
            fill: Some(Fill {
                size_bytes,
                max_bytes,
            }),
        }
    }

    #[test]
    fn a_young_oplog_projects_its_headroom_from_the_limit_and_the_write_rate() {
        // 10 000 s of history in 10 MB: 1 000 B/s; 990 MB left to fill takes 990 000 s.
        let young = window(1_000, 11_000, 10_000_000, 1_000_000_000);
        let h = young.headroom(ts(10_900));
        assert_eq!(h.measured_seconds, 9_900);
        assert_eq!(h.seconds, 9_900 + 990_000);
        match h.basis {
            Basis::Estimated {
                full,
                bytes_per_second,
            } => {
                assert!((full - 0.01).abs() < 1e-9);
                assert!((bytes_per_second - 1_000.0).abs() < 1e-9);
            }
            Basis::Measured => panic!("a young oplog is estimated"),
        }
    }

    #[test]
    fn a_full_oplog_or_a_lost_checkpoint_is_measured() {
        for size in [100, 95, 90] {
            let full = window(1_000, 2_000, size, 100);
            assert_eq!(full.headroom(ts(1_500)).seconds, 500);
            assert_eq!(full.headroom(ts(1_500)).basis, Basis::Measured);
        }
        assert_ne!(
            window(1_000, 2_000, 89, 100).headroom(ts(1_500)).basis,
            Basis::Measured
        );
        let young = window(1_000, 2_000, 10, 100);
        let lost = young.headroom(ts(900));
        assert_eq!((lost.seconds, lost.basis), (-100, Basis::Measured));
        // A set a second old (its initiation a burst in one second) is not low on
        // headroom: the rate is taken over an hour at least.
        let new_set = window(5, 5, 2_000_000, 3_600_000_000).headroom(ts(5));
        assert_eq!(new_set.measured_seconds, 0);
        assert_eq!(
            new_set.seconds,
            3_600 * 1_799,
            "an hour per 2 MB of the 3 598 MB left"
        );
        assert_eq!(
            window(5, 9, 0, 100).headroom(ts(5)).seconds,
            ESTIMATE_CAP_SECONDS
        );
    }

    #[test]
    fn a_near_idle_oplog_is_capped_and_the_shortest_member_wins() {
        let idle = window(0, 1, 1, u64::MAX);
        assert_eq!(idle.headroom(ts(1)).seconds, ESTIMATE_CAP_SECONDS);
        let windows = Windows {
            members: vec![
                MemberWindow {
                    host: "a:1".into(),
                    window: Ok(window(1_000, 2_000, 1_000_000, 100_000_000)),
                },
                MemberWindow {
                    host: "b:1".into(),
                    window: Ok(window(1_500, 2_000, 100, 100)),
                },
            ],
        };
        let h = windows.headroom(ts(1_900)).expect("readable members");
        assert_eq!((h.seconds, h.basis), (400, Basis::Measured));
    }
}
