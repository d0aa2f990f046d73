//! `--log-metrics SECS`: one log line of live counters every SECS seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::ChunkCache;

/// Starts the metrics logger thread.
pub(super) fn start(cache: Arc<ChunkCache>, every: Duration) {
    let spawned = std::thread::Builder::new().name("annfs-metrics".into()).spawn(move || {
        let (mut last_bytes, mut last_at) = (0u64, Instant::now());
        loop {
            std::thread::sleep(every);
            let s = cache.stats.snapshot();
            let num = |k: &str| s.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
            let bytes = num("bytes_served") as u64;
            let secs = last_at.elapsed().as_secs_f64().max(1e-9);
            log::info!(
                "metrics: cache_hit_rate={:.3} reads={} bytes_served={} ({:.1} MB/s) decode_seconds={:.3} open_files={} errors={} stale={}",
                num("cache_hit_rate"),
                num("reads") as u64,
                bytes,
                bytes.saturating_sub(last_bytes) as f64 / secs / 1e6,
                num("decode_seconds"),
                num("open_files") as u64,
                num("errors") as u64,
                !s["store_changed"].is_null(),
            );
            (last_bytes, last_at) = (bytes, Instant::now());
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the metrics logger: {e}");
    }
}
