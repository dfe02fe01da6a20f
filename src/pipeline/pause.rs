//! Times how long a stream holds reading back at its read-ahead bound, and why, for
//! `changeflow_dispatch_paused_seconds_total`: an operator sees whether handlers (or the
//! broker) or the checkpoint store limit throughput.

use tokio::time::Instant;

use crate::observe::metrics::DispatchPauses;

/// What reading waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Events still being handled or delivered.
    Handlers,
    /// A checkpoint write to finish.
    Checkpoint,
}

/// The current pause, if any, and the counters it adds to when it ends.
pub(crate) struct PauseClock {
    counters: DispatchPauses,
    current: Option<(Instant, Cause)>,
}

impl PauseClock {
    /// A clock adding to `counters`.
    pub fn new(counters: DispatchPauses) -> PauseClock {
        PauseClock {
            counters,
            current: None,
        }
    }

    /// Notes whether reading is held back now, and why; the time since the last call goes
    /// to the cause of the pause it belonged to, so a long pause shows while it lasts.
    pub fn observe(&mut self, cause: Option<Cause>) {
        if let Some((since, was)) = self.current.take() {
            let counter = match was {
                Cause::Handlers => &self.counters.handlers,
                Cause::Checkpoint => &self.counters.checkpoint,
            };
            counter.inc_by(since.elapsed().as_secs_f64());
        }
        self.current = cause.map(|c| (Instant::now(), c));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::observe::metrics::Metrics;

    #[test]
    fn pauses_are_added_to_their_cause_when_they_end() {
        let metrics = Metrics::new();
        let pauses = metrics.dispatch_pauses("shop");
        let mut clock = PauseClock::new(metrics.dispatch_pauses("shop"));
        clock.observe(Some(Cause::Checkpoint));
        std::thread::sleep(Duration::from_millis(20));
        clock.observe(Some(Cause::Checkpoint));
        let so_far = pauses.checkpoint.get();
        assert!(so_far >= 0.02, "a pause counts while it lasts: {so_far}");
        std::thread::sleep(Duration::from_millis(10));
        clock.observe(Some(Cause::Handlers));
        let checkpoint = pauses.checkpoint.get();
        assert!(checkpoint >= 0.03, "the checkpoint pause: {checkpoint}");
        assert_eq!(pauses.handlers.get(), 0.0);
        std::thread::sleep(Duration::from_millis(10));
        clock.observe(None);
        clock.observe(None);
        let handlers = pauses.handlers.get();
        assert!(handlers >= 0.01, "the handlers pause: {handlers}");
        assert_eq!(
            pauses.checkpoint.get(),
            checkpoint,
            "one pause, counted once"
        );
    }
}
