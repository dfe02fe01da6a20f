//! The `[lease]` section: one reader per stream across instances.

use serde::{Deserialize, Serialize};

/// Leases on streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// A lease not renewed for this long (by the server's clock) may be taken over by
    /// another instance, in milliseconds. A crashed instance's streams move after at most
    /// this plus one renew interval; a restart of the same host waits for it too.
    pub ttl_ms: u64,
    /// How often the holder renews its leases, in milliseconds.
    pub renew_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl_ms: 10_000,
            renew_ms: 2_000,
        }
    }
}

impl LeaseConfig {
    /// Renewing must fit well inside the lease.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.renew_ms < 50 {
            return Err((
                "lease.renew_ms".into(),
                format!("{} is below 50", self.renew_ms),
            ));
        }
        if self.ttl_ms < 2 * self.renew_ms {
            return Err((
                "lease.ttl_ms".into(),
                format!(
                    "{} must be at least twice lease.renew_ms ({}): one missed renewal must not lose the lease",
                    self.ttl_ms, self.renew_ms
                ),
            ));
        }
        Ok(())
    }
}
