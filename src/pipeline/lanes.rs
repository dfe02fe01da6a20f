//! Ordered lanes: jobs of one key (one document) run one at a time in arrival order;
//! jobs of different keys run concurrently.

use std::collections::{HashMap, VecDeque};

/// Lanes of waiting jobs, by key. A key is present while one of its jobs runs.
pub(crate) struct Lanes<J> {
    waiting: HashMap<String, VecDeque<J>>,
}

impl<J> Default for Lanes<J> {
    fn default() -> Self {
        Lanes {
            waiting: HashMap::new(),
        }
    }
}

impl<J> Lanes<J> {
    /// Empty lanes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers `job` for `key`: returned when it may start now (its lane was idle),
    /// queued behind the running job otherwise.
    pub fn submit(&mut self, key: &str, job: J) -> Option<J> {
        match self.waiting.get_mut(key) {
            Some(queue) => {
                queue.push_back(job);
                None
            }
            None => {
                self.waiting.insert(key.to_owned(), VecDeque::new());
                Some(job)
            }
        }
    }

    /// The running job of `key` finished: returns the next one to start, if any.
    pub fn finish(&mut self, key: &str) -> Option<J> {
        let queue = self.waiting.get_mut(key)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.waiting.remove(key);
        }
        next
    }

    /// Keys with a running job.
    #[cfg(test)]
    pub fn busy(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_per_key_runs_and_the_rest_wait_in_order() {
        let mut lanes = Lanes::new();
        assert_eq!(lanes.submit("a", 1), Some(1));
        assert_eq!(lanes.submit("a", 2), None);
        assert_eq!(
            lanes.submit("b", 10),
            Some(10),
            "other keys are not blocked"
        );
        assert_eq!(lanes.submit("a", 3), None);
        assert_eq!(lanes.busy(), 2);
        assert_eq!(lanes.finish("a"), Some(2));
        assert_eq!(lanes.finish("a"), Some(3));
        assert_eq!(lanes.finish("a"), None);
        assert_eq!(lanes.finish("b"), None);
        assert_eq!(lanes.busy(), 0);
        assert_eq!(lanes.submit("a", 4), Some(4), "an idle lane starts at once");
    }
}
