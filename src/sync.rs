//! Locks that outlive a panic: every critical section in ringcast leaves
//! its state consistent, so a panic in one task must not wedge a topic or
//! a connection's queue for every other task.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking over the state a panicking holder left behind.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
