//! A small pool for requests that may take long (the first `stat` of a big text view builds
//! its index): they are answered from here so the FUSE request threads keep serving others.

use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// Worker threads fed by a queue.
pub struct SlowPool {
    tx: Mutex<Sender<Job>>,
}

impl SlowPool {
    /// Starts `n` workers.
    pub fn new(n: usize) -> Self {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("annfs-slow-{i}")).spawn(move || loop {
                let job = rx.lock().recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => break,
                }
            });
            if let Err(e) = spawned {
                log::warn!("cannot start a slow-request worker: {e}");
            }
        }
        SlowPool { tx: Mutex::new(tx) }
    }

    /// Runs `job` on a worker (or here, if the pool is gone).
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(e) = self.tx.lock().send(Box::new(job)) {
            (e.0)();
        }
    }
}
