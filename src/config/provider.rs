//! The `[provider]` section: the simulated payment provider and how it decides.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The simulated payment provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// How long the provider takes to answer, in milliseconds (0 allowed).
    pub latency_ms: u64,
    /// `alternate`, `ratio:P`, `always-confirm` or `always-fail`.
    pub policy: OutcomePolicy,
    /// Seed of `ratio:P` (the same seed decides a replay the same way).
    pub seed: u64,
    /// Payments waiting on the provider at once.
    pub max_in_flight: usize,
}

/// How the simulated provider decides. Written as text in configuration: see
/// [`OutcomePolicy::from_str`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OutcomePolicy {
    /// The reference sample's: the first call fails, then success, then failure…
    Alternate,
    /// Confirms with probability `confirm`, decided by a hash of the seed and the payment
    /// id, so a replay decides the same.
    Ratio {
        /// Probability of CONFIRMED, 0.0 to 1.0.
        confirm: f64,
        /// Seed mixed into the hash.
        seed: u64,
    },
    /// Every payment is confirmed.
    AlwaysConfirm,
    /// Every payment fails.
    AlwaysFail,
}

impl FromStr for OutcomePolicy {
    type Err = String;

    /// `alternate`, `ratio:P` (P in 0..=1, seed 0; see [`OutcomePolicy::with_seed`]),
    /// `always-confirm`, `always-fail`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alternate" => Ok(OutcomePolicy::Alternate),
            "always-confirm" => Ok(OutcomePolicy::AlwaysConfirm),
            "always-fail" => Ok(OutcomePolicy::AlwaysFail),
            other => {
                let Some(p) = other.strip_prefix("ratio:") else {
                    return Err(format!(
                        "unknown outcome policy `{other}` (expected alternate, ratio:P, \
                         always-confirm or always-fail)"
                    ));
                };
                match p.parse::<f64>() {
                    Ok(confirm) if (0.0..=1.0).contains(&confirm) => {
                        Ok(OutcomePolicy::Ratio { confirm, seed: 0 })
                    }
                    _ => Err(format!(
                        "`{other}`: P must be a number from 0 to 1 (the share confirmed)"
                    )),
                }
            }
        }
    }
}

impl TryFrom<String> for OutcomePolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<OutcomePolicy> for String {
    fn from(policy: OutcomePolicy) -> String {
        match policy {
            OutcomePolicy::Alternate => "alternate".into(),
            OutcomePolicy::Ratio { confirm, .. } => format!("ratio:{confirm}"),
            OutcomePolicy::AlwaysConfirm => "always-confirm".into(),
            OutcomePolicy::AlwaysFail => "always-fail".into(),
        }
    }
}

impl OutcomePolicy {
    /// The same policy with `seed` for `ratio`; other policies are unchanged.
    pub fn with_seed(self, seed: u64) -> OutcomePolicy {
        match self {
            OutcomePolicy::Ratio { confirm, .. } => OutcomePolicy::Ratio { confirm, seed },
            other => other,
        }
    }
}
