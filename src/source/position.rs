//! Places in a change stream as operators name them: resume tokens as the hex string the
//! server puts in `_data`, and cluster times as RFC 3339 or `<seconds>.<increment>`.

use mongodb::bson::{self, DateTime, RawDocumentBuf, Timestamp, doc};
use mongodb::change_stream::event::ResumeToken;

/// Why a token or a time given by a user could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PositionError {
    /// Not a resume token's `_data`.
    #[error(
        "`{0}` is not a resume token: expected the hex string of its `_data` \
         (e.g. 8263A1B2C3000000012B022C0100296E5A1004…, as `changeflow checkpoint show` prints it)"
    )]
    Token(String),
    /// Neither RFC 3339 nor a cluster time.
    #[error(
        "`{0}` is not a time: expected RFC 3339 (2026-11-22T14:02:00Z) or a cluster time \
         <seconds>.<increment> (1763820120.1)"
    )]
    Time(String),
}

/// The `_data` hex string of `token`: what operators copy and paste.
pub fn token_data(token: &ResumeToken) -> Option<String> {
    let doc = bson::to_document(token).ok()?;
    doc.get_str("_data").ok().map(str::to_owned)
}

/// The `_data` of a raw token as the server sent it.
pub(crate) fn raw_token_data(token: &RawDocumentBuf) -> Option<&str> {
    token.get_str("_data").ok()
}

/// A resume token from the hex string of its `_data`.
pub fn token_from_hex(hex: &str) -> Result<ResumeToken, PositionError> {
    let hex = hex.trim();
    // Every server token starts with its cluster time (type byte 0x82 + 8 bytes).
    if hex.len() < 18 || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(PositionError::Token(hex.to_owned()));
    }
    if data_time(hex).is_none() {
        return Err(PositionError::Token(hex.to_owned()));
    }
    bson::from_document(doc! {"_data": hex.to_ascii_uppercase()})
        .map_err(|_| PositionError::Token(hex.to_owned()))
}

/// The cluster time a token's `_data` starts with (KeyString: type byte 0x82, then the
/// timestamp's seconds and increment as big-endian 32-bit numbers).
pub(crate) fn data_time(data: &str) -> Option<Timestamp> {
    let head = data.get(..18)?;
    if !head[..2].eq_ignore_ascii_case("82") {
        return None;
    }
    let time = u32::from_str_radix(&head[2..10], 16).ok()?;
    let increment = u32::from_str_radix(&head[10..18], 16).ok()?;
    Some(Timestamp { time, increment })
}

/// The cluster time of `token`.
pub fn token_time(token: &ResumeToken) -> Option<Timestamp> {
    data_time(&token_data(token)?)
}

/// Whether `time` is the lower bound (the first instant of a second) or the upper bound
/// (its last) when a time is given in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// From: every change in that second is included.
    Start,
    /// Until: every change in that second is included.
    End,
}

/// A cluster time from RFC 3339 (whole seconds; the bound decides which end of the second)
/// or `<seconds>.<increment>` (exact). `<seconds>:<increment>` is accepted too.
pub fn parse_time(s: &str, bound: Bound) -> Result<Timestamp, PositionError> {
    let s = s.trim();
    let bad = || PositionError::Time(s.to_owned());
    if let Some((secs, inc)) = s.split_once(['.', ':'])
        && !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && inc.bytes().all(|b| b.is_ascii_digit())
    {
        let time = secs.parse::<u32>().map_err(|_| bad())?;
        let increment = inc.parse::<u32>().map_err(|_| bad())?;
        return Ok(Timestamp { time, increment });
    }
    let parsed = DateTime::parse_rfc3339_str(s).map_err(|_| bad())?;
    let millis = parsed.timestamp_millis();
    let time = u32::try_from(millis.div_euclid(1000)).map_err(|_| bad())?;
    let increment = match bound {
        Bound::Start => 0,
        Bound::End => u32::MAX,
    };
    Ok(Timestamp { time, increment })
}

/// `<seconds>.<increment>`: exact, and accepted back by every `--*-time` option.
pub fn cluster_time_text(t: Timestamp) -> String {
    format!("{}.{}", t.time, t.increment)
}

