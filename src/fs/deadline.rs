//! Request deadlines: no reader waits forever.
//!
//! Every request that may block (reads, `stat`s that build a text index) registers its reply in
//! a [`Deadlines`] table before doing any work. Whoever comes first answers: the handler with its
//! result, or the watchdog thread with `EIO` (and a log line) once the deadline has passed —
//! whatever the handler is stuck on (a damaged file sending a library into a loop, a lock, a
//! network stall). A handler that finishes late finds its reply gone and only logs.
//!
//! Cost per request: one small allocation and a map insert/remove; the watchdog scans only the
//! requests in flight, a few times per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use fuser::{Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite};
use parking_lot::Mutex;

/// Default time a request may take before it is answered with `EIO`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// A FUSE reply that can be answered with an error.
pub trait ErrorReply: Send + 'static {
    /// Answers with `e`.
    fn fail(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn fail(self, e: Errno) {
                self.error(e);
            }
        }
    )*};
}
error_reply!(ReplyData, ReplyAttr, ReplyEntry, ReplyEmpty, ReplyOpen, ReplyWrite, ReplyCreate);

/// Something in flight the watchdog can expire.
trait Pending: Send + Sync {
    /// Answers `EIO` if nobody answered yet; true if this call answered.
    fn expire(&self) -> bool;
    fn started(&self) -> Instant;
    fn what(&self) -> &str;
}

/// A registered reply: taken by exactly one of the handler and the watchdog.
pub struct Slot<R: ErrorReply> {
    reply: Mutex<Option<R>>,
    start: Instant,
    what: String,
    key: u64,
    table: Weak<Table>,
}

impl<R: ErrorReply> Slot<R> {
    /// The reply, unless the watchdog already answered (then the late result is dropped).
    pub fn take(&self) -> Option<R> {
        if let Some(t) = self.table.upgrade() {
            t.live.remove(&self.key);
        }
        let r = self.reply.lock().take();
        if r.is_none() {
            log::warn!("{}: finished after {:.1} s, already answered EIO", self.what, self.start.elapsed().as_secs_f64());
        }
        r
    }
}

impl<R: ErrorReply> Pending for Slot<R> {
    fn expire(&self) -> bool {
        match self.reply.lock().take() {
            Some(r) => {
                r.fail(Errno::EIO);
                true
            }
            None => false,
        }
    }

    fn started(&self) -> Instant {
        self.start
    }

    fn what(&self) -> &str {
        &self.what
    }
}

/// Called once per request the watchdog answered (e.g. to replace the stuck worker).
pub type OnExpire = Box<dyn Fn() + Send + Sync>;

struct Table {
    live: DashMap<u64, Arc<dyn Pending>>,
    next: AtomicU64,
    limit: Duration,
    expired: AtomicU64,
    on_expire: OnExpire,
}

/// The table of requests in flight and its watchdog thread.
pub struct Deadlines {
    table: Arc<Table>,
}

impl Deadlines {
    /// Requests older than `limit` are answered `EIO`, then `on_expire` runs. Starts the
    /// watchdog thread (which ends when this table is dropped).
    pub fn new(limit: Duration, on_expire: OnExpire) -> Self {
        let table =
            Arc::new(Table { live: DashMap::new(), next: AtomicU64::new(0), limit, expired: AtomicU64::new(0), on_expire });
        let weak = Arc::downgrade(&table);
        let tick = (limit / 8).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let spawned = std::thread::Builder::new().name("annfs-deadline".into()).spawn(move || loop {
            std::thread::sleep(tick);
            let Some(t) = weak.upgrade() else { break };
            t.sweep();
        });
        if let Err(e) = spawned {
            log::warn!("cannot start the request watchdog: {e}; requests have no deadline");
        }
        Deadlines { table }
    }

    /// The configured deadline.
    pub fn limit(&self) -> Duration {
        self.table.limit
    }

    /// Requests answered `EIO` by the watchdog so far.
    pub fn expired(&self) -> u64 {
        self.table.expired.load(Ordering::Relaxed)
    }

    /// Registers `reply` for the request described by `what` (used in the log line).
    pub fn track<R: ErrorReply>(&self, reply: R, what: impl FnOnce() -> String) -> Arc<Slot<R>> {
        let key = self.table.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            reply: Mutex::new(Some(reply)),
            start: Instant::now(),
            what: what(),
            key,
            table: Arc::downgrade(&self.table),
        });
        self.table.live.insert(key, slot.clone() as Arc<dyn Pending>);
        slot
    }
}

impl Table {
    fn sweep(&self) {
        let now = Instant::now();
        let late: Vec<(u64, Arc<dyn Pending>)> = self
            .live
            .iter()
            .filter(|e| now.duration_since(e.value().started()) >= self.limit)
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        for (key, p) in late {
            self.live.remove(&key);
            if p.expire() {
                self.expired.fetch_add(1, Ordering::Relaxed);
                (self.on_expire)();
                log::error!("{}: no answer within {:.0} s; answered EIO (the work goes on in the background)", p.what(), self.limit.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct TestReply(mpsc::Sender<Errno>);
    impl ErrorReply for TestReply {
        fn fail(self, e: Errno) {
            let _ = self.0.send(e);
        }
    }

    #[test]
    fn a_stuck_request_is_answered_eio_and_a_fast_one_is_not() {
        let hook = Arc::new(AtomicU64::new(0));
        let h = hook.clone();
        let d = Deadlines::new(Duration::from_millis(80), Box::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        let (tx, rx) = mpsc::channel();
        let stuck = d.track(TestReply(tx.clone()), || "read stuck".into());
        let fast = d.track(TestReply(tx), || "read fast".into());
        assert!(fast.take().is_some(), "the handler answers a fast request itself");
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("watchdog answered");
        assert_eq!(got, Errno::EIO);
        assert!(stuck.take().is_none(), "a late handler finds the reply gone");
        assert_eq!(d.expired(), 1);
        assert_eq!(hook.load(Ordering::SeqCst), 1);
        assert!(d.table.live.is_empty());
    }
}
