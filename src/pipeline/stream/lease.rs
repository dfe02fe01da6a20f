//! The stream's lease, in the shell: waiting for it (standing by while another instance
//! holds it), keeping it (a renewer task), and giving it back after the final checkpoint.
//! Losing it is an input of the core ([`crate::pipeline::core::Core::lease_lost`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::observe::error_text::Tidy;
use crate::pipeline::Shared;
use crate::pipeline::spread::Slot;
use crate::state::checkpoints::StoreError;
use crate::state::leases::Held;

/// A lease this instance holds on one stream.
pub(super) struct Lease {
    /// Its term (checkpoint writes are fenced by it).
    pub(super) held: Held,
    /// Cancelled when the lease is lost: not renewed in time, or taken over.
    pub(super) lost: CancellationToken,
    /// Cancelled to stop reading the stream gracefully: at shutdown (a child of its
    /// token), or to hand the stream over to another instance ([`crate::pipeline::spread`]).
    pub(super) hand_over: CancellationToken,
    renewer: JoinHandle<()>,
}

/// Waits until this instance holds `stream`'s lease (None: `shutdown` came first), and
/// stamps its term on the checkpoint, so an older holder's writes are refused from now.
pub(super) async fn take(
    shared: &Arc<Shared>,
    stream: &str,
    shutdown: &CancellationToken,
) -> Option<Lease> {
    let config = &shared.config.lease;
    let ttl = Duration::from_millis(config.ttl_ms);
    let mut standing_by = false;
    loop {
        // Within this instance's share only (a slot), so the streams spread out.
        let taken = match shared.spread.slot() {
            None => Ok(None),
            Some(slot) => acquire(shared, stream, ttl)
                .await
                .map(|held| held.map(|held| (slot, held))),
        };
        match taken {
            Ok(Some((slot, held))) => match shared.checkpoints.stamp(stream, held.term).await {
                Ok(()) => return Some(hold(shared, stream, held, slot, shutdown)),
                Err(e @ StoreError::Fenced { .. }) => {
                    tracing::warn!(stream = %stream, error = %e, "a newer term holds the checkpoint; standing by");
                }
                // The writes that follow carry the term and stamp it themselves.
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %Tidy(&e), "stamping the lease term on the checkpoint failed; reading on (every checkpoint write carries the term)");
                    return Some(hold(shared, stream, held, slot, shutdown));
                }
            },
            Ok(None) => {
                shared.health.set_standby(stream, true);
                if !standing_by {
                    standing_by = true;
                    tracing::info!(stream = %stream, "standing by: another instance holds the stream's lease, or this one holds its share of the streams");
                }
            }
            Err(e) => {
                tracing::warn!(stream = %stream, error = %Tidy(&e), "taking the lease failed; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(config.renew_ms)) => {}
        }
    }
}

/// Takes `stream`'s lease when it is free, or held by an instance that ran on this host
/// and has exited (a crash, then a restart: no need to wait for its expiry).
async fn acquire(
    shared: &Shared,
    stream: &str,
    ttl: Duration,
) -> Result<Option<Held>, mongodb::error::Error> {
    let leases = &shared.leases;
    if let Some(held) = leases.acquire(stream, &shared.owner, ttl).await? {
        return Ok(Some(held));
    }
    let renew = Duration::from_millis(shared.config.lease.renew_ms);
    match leases.live(stream).await? {
        Some((lease, age_ms))
            if quiet_long_enough(age_ms, renew) && lease.owner.exited_here(&shared.owner) =>
        {
            let held = leases
                .take_from_exited(stream, &lease.owner, &shared.owner, ttl)
                .await?;
            if held.is_some() {
                tracing::info!(stream = %stream, pid = lease.owner.pid, "the lease's holder ran on this host and has exited; taken over without waiting for its expiry");
            }
            Ok(held)
        }
        _ => Ok(None),
    }
}

/// Whether a live lease last renewed `age_ms` ago may be taken from a holder that has
/// exited: only after two renew intervals without a renewal, since a live holder renews
/// every interval, so one on another host that shares this one's name is never taken from.
fn quiet_long_enough(age_ms: i64, renew: Duration) -> bool {
    let quiet = i64::try_from(renew.as_millis().saturating_mul(2)).unwrap_or(i64::MAX);
    age_ms > quiet
}

/// Starts holding `held` (taken in `slot`): metrics, health, the spread, and its renewer.
fn hold(
    shared: &Arc<Shared>,
    stream: &str,
    held: Held,
    slot: Slot<'_>,
    shutdown: &CancellationToken,
) -> Lease {
    let hand_over = shutdown.child_token();
    shared.spread.held(slot, stream, hand_over.clone());
    shared.health.set_standby(stream, false);
    let metrics = &shared.metrics;
    metrics.lease_held.with_label_values(&[stream]).set(1);
    if held.taken_over {
        metrics.lease_takeovers.with_label_values(&[stream]).inc();
    }
    tracing::info!(stream = %stream, term = held.term, taken_over = held.taken_over, "lease held: this instance reads the stream");
    let lost = CancellationToken::new();
    let renewer = tokio::spawn(renew(shared.clone(), stream.to_owned(), held, lost.clone()));
    Lease {
        held,
        lost,
        hand_over,
        renewer,
    }
}

/// Renews `held` every `lease.renew_ms` until the server says another instance holds it
/// (a newer term). A process woken from a pause longer than the TTL asks at once, so it
/// stops within a round trip of waking; while the server cannot be written (no majority,
/// cut off) it keeps trying: nobody else can take the lease then, and its checkpoint
/// writes are fenced by the term whatever happens.
async fn renew(shared: Arc<Shared>, stream: String, held: Held, lost: CancellationToken) {
    let config = &shared.config.lease;
    let (ttl, every) = (
        Duration::from_millis(config.ttl_ms),
        Duration::from_millis(config.renew_ms),
    );
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if renewed.elapsed() >= ttl {
            tracing::warn!(stream = %stream, term = held.term, "lease not renewed for a whole TTL (paused, or the server unreachable); asking whether another instance took it");
        }
        match shared.leases.renew(&stream, &shared.owner, held, ttl).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(stream = %stream, term = held.term, "lease lost: another instance holds the stream now; stopping it here");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(stream = %stream, error = %Tidy(&e), "renewing the lease failed; retrying");
            }
        }
    }
}

impl Lease {
    /// Gives the lease back at once (after the final checkpoint), so a standby takes the
    /// stream without waiting for the expiry.
    pub(super) async fn release(self, shared: &Shared, stream: &str) {
        let held = self.held;
        self.forget(shared, stream);
        if let Err(e) = shared.leases.release(stream, &shared.owner, held).await {
            tracing::warn!(stream = %stream, error = %Tidy(&e), "releasing the lease failed; it expires by itself");
        }
    }

    /// Forgets a lost lease.
    pub(super) fn forget(self, shared: &Shared, stream: &str) {
        self.renewer.abort();
        shared.spread.let_go(stream);
        shared
            .metrics
            .lease_held
            .with_label_values(&[stream])
            .set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_holders_lease_is_taken_after_two_unrenewed_intervals_only() {
        let renew = Duration::from_millis(500);
        assert!(!quiet_long_enough(0, renew), "just renewed");
        assert!(
            !quiet_long_enough(999, renew),
            "a renewal may be on its way"
        );
        assert!(!quiet_long_enough(1_000, renew));
        assert!(quiet_long_enough(1_001, renew));
        assert!(!quiet_long_enough(i64::MAX, Duration::MAX), "no overflow");
    }
}
