//! The agent-memory workload of `changeflow demo`: users follow the design's lifecycle —
//! a thread starts, turns are `$push`ed, old turns are folded into the summary when the
//! token budget is hit, the thread ends and an episode is written, facts are extracted into
//! semantic memory, memories are recalled (strength += 0.3 × (1 − strength)) and decayed by
//! a sweep, and some threads expire by TTL. It is deterministic for a seed, and returns what
//! `memory_stats` must count once changeflow has seen every change.

use std::collections::BTreeMap;

use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Collection, Database};

use crate::config::MemoryConfig;

/// Shape of the workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Users, each with their own threads and memories.
    pub users: u32,
    /// Threads per user.
    pub threads_per_user: u32,
    /// `$push`es of a user and an assistant turn per thread.
    pub turns_per_thread: u32,
    /// Token budget of a thread: past it, all but the last two turns are folded away.
    pub token_budget: i64,
    /// Seed of the per-turn sizes and outcomes.
    pub seed: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            users: 5,
            threads_per_user: 3,
            turns_per_thread: 6,
            token_budget: 120,
            seed: 7,
        }
    }
}

/// The count the TTL monitor's deletions add to.
pub const THREADS_EXPIRED: &str = "threads_expired";

/// What `memory_stats` holds for one user after the workload, field by field (the
/// handler's field names, dotted for nested ones).
pub type Expected = BTreeMap<String, BTreeMap<String, i64>>;

/// A tiny deterministic generator (SplitMix64): the workload needs no statistical quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn message(role: &str, content: String, tokens: i64) -> Document {
    doc! {"role": role, "content": content, "timestamp": DateTime::now(), "token_count": tokens}
}

fn at_offset(seconds: i64) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() + seconds * 1000)
}

/// Runs `workload` against the memory collections of `config` in `db`; `run_id` keeps the
/// ids of repeated runs apart. Calls `progress` after each user with the users done.
pub async fn run(
    db: &Database,
    config: &MemoryConfig,
    workload: Workload,
    run_id: &str,
    mut progress: impl FnMut(u32),
) -> mongodb::error::Result<Expected> {
    let threads: Collection<Document> = db.collection(&config.short_term);
    let episodes: Collection<Document> = db.collection(&config.episodic);
    let memories: Collection<Document> = db.collection(&config.semantic);
    let mut rng = Rng(workload.seed);
    let mut expected = Expected::new();
    for u in 0..workload.users {
        let user = format!("{run_id}-user-{u}");
        let mut add = |field: &str, n: i64| {
            *expected
                .entry(user.clone())
                .or_default()
                .entry(field.to_owned())
                .or_default() += n;
        };
        let mut memory_ids = Vec::new();
        for t in 0..workload.threads_per_user {
            let thread_id = format!("{user}-thread-{t}");
            // Every third thread is short-lived: the TTL monitor removes it.
            let short_lived = t % 3 == 2;
            threads
                .insert_one(doc! {
                    "thread_id": &thread_id, "user_id": &user,
                    "messages": [message("user", format!("Task {t} of {user}"), 8)],
                    "summary": null, "summary_updated_at": null,
                    "created_at": DateTime::now(),
                    "expires_at": at_offset(if short_lived { 2 } else { 3600 }),
                })
                .await?;
            add("threads_started", 1);
            let filter = doc! {"thread_id": &thread_id};
            let mut tokens = 8;
            for turn in 0..workload.turns_per_thread {
                let asked = 5 + i64::try_from(rng.below(20)).unwrap_or(0);
                let answered = 10 + i64::try_from(rng.below(40)).unwrap_or(0);
                threads
                    .update_one(
                        filter.clone(),
                        doc! {"$push": {"messages": {"$each": [
                            message("user", format!("Question {turn}"), asked),
                            message("assistant", format!("Answer {turn}"), answered),
                        ]}}},
                    )
                    .await?;
                add("messages_appended", 2);
                tokens += asked + answered;
                if tokens > workload.token_budget {
                    threads
                        .update_one(
                            filter.clone(),
                            vec![doc! {"$set": {
                                "messages": {"$slice": ["$messages", -2]},
                                "summary": format!("{thread_id} up to turn {turn}"),
                                "summary_updated_at": "$$NOW",
                            }}],
                        )
                        .await?;
                    add("threads_summarized", 1);
                    tokens = asked + answered;
                }
            }
            if short_lived {
                add(THREADS_EXPIRED, 1);
            }
            let outcome = ["succeeded", "failed", "abandoned"][rng.below(3) as usize];
            let calls = rng.below(4);
            let tool_calls: Vec<Document> = (0..calls)
                .map(|c| {
                    doc! {"tool": format!("tool-{c}"), "inputs": {}, "output": null,
                    "success": c % 2 == 0, "called_at": DateTime::now()}
                })
                .collect();
            let episode_id = format!("{thread_id}-episode");
            episodes
                .insert_one(doc! {
                    "episode_id": &episode_id, "thread_id": &thread_id, "user_id": &user,
                    "summary": format!("What happened in {thread_id}"),
                    "tool_calls": tool_calls, "outcome": outcome, "tags": ["demo"],
                    "started_at": at_offset(-60), "ended_at": DateTime::now(),
                })
                .await?;
            add(&format!("episodes.{outcome}"), 1);
            let kind = ["preference", "fact", "instruction"][(t % 3) as usize];
            let memory_id = format!("{thread_id}-memory");
            let embedding: Vec<f64> = (0..1024).map(|i| f64::from(i % 7) / 7.0).collect();
            memories
                .insert_one(doc! {
                    "memory_id": &memory_id, "user_id": &user, "type": kind,
                    "content": format!("Learned in {thread_id}"), "embedding": embedding,
                    "source_episode_id": &episode_id, "strength": 0.5,
                    "last_accessed_at": null, "created_at": DateTime::now(),
                })
                .await?;
            add(&format!("memories.{kind}"), 1);
            memory_ids.push((memory_id, 0.5_f64));
        }
        // Recall every other memory: strength closes 30 % of its gap to 1.0.
        for (memory_id, strength) in memory_ids.iter_mut().step_by(2) {
            *strength += 0.3 * (1.0 - *strength);
            memories
                .update_one(
                    doc! {"memory_id": &*memory_id},
                    doc! {"$set": {"strength": *strength, "last_accessed_at": DateTime::now()}},
                )
                .await?;
            add("recalls", 1);
        }
        // The decay sweep (a half-life of ~30 days, compressed: one sweep = 0.9).
        for (memory_id, strength) in &mut memory_ids {
            *strength *= 0.9;
            memories
                .update_one(
                    doc! {"memory_id": &*memory_id},
                    doc! {"$set": {"strength": *strength}},
                )
                .await?;
            add("decays", 1);
        }
        progress(u + 1);
    }
    Ok(expected)
}

/// Each user's `memory_stats` document as the field → count map [`run`] predicts.
pub fn counts_of(stats: &Document) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for (field, value) in stats {
        match value {
            mongodb::bson::Bson::Int64(n) => {
                counts.insert(field.clone(), *n);
            }
            mongodb::bson::Bson::Document(nested) => {
                for (key, value) in nested {
                    if let mongodb::bson::Bson::Int64(n) = value {
                        counts.insert(format!("{field}.{key}"), *n);
                    }
                }
            }
            _ => {}
        }
    }
    counts
}
