//! Worker pools that answer requests off the FUSE threads.
//!
//! The FUSE threads only parse requests and hand them over, so a request that blocks (a damaged
//! file, a slow disk or network, a text index being built) never stops the mount from reading
//! the next one; [`super::deadline`] answers it with `EIO` when it takes too long. A worker that
//! is stuck for good is replaced ([`Workers::replace_stuck`]), up to a limit, so a handful of
//! hung requests cannot starve the pool.

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{unbounded, Receiver, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// Worker threads fed by one multi-consumer queue (idle workers wait on it without a lock
/// around `recv`: a mutex-guarded receiver made every hand-off spin and yield on the lock).
pub(super) struct Workers {
    name: &'static str,
    tx: Sender<Job>,
    rx: Receiver<Job>,
    spawned: AtomicUsize,
    max: usize,
}

impl Workers {
    /// Starts `n` workers named `name-<i>`; [`Workers::replace_stuck`] may add up to `n` more.
    pub(super) fn new(name: &'static str, n: usize) -> Self {
        let (tx, rx) = unbounded::<Job>();
        let n = n.max(1);
        let pool = Workers { name, tx, rx, spawned: AtomicUsize::new(0), max: 2 * n };
        for _ in 0..n {
            pool.spawn_one();
        }
        pool
    }

    fn spawn_one(&self) -> bool {
        let i = self.spawned.fetch_add(1, Ordering::Relaxed);
        if i >= self.max {
            self.spawned.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let rx = self.rx.clone();
        let spawned = std::thread::Builder::new().name(format!("{}-{i}", self.name)).spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        });
        if let Err(e) = spawned {
            log::warn!("cannot start a {} worker: {e}", self.name);
            self.spawned.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Adds a worker in place of one that is stuck on an expired request (bounded).
    pub(super) fn replace_stuck(&self) {
        if self.spawn_one() {
            log::warn!("{}: started a replacement worker for a stuck request", self.name);
        }
    }

    /// Runs `job` on a worker (or here, if the pool is gone).
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(e) = self.tx.send(Box::new(job)) {
            (e.0)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_and_a_stuck_worker_can_be_replaced() {
        let pool = Workers::new("test", 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        pool.run(move || {
            let _ = release_rx.recv();
        });
        let t = tx.clone();
        pool.run(move || t.send(1).unwrap_or(()));
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "the only worker is busy");
        pool.replace_stuck();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        // Bounded: at most 2n workers.
        pool.replace_stuck();
        pool.replace_stuck();
        assert_eq!(pool.spawned.load(Ordering::Relaxed), 2);
        drop(release_tx);
    }
}
