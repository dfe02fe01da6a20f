//! Locks that survive a panic. Every lock here guards a map replaced entry by entry, which
//! a panic cannot leave half-written; a poisoned lock is taken over, not ignored, so one
//! panic anywhere does not turn health, metrics or the stuck alarm silent for good.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `lock` for reading, poisoned or not.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// `lock` for writing, poisoned or not.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_over() {
        let map = std::sync::Arc::new(RwLock::new(vec![1]));
        let held = map.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.write().expect("not poisoned yet");
            panic!("a panic while holding the lock");
        })
        .join();
        assert!(map.is_poisoned());
        write(&map).push(2);
        assert_eq!(*read(&map), vec![1, 2]);
        let mutex = std::sync::Arc::new(Mutex::new(0));
        let held = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().expect("not poisoned yet");
            panic!("again");
        })
        .join();
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 1);
    }
}
