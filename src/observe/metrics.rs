//! Prometheus metrics, `changeflow_` prefixed, with bounded label values (stream names
//! come from configuration, kinds and handler names from code).

use crate::observe::locks::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric changeflow exports.
pub struct Metrics {
    registry: Registry,
    /// Change events read, per stream and event kind.
    pub events_received: IntCounterVec,
    /// Events whose every handler finished, per event kind.
    pub events_handled: IntCounterVec,
    /// Events sent to the dead-letter collection, per event kind and stage.
    pub events_dead_lettered: IntCounterVec,
    /// Time one handler call took, per handler.
    pub handler_seconds: HistogramVec,
    /// Times a stream was reopened after an error, per stream.
    pub stream_reconnects: IntCounterVec,
    /// 1 while a stream is open, per stream.
    pub stream_open: IntGaugeVec,
    /// 1 while this instance holds the stream's lease, per stream.
    pub lease_held: IntGaugeVec,
    /// Leases this instance took over from another instance, per stream.
    pub lease_takeovers: IntCounterVec,
    /// Seconds a stream's reader spent waiting, per stream and on what: `server` (a batch
    /// was being fetched) or `dispatcher` (backpressure). Tells which side limits throughput.
    pub reader_wait_seconds: CounterVec,
    /// Seconds a stream held reading back at its read-ahead bound, per stream and on what:
    /// `handlers` (unfinished events) or `checkpoint` (a checkpoint write).
    pub dispatch_paused_seconds: CounterVec,
    /// Gaps recorded after lost history (`restart-from-now`), per stream.
    pub gaps: IntCounterVec,
    /// Seconds between a stream's checkpoint and the oldest oplog entry, per stream.
    pub oplog_headroom: GaugeVec,
    /// Seconds between the newest oplog entry and a stream's checkpoint, per stream.
    pub checkpoint_lag: GaugeVec,
    /// 1 while a stream is stuck, per stream and cause (`handlers`: an event does not
    /// finish; `source`: nothing arrives while the oplog moves on).
    pub stream_stuck: IntGaugeVec,
    /// Age of the oldest event read but not finished, per stream (0 when none waits).
    pub oldest_unfinished: GaugeVec,
    /// 1 while the MongoDB client sees a writable primary.
    pub mongodb_writable_primary: prometheus::IntGauge,
    /// Change events over 16 MB, per stream and outcome: `split` (read in fragments and
    /// reassembled), `dead_letter` or `fail` (the server could not split it).
    pub oversized_events: IntCounterVec,
    checkpoint_age: GaugeVec,
    checkpoint_saved: Mutex<HashMap<String, Instant>>,
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("metric {name} is well-formed: {e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| unreachable!("metric {name} is registered once: {e}"));
            c
        };
        let events_received = counter(
            "changeflow_events_received_total",
            "Change events read from the streams.",
            &["stream", "kind"],
        );
        let events_handled = counter(
            "changeflow_events_handled_total",
            "Events handled: counted once the targets that take a key's events in order finished (exactly-once counters, which commute, may still be committing).",
            &["kind"],
        );
        let events_dead_lettered = counter(
            "changeflow_events_dead_lettered_total",
            "Events written to the dead-letter collection.",
            &["kind", "stage"],
        );
        let stream_reconnects = counter(
            "changeflow_stream_reconnects_total",
            "Streams reopened from their checkpoint after an error.",
            &["stream"],
        );
        let mongodb_writable_primary = prometheus::IntGauge::new(
            "changeflow_mongodb_writable_primary",
            "1 while the MongoDB client sees a writable primary; 0 during an election or while a majority is down.",
        )
        .unwrap_or_else(|e| unreachable!("gauge is well-formed: {e}"));
        registry
            .register(Box::new(mongodb_writable_primary.clone()))
            .unwrap_or_else(|e| unreachable!("gauge is registered once: {e}"));
        let oversized_events = counter(
            "changeflow_oversized_events_total",
            "Change events over MongoDB's 16 MB limit: split (reassembled from fragments), dead_letter or fail (the server could not split them; engine.oversize).",
            &["stream", "outcome"],
        );
        let gaps = counter(
            "changeflow_gaps_total",
            "Stretches of history skipped because they had left the oplog (restart-from-now); each is recorded in changeflow_gaps.",
            &["stream"],
        );
        let gauge = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["stream"])
                .unwrap_or_else(|e| unreachable!("gauge {name} is well-formed: {e}"));
            registry
                .register(Box::new(g.clone()))
                .unwrap_or_else(|e| unreachable!("gauge {name} is registered once: {e}"));
            g
        };
        let oplog_headroom = gauge(
            "changeflow_oplog_headroom_seconds",
            "Seconds between the stream's checkpoint and the oldest oplog entry: how much history may still be lost before the checkpoint falls off.",
        );
        let checkpoint_lag = gauge(
            "changeflow_checkpoint_lag_seconds",
            "Seconds between the newest oplog entry and the stream's checkpoint.",
        );
        let handler_seconds = HistogramVec::new(
            HistogramOpts::new(
                "changeflow_handler_duration_seconds",
                "Time one handler call took.",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["handler"],
        )
        .unwrap_or_else(|e| unreachable!("histogram is well-formed: {e}"));
        let stream_open = IntGaugeVec::new(
            Opts::new("changeflow_stream_open", "1 while the stream is open."),
            &["stream"],
        )
        .unwrap_or_else(|e| unreachable!("gauge is well-formed: {e}"));
        let lease_held = IntGaugeVec::new(
            Opts::new(
                "changeflow_lease_held",
                "1 while this instance holds the stream's lease (reads the stream).",
            ),
            &["stream"],
        )
        .unwrap_or_else(|e| unreachable!("gauge is well-formed: {e}"));
        let lease_takeovers = counter(
            "changeflow_lease_takeovers_total",
            "Leases this instance took over from another instance (expired or released).",
            &["stream"],
        );
        let checkpoint_age = gauge(
            "changeflow_checkpoint_age_seconds",
            "Seconds since the stream's checkpoint was last stored.",
        );
        let oldest_unfinished = gauge(
            "changeflow_oldest_unfinished_seconds",
            "Seconds the stream's oldest event read but not finished has waited (0 when none waits).",
        );
        let stream_stuck = IntGaugeVec::new(
            Opts::new(
                "changeflow_stream_stuck",
                "1 while the stream is stuck (health.stuck_after_ms): cause=handlers, an event does not finish; cause=source, nothing arrives while the oplog moves on.",
            ),
            &["stream", "cause"],
        )
        .unwrap_or_else(|e| unreachable!("gauge is well-formed: {e}"));
        let reader_wait_seconds = CounterVec::new(
            Opts::new(
                "changeflow_reader_wait_seconds_total",
                "Seconds the stream's reader waited for the server (a batch being fetched) or for the dispatcher (backpressure).",
            ),
            &["stream", "on"],
        )
        .unwrap_or_else(|e| unreachable!("counter is well-formed: {e}"));
        let dispatch_paused_seconds = CounterVec::new(
            Opts::new(
                "changeflow_dispatch_paused_seconds_total",
                "Seconds the stream held reading back at engine.max_in_flight_events: for unfinished events (handlers or Kafka) or for a checkpoint write (the checkpoint store).",
            ),
            &["stream", "on"],
        )
        .unwrap_or_else(|e| unreachable!("counter is well-formed: {e}"));
        for m in [
            Box::new(handler_seconds.clone()) as Box<dyn Collector>,
            Box::new(reader_wait_seconds.clone()),
            Box::new(dispatch_paused_seconds.clone()),
            Box::new(stream_open.clone()),
            Box::new(lease_held.clone()),
            Box::new(stream_stuck.clone()),
        ] {
            registry
                .register(m)
                .unwrap_or_else(|e| unreachable!("metrics are registered once: {e}"));
        }
        Metrics {
            registry,
            events_received,
            events_handled,
            events_dead_lettered,
            handler_seconds,
            stream_reconnects,
            stream_open,
            lease_held,
            lease_takeovers,
            reader_wait_seconds,
            dispatch_paused_seconds,
            gaps,
            oplog_headroom,
            checkpoint_lag,
            stream_stuck,
            oldest_unfinished,
            oversized_events,
            mongodb_writable_primary,
            checkpoint_age,
            checkpoint_saved: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `stream`'s checkpoint was stored just now.
    pub fn checkpoint_saved(&self, stream: &str) {
        lock(&self.checkpoint_saved).insert(stream.to_owned(), Instant::now());
    }

    /// The reader's wait counters of `stream`.
    pub fn reader_metrics(&self, stream: &str) -> ReaderMetrics {
        let on = |what: &str| self.reader_wait_seconds.with_label_values(&[stream, what]);
        ReaderMetrics {
            server: on("server"),
            dispatcher: on("dispatcher"),
            split: self.oversized_events.with_label_values(&[stream, "split"]),
        }
    }

    /// The dispatcher's pause counters of `stream`.
    pub fn dispatch_pauses(&self, stream: &str) -> DispatchPauses {
        let on = |what: &str| {
            self.dispatch_paused_seconds
                .with_label_values(&[stream, what])
        };
        DispatchPauses {
            handlers: on("handlers"),
            checkpoint: on("checkpoint"),
        }
    }

    /// Changes read so far per kind label (`payment_confirmed`, `invalid`...), over all
    /// streams.
    pub fn received_by_kind(&self) -> std::collections::BTreeMap<String, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for family in self.events_received.collect() {
            for metric in family.get_metric() {
                let kind = metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "kind")
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default();
                *counts.entry(kind).or_insert(0) += metric.get_counter().get_value() as u64;
            }
        }
        counts
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        for (stream, at) in lock(&self.checkpoint_saved).iter() {
            self.checkpoint_age
                .with_label_values(&[stream])
                .set(at.elapsed().as_secs_f64());
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding metrics failed: {e}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Where one stream's reader records its waits (see [`Metrics::reader_wait_seconds`]) and
/// the events it reassembled.
#[derive(Clone)]
pub struct ReaderMetrics {
    /// Waiting for the server to answer a fetch.
    pub server: Counter,
    /// Waiting for the dispatcher to take a chunk.
    pub dispatcher: Counter,
    /// Events over 16 MB read in fragments and reassembled.
    pub split: IntCounter,
}

/// How long one stream held reading back, by what it waited for.
pub struct DispatchPauses {
    /// Unfinished events: handlers or the broker are the limit.
    pub handlers: Counter,
    /// A checkpoint write: the checkpoint store is the limit.
    pub checkpoint: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_counters_and_checkpoint_age() {
        let m = Metrics::new();
        m.events_received
            .with_label_values(&["shop", "payment_requested"])
            .inc();
        m.checkpoint_saved("shop");
        assert_eq!(
            m.received_by_kind().get("payment_requested"),
            Some(&1),
            "counted per kind"
        );
        m.reader_metrics("shop").server.inc_by(0.25);
        let text = m.render();
        assert!(
            text.contains(
                "changeflow_events_received_total{kind=\"payment_requested\",stream=\"shop\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("changeflow_checkpoint_age_seconds{stream=\"shop\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "changeflow_reader_wait_seconds_total{on=\"server\",stream=\"shop\"} 0.25"
            ),
            "{text}"
        );
    }
}
