//! The external payment provider, simulated: it answers a PENDING payment after a latency
//! with an outcome chosen by a policy, and hands the outcome to the status updater.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::status_updater::StatusUpdater;
use crate::config::{OutcomePolicy, ProviderConfig};
use crate::domain::payments::{PaymentEvent, PaymentStatus};
use crate::domain::{DomainEvent, EventKind};
use crate::pipeline::target::{Input, Routed, Target, TargetError};

/// The handler's name in `[routes]`, logs and metrics.
pub(crate) const NAME: &str = "provider_simulator";
/// The event kinds it can take.
pub const KINDS: &[EventKind] = &[EventKind::PaymentRequested, EventKind::PaymentObserved];

/// Applies an [`OutcomePolicy`]; holds the call count `alternate` needs.
#[derive(Debug)]
pub(crate) struct OutcomeDecider {
    policy: OutcomePolicy,
    calls: AtomicU64,
}

/// The simulated provider.
pub struct ProviderSimulator {
    latency: Duration,
    decider: OutcomeDecider,
    updater: StatusUpdater,
    in_flight: Semaphore,
}

impl ProviderSimulator {
    /// A provider answering after `latency`, deciding by `policy`, with at most
    /// `max_in_flight` payments waiting on it at once.
    pub fn new(
        latency: Duration,
        policy: OutcomePolicy,
        max_in_flight: usize,
        updater: StatusUpdater,
    ) -> ProviderSimulator {
        ProviderSimulator {
            latency,
            decider: OutcomeDecider::new(policy),
            updater,
            in_flight: Semaphore::new(max_in_flight.max(1)),
        }
    }

    /// The provider of the `[provider]` section, settling through `updater`.
    pub fn from_config(config: &ProviderConfig, updater: StatusUpdater) -> ProviderSimulator {
        ProviderSimulator::new(
            Duration::from_millis(config.latency_ms),
            config.policy.with_seed(config.seed),
            config.max_in_flight,
            updater,
        )
    }
}

impl OutcomeDecider {
    /// A decider that has answered no call yet.
    pub fn new(policy: OutcomePolicy) -> OutcomeDecider {
        OutcomeDecider {
            policy,
            calls: AtomicU64::new(0),
        }
    }

    /// The outcome for `payment_id` (the call counter moves for `alternate`).
    pub fn decide(&self, payment_id: &str) -> PaymentStatus {
        let confirmed = match self.policy {
            OutcomePolicy::Alternate => self.calls.fetch_add(1, Ordering::Relaxed) % 2 == 1,
            OutcomePolicy::Ratio { confirm, seed } => {
                let mut hasher = Sha256::new();
                hasher.update(seed.to_le_bytes());
                hasher.update(payment_id.as_bytes());
                let digest = hasher.finalize();
                let mut head = [0u8; 8];
                head.copy_from_slice(&digest[..8]);
                // 53 bits give a uniform f64 in [0, 1).
                let draw = (u64::from_le_bytes(head) >> 11) as f64 / (1u64 << 53) as f64;
                draw < confirm
            }
            OutcomePolicy::AlwaysConfirm => true,
            OutcomePolicy::AlwaysFail => false,
        };
        if confirmed {
            PaymentStatus::Confirmed
        } else {
            PaymentStatus::Failed
        }
    }
}

impl Target for ProviderSimulator {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self, input: Input) -> bool {
        matches!(input, Input::Typed(kind) if KINDS.contains(&kind))
    }

    fn routed_by_config(&self) -> bool {
        true
    }

    fn handle<'a>(&'a self, event: Routed<'a>) -> BoxFuture<'a, Result<(), TargetError>> {
        async move {
            // A snapshot's PENDING payment is asked for too: nothing stays PENDING after
            // a gap. Settling moves only PENDING payments, so a repeat changes nothing.
            let snapshot = match event {
                Routed::Typed(DomainEvent::Payment(PaymentEvent::Requested(s))) => s,
                Routed::Typed(DomainEvent::Payment(PaymentEvent::Observed(s)))
                    if s.payment.status == PaymentStatus::Pending =>
                {
                    s
                }
                _ => return Ok(()),
            };
            let key = snapshot
                .meta
                .document_key
                .as_ref()
                .and_then(|k| mongodb::bson::Document::try_from(k.as_ref()).ok())
                .ok_or_else(|| TargetError::Permanent {
                    handler: NAME,
                    reason: "change event has no usable documentKey".into(),
                })?;
            let _permit = self
                .in_flight
                .acquire()
                .await
                .map_err(|_| TargetError::Permanent {
                    handler: NAME,
                    reason: "provider shut down".into(),
                })?;
            tokio::time::sleep(self.latency).await;
            let outcome = self.decider.decide(&snapshot.payment.id);
            self.updater.settle(&key, outcome).await.map(drop)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulator(policy: OutcomePolicy) -> OutcomeDecider {
        OutcomeDecider::new(policy)
    }

    #[test]
    fn policies_parse_and_bad_ones_say_why() {
        assert_eq!("alternate".parse(), Ok(OutcomePolicy::Alternate));
        assert_eq!(
            "ratio:0.25".parse(),
            Ok(OutcomePolicy::Ratio {
                confirm: 0.25,
                seed: 0
            })
        );
        assert_eq!("always-fail".parse(), Ok(OutcomePolicy::AlwaysFail));
        assert!(
            "ratio:1.5"
                .parse::<OutcomePolicy>()
                .unwrap_err()
                .contains("from 0 to 1")
        );
        assert!(
            "sometimes"
                .parse::<OutcomePolicy>()
                .unwrap_err()
                .contains("unknown outcome policy")
        );
    }

    #[test]
    fn alternate_fails_first_then_alternates() {
        let sim = simulator(OutcomePolicy::Alternate);
        let outcomes: Vec<_> = (0..4).map(|i| sim.decide(&i.to_string())).collect();
        use PaymentStatus::{Confirmed, Failed};
        assert_eq!(outcomes, vec![Failed, Confirmed, Failed, Confirmed]);
    }

    #[test]
    fn ratio_is_deterministic_per_payment_and_close_to_p() {
        let policy = OutcomePolicy::Ratio {
            confirm: 0.7,
            seed: 42,
        };
        let a = simulator(policy);
        let b = simulator(policy);
        let ids: Vec<String> = (0..10_000).map(|i| format!("payment-{i}")).collect();
        let first: Vec<_> = ids.iter().map(|id| a.decide(id)).collect();
        let replay: Vec<_> = ids.iter().rev().map(|id| b.decide(id)).collect();
        assert!(
            first.iter().eq(replay.iter().rev()),
            "same id, same outcome"
        );
        let confirmed = first
            .iter()
            .filter(|s| **s == PaymentStatus::Confirmed)
            .count();
        assert!((6_700..=7_300).contains(&confirmed), "{confirmed} of 10000");
        let other_seed = simulator(policy.with_seed(7));
        let differ = ids
            .iter()
            .zip(&first)
            .filter(|(id, s)| other_seed.decide(id) != **s)
            .count();
        assert!(
            differ > 1_000,
            "the seed changes the draw ({differ} differ)"
        );
    }
}