/// RFC 3339 (UTC) of a date. Only years beyond 9999 fail; such a date is shown as the
/// epoch rather than lost.
pub(crate) fn datetime_rfc3339(at: DateTime) -> String {
    at.try_to_rfc3339_string()
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// RFC 3339 (UTC, whole seconds) of a cluster time's seconds.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    datetime_rfc3339(DateTime::from_millis(i64::from(t.time) * 1000))
}

/// Whole seconds from `from` to `to` (negative when `to` is earlier).
pub(crate) fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    i64::from(to.time) - i64::from(from.time)
}

/// Seconds from the cluster time `t` to now (by this machine's clock).
pub(crate) fn age_seconds(t: Timestamp) -> i64 {
    DateTime::now().timestamp_millis() / 1000 - i64::from(t.time)
}

/// `2026-11-22T14:02:00Z (1763820120.1)`: readable and exact.
pub fn describe(t: Timestamp) -> String {
    format!("{} ({})", rfc3339(t), cluster_time_text(t))
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`; negative spans get a leading `-`.
pub(crate) fn human_seconds(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let text = if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    };
    format!("{sign}{text}")
}

/// The last change a replay emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Until {
    /// Every change at or before this cluster time.
    Time(Timestamp),
    /// Every change up to and including the one with this token (`_data`).
    Token(String),
}

impl Until {
    /// Whether the change with token `data` lies beyond the end (not emitted).
    pub fn is_past(&self, data: &str) -> bool {
        match self {
            Until::Time(end) => data_time(data).is_some_and(|t| t > *end),
            Until::Token(end) => data > end.as_str(),
        }
    }

    /// Whether the change with token `data` is the last to emit.
    pub fn is_last(&self, data: &str) -> bool {
        matches!(self, Until::Token(end) if end == data)
    }

    /// Whether a quiet stream's post-batch token `data` shows every change up to the end
    /// was read (the server has scanned the oplog beyond it).
    pub fn idle_passed(&self, data: &str) -> bool {
        self.is_past(data)
    }

    /// The end's cluster time.
    pub fn time(&self) -> Option<Timestamp> {
        match self {
            Until::Time(t) => Some(*t),
            Until::Token(data) => data_time(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = "8269206B7A000000012B022C0100296E5A1004";

    #[test]
    fn token_hex_round_trips_and_carries_its_time() {
        let token = token_from_hex(&DATA.to_ascii_lowercase()).expect("valid");
        assert_eq!(token_data(&token).as_deref(), Some(DATA));
        assert_eq!(
            token_time(&token),
            Some(Timestamp {
                time: 0x6920_6B7A,
                increment: 1
            })
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "xyz",
            "8269",
            "1269206B7A000000012B",
            "8269206B7A00000001Z",
        ] {
            assert!(token_from_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_parse_in_both_forms() {
        let exact = Timestamp {
            time: 1_763_820_120,
            increment: 3,
        };
        assert_eq!(parse_time("1763820120.3", Bound::Start), Ok(exact));
        assert_eq!(parse_time("1763820120:3", Bound::End), Ok(exact));
        assert_eq!(
            parse_time("2025-11-22T14:02:00Z", Bound::Start),
            Ok(Timestamp {
                time: 1_763_820_120,
                increment: 0
            })
        );
        assert_eq!(
            parse_time("2025-11-22T15:02:00.900+01:00", Bound::End),
            Ok(Timestamp {
                time: 1_763_820_120,
                increment: u32::MAX
            })
        );
        for bad in ["yesterday", "-5.1", "1763820120.x", "1969-01-01T00:00:00Z"] {
            assert!(parse_time(bad, Bound::Start).is_err(), "{bad}");
        }
        assert_eq!(rfc3339(exact), "2025-11-22T14:02:00Z");
        assert_eq!(describe(exact), "2025-11-22T14:02:00Z (1763820120.3)");
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(human_seconds(12), "12s");
        assert_eq!(human_seconds(250), "4m 10s");
        assert_eq!(human_seconds(7500), "2h 5m");
        assert_eq!(human_seconds(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(human_seconds(-90), "-1m 30s");
    }
}
