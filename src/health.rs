//! Stream health: `/healthz` answers 200 only while every configured stream is open, and
//! reports `degraded` (still 200) while a stream's oplog headroom is below the warning.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// Open/closed state of each stream.
#[derive(Debug, Default)]
pub struct Health {
    streams: RwLock<BTreeMap<String, bool>>,
    warnings: RwLock<BTreeMap<String, String>>,
}

impl Health {
    /// Health of `streams`, all closed.
    pub fn new<'a>(streams: impl IntoIterator<Item = &'a str>) -> Health {
        Health {
            streams: RwLock::new(streams.into_iter().map(|s| (s.to_owned(), false)).collect()),
            warnings: RwLock::default(),
        }
    }

    /// Records whether `stream` is open.
    pub fn set_open(&self, stream: &str, open: bool) {
        if let Ok(mut streams) = self.streams.write() {
            streams.insert(stream.to_owned(), open);
        }
    }

    /// Each stream and whether it is open.
    pub fn snapshot(&self) -> BTreeMap<String, bool> {
        self.streams.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records why `stream` needs attention, or that it no longer does.
    pub fn set_warning(&self, stream: &str, warning: Option<String>) {
        if let Ok(mut warnings) = self.warnings.write() {
            match warning {
                Some(w) => warnings.insert(stream.to_owned(), w),
                None => warnings.remove(stream),
            };
        }
    }

    /// Each stream that needs attention and why.
    pub fn warnings(&self) -> BTreeMap<String, String> {
        self.warnings.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// Whether every stream is open (false when there is none).
    pub fn all_open(&self) -> bool {
        let streams = self.snapshot();
        !streams.is_empty() && streams.values().all(|open| *open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_when_every_stream_is_open() {
        let health = Health::new(["a", "b"]);
        assert!(!health.all_open());
        health.set_open("a", true);
        assert!(!health.all_open());
        health.set_open("b", true);
        assert!(health.all_open());
        health.set_open("a", false);
        assert!(!health.all_open());
        health.set_warning("b", Some("low headroom".into()));
        assert_eq!(
            health.warnings().get("b").map(String::as_str),
            Some("low headroom")
        );
        health.set_warning("b", None);
        assert!(health.warnings().is_empty());
    }
}
