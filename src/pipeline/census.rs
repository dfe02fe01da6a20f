//! The shell around [`crate::pipeline::spread`]: every `lease.renew_ms` this instance
//! stamps its entry in `changeflow_runs` (with why a stream it reads is stuck), counts
//! the live readers and the streams each holds, and hands over what the rules say it
//! gives up. Its entry goes when the engine stops, after the final checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::observe::error_text::Tidy;
use crate::pipeline::Shared;
use crate::pipeline::spread::Census;
use crate::state::presence::Presence;

/// Stamps the entry and counts once; keeps the previous census when the server cannot
/// be read.
pub(super) async fn take(shared: &Shared, presence: &Presence) {
    let ttl = Duration::from_millis(shared.config.lease.ttl_ms);
    let streams: Vec<String> = shared
        .config
        .watch
        .iter()
        .map(|w| w.database.clone())
        .collect();
    let stuck: BTreeMap<String, Vec<String>> = streams
        .iter()
        .map(|s| (s.clone(), shared.health.stuck_lines(s)))
        .collect();
    presence.beat_or_warn(ttl, &stuck).await;
    let counted = futures::try_join!(presence.live_readers(), shared.leases.live_counts(&streams));
    let (readers, held) = match counted {
        Ok(counted) => counted,
        Err(e) => {
            tracing::warn!(error = %Tidy(&e), "cannot count the instances; the streams stay as they are");
            return;
        }
    };
    let me = &shared.owner.run_id;
    let others = readers
        .into_iter()
        .filter(|id| id != me)
        .map(|id| {
            let n = held.get(&id).copied().unwrap_or(0);
            (id, n)
        })
        .collect();
    let census = Census {
        streams: streams.len(),
        others,
    };
    for stream in shared.spread.update(me, census.clone()) {
        tracing::info!(
            stream = %stream,
            readers = census.others.len() + 1,
            "handing the stream over: this instance holds more than its share"
        );
    }
}

/// Takes the census every `lease.renew_ms` until `stop`, then removes this instance's
/// entry.
pub(super) async fn keep(shared: Arc<Shared>, presence: Presence, stop: CancellationToken) {
    let every = Duration::from_millis(shared.config.lease.renew_ms);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        take(&shared, &presence).await;
    }
    presence.release_or_warn().await;
}
