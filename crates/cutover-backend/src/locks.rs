//! [`ReleaseLocks`]: how a backend keeps the contract's "operations on one release are
//! serialised" while different releases go on in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// One async lock per release, made on first use.
#[derive(Debug, Default)]
pub struct ReleaseLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ReleaseLocks {
    /// Waits for `release`'s lock. The guard is owned, so it can move into a task that
    /// must finish what it started even if its caller is cancelled.
    pub async fn lock(&self, release: &str) -> OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(release.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_release_waits_another_does_not() {
        let locks = Arc::new(ReleaseLocks::default());
        let held = locks.lock("shop").await;
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _guard = locks.lock("shop").await;
            })
        };
        // Another release is not held up.
        tokio::time::timeout(Duration::from_secs(1), locks.lock("cart"))
            .await
            .expect("another release's lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the lock is free again")
            .expect("the task");
    }
}
