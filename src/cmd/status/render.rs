//! `status` as text for people and as JSON for scripts.

use std::fmt::Write as _;

use mongodb::bson::Timestamp;
use serde_json::{Value, json};

use super::*;

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.streams {
            let _ = writeln!(out, "stream {} ({})", s.stream, s.collections.join(", "));
            match &s.checkpoint {
                Err(e) => {
                    let _ = writeln!(out, "  checkpoint  unreadable: {e}");
                }
                Ok(None) => {
                    let _ = writeln!(
                        out,
                        "  checkpoint  none (the stream starts at `run --start-at`, default now)"
                    );
                }
                Ok(Some(c)) => {
                    let (what, value) = match &c.resume {
                        Resume::After(t) => ("token", token_data(t).unwrap_or_default()),
                        Resume::AtTime(t) => ("start at", describe(*t)),
                    };
                    let _ = writeln!(out, "  checkpoint  {what} {value}");
                    if let Some(t) = c.cluster_time() {
                        let age = age_seconds(t);
                        let _ = writeln!(
                            out,
                            "  position    {}, {} ago",
                            describe(t),
                            human_seconds(age)
                        );
                    }
                }
            }
            let _ = match &s.run {
                Ok(Some(holder)) => writeln!(out, "  run         {holder}"),
                Ok(None) => writeln!(out, "  run         none"),
                Err(e) => writeln!(out, "  run         unknown: {e}"),
            };
            if let Ok(Some(holder)) = &s.run {
                for line in &holder.stuck {
                    let _ = writeln!(out, "  STUCK       {line}");
                }
            }
            match self.headroom(s) {
                Some(h) => {
                    let _ = writeln!(out, "  headroom    {}", describe_headroom(&h));
                }
                None => {
                    let _ = writeln!(out, "  headroom    unknown");
                }
            }
            if let Ok(n) = s.gaps
                && n > 0
            {
                let _ = writeln!(out, "  gaps        {n} recorded in changeflow_gaps");
                let _ = match s.repair {
                    Some((began, Some(ended))) => writeln!(
                        out,
                        "  repair      snapshot {} .. {}",
                        datetime_rfc3339(began),
                        datetime_rfc3339(ended)
                    ),
                    Some((began, None)) => writeln!(
                        out,
                        "  repair      snapshot running since {}",
                        datetime_rfc3339(began)
                    ),
                    None => Ok(()),
                };
            }
            if let Some(l) = &s.lease {
                let now = mongodb::bson::DateTime::now().timestamp_millis();
                let left = (l.expires_at.timestamp_millis() - now) / 1000;
                let age = (now - l.acquired_at.timestamp_millis()) / 1000;
                let _ = if left > 0 {
                    writeln!(
                        out,
                        "  lease       term {}, held by pid {} on {} for {}, expires in {} s unless renewed",
                        l.term,
                        l.owner.pid,
                        l.owner.host,
                        human_seconds(age),
                        left
                    )
                } else {
                    writeln!(
                        out,
                        "  lease       free (term {} expired or released)",
                        l.term
                    )
                };
            }
            let _ = match &s.images {
                Ok(Images::PostImages) => writeln!(
                    out,
                    "  documents   post-images: each update carries the state it left"
                ),
                Ok(Images::Lookup { without }) => writeln!(
                    out,
                    "  documents   lookup (marked fulldocument=lookup; without post-images: {}; `changeflow setup` turns them on)",
                    without.join(", ")
                ),
                Err(e) => writeln!(out, "  documents   unknown: {e}"),
            };
            for p in s.snapshots.iter().flatten() {
                let state = match p.finished_at {
                    Some(at) if p.done => format!("done {}", datetime_rfc3339(at)),
                    _ => "running".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "  snapshot    {}: {state}, {} documents ({}, started {})",
                    p.collection,
                    p.documents,
                    p.reason.as_str(),
                    datetime_rfc3339(p.started_at)
                );
            }
            if let Some(w) = self.warning(s) {
                let _ = writeln!(out, "  WARNING     {w}");
            }
        }
        let _ = writeln!(out, "oplog");
        match &self.oplog {
            Err(e) => {
                let _ = writeln!(out, "  unreadable: {e}");
            }
            Ok(windows) => {
                for m in &windows.members {
                    let _ = match &m.window {
                        Ok(w) => writeln!(
                            out,
                            "  {}  {} .. {}  ({})",
                            m.host,
                            rfc3339(w.oldest),
                            rfc3339(w.newest),
                            human_seconds(w.span_seconds())
                        ),
                        Err(e) => writeln!(out, "  {}  unreadable: {e}", m.host),
                    };
                }
            }
        }
        let _ = writeln!(out, "instances");
        match &self.instances {
            Err(e) => {
                let _ = writeln!(out, "  unreadable: {e}");
            }
            Ok(all) if all.is_empty() => {
                let _ = writeln!(out, "  none running");
            }
            Ok(all) => {
                for i in all {
                    let _ = writeln!(
                        out,
                        "  {:<9} pid {} on {} (seen {:.0} s ago)",
                        i.role, i.pid, i.host, i.seen_seconds_ago
                    );
                }
            }
        }
        out
    }

    /// The report for scripts.
    pub fn json(&self) -> Value {
        let time = |t: Option<Timestamp>| {
            t.map_or(
                Value::Null,
                |t| json!({"rfc3339": rfc3339(t), "cluster_time": cluster_time_text(t)}),
            )
        };
        let streams: Vec<Value> = self
            .streams
            .iter()
            .map(|s| {
                let token = match &s.checkpoint {
                    Ok(Some(Stored {
                        resume: Resume::After(t),
                        ..
                    })) => token_data(t).map_or(Value::Null, Value::from),
                    _ => Value::Null,
                };
                json!({
                    "stream": s.stream,
                    "collections": s.collections,
                    "checkpoint": {
                        "token": token,
                        "time": time(s.time()),
                        "error": s.checkpoint.as_ref().err(),
                    },
                    "headroom_seconds": self.headroom(s).map(|h| h.seconds),
                    "headroom": self.headroom(s).map(|h| headroom_json(&h)),
                    "lag_seconds": self.lag(s),
                    "gaps": s.gaps.as_ref().ok(),
                    "repair": s.repair.map(|(began, ended)| json!({
                        "started_at": datetime_rfc3339(began),
                        "finished_at": ended.map(datetime_rfc3339),
                    })),
                    "run": s.run.as_ref().ok(),
                    "lease": s.lease.as_ref().map(|l| json!({
                        "term": l.term,
                        "owner": {"host": l.owner.host, "pid": l.owner.pid, "run_id": l.owner.run_id},
                        "acquired_at": datetime_rfc3339(l.acquired_at),
                        "expires_at": datetime_rfc3339(l.expires_at),
                    })),
                    "documents": match &s.images {
                        Ok(Images::PostImages) => json!({"mode": "post-images"}),
                        Ok(Images::Lookup { without }) => json!({"mode": "lookup", "without_post_images": without}),
                        Err(e) => json!({"error": e}),
                    },
                    "snapshots": s.snapshots.as_ref().ok().map(|all| all.iter().map(|p| json!({
                        "collection": p.collection,
                        "reason": p.reason.as_str(),
                        "done": p.done,
                        "documents": p.documents,
                        "started_at": datetime_rfc3339(p.started_at),
                        "finished_at": p.finished_at.map(datetime_rfc3339),
                    })).collect::<Vec<_>>()),
                    "warning": self.warning(s),
                })
            })
            .collect();
        let oplog = match &self.oplog {
            Err(e) => json!({"error": e}),
            Ok(w) => Value::Array(
                w.members
                    .iter()
                    .map(|m| match &m.window {
                        Ok(w) => json!({
                            "host": m.host,
                            "oldest": time(Some(w.oldest)),
                            "newest": time(Some(w.newest)),
                            "size_bytes": w.fill.map(|f| f.size_bytes),
                            "max_bytes": w.fill.map(|f| f.max_bytes),
                        }),
                        Err(e) => json!({"host": m.host, "error": e}),
                    })
                    .collect(),
            ),
        };
        json!({"streams": streams, "oplog": oplog, "instances": match &self.instances {
            Ok(all) => json!(all),
            Err(e) => json!({"error": e}),
        }})
    }
}

/// "41d 3h (estimated: the oplog is at 0.2 % of its limit, written at 12.0 KB/s)".
fn describe_headroom(h: &Headroom) -> String {
    match h.basis {
        Basis::Measured => format!(
            "{} (measured to the oldest oplog entry)",
            human_seconds(h.seconds)
        ),
        Basis::Estimated {
            full,
            bytes_per_second,
        } => format!(
            "{} (estimated: the oplog is at {:.1} % of its size limit, written at {:.1} KB/s; \
             {} of history before the checkpoint so far)",
            human_seconds(h.seconds),
            full * 100.0,
            bytes_per_second / 1000.0,
            human_seconds(h.measured_seconds)
        ),
    }
}

fn headroom_json(h: &Headroom) -> Value {
    let mut v = json!({
        "seconds": h.seconds,
        "basis": h.basis.name(),
        "measured_seconds": h.measured_seconds,
    });
    if let Basis::Estimated {
        full,
        bytes_per_second,
    } = h.basis
    {
        v["oplog_full_ratio"] = json!(full);
        v["bytes_per_second"] = json!(bytes_per_second);
    }
    v
}
