//! Counters, gauges and histograms the engine keeps, for `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram of durations in seconds with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<HistogramData>,
}

/// A histogram's contents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramData {
    /// Upper bounds (seconds) of the buckets, ascending; a last `+Inf` bucket is implied.
    pub bounds: Vec<f64>,
    /// Observations at or below each bound (cumulative, as Prometheus wants), then the total.
    pub cumulative: Vec<u64>,
    /// Sum of all observations in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// Latency buckets from 1 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Histogram {
    /// An empty histogram with these bounds.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            inner: Mutex::new(HistogramData {
                bounds: bounds.to_vec(),
                cumulative: vec![0; bounds.len() + 1],
                sum: 0.0,
                count: 0,
            }),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let x = d.as_secs_f64();
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first = self
            .bounds
            .iter()
            .position(|&b| x <= b)
            .unwrap_or(self.bounds.len());
        for c in &mut h.cumulative[first..] {
            *c += 1;
        }
        h.sum += x;
        h.count += 1;
    }

    /// A copy of the contents.
    pub fn snapshot(&self) -> HistogramData {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Everything the engine counts. Shared; read it with [`Metrics::snapshot`].
#[derive(Debug)]
pub struct Metrics {
    pub(crate) requests_finished: [AtomicU64; 4],
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) completion_tokens: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) index_cache_hits: AtomicU64,
    pub(crate) index_cache_misses: AtomicU64,
    pub(crate) engine_panics: AtomicU64,
    pub(crate) prefix_queries: AtomicU64,
    pub(crate) prefix_hits: AtomicU64,
    pub(crate) prefix_hit_tokens: AtomicU64,
    pub(crate) prefix_cached_tokens: AtomicU64,
    pub(crate) jump_forward_tokens: AtomicU64,
    pub(crate) time_to_first_token: Histogram,
    pub(crate) time_per_token: Histogram,
    pub(crate) index_compile: Histogram,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsSnapshot {
    /// Finished choices by reason: stop, length, cancelled, error.
    pub finished: [(&'static str, u64); 4],
    /// Prompt tokens processed.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Requests admitted but not running yet: being prepared (template, tokenizer,
    /// constraint compile) or waiting for a slot.
    pub queued: u64,
    /// Sequences generating now.
    pub active: u64,
    /// Constraint indexes found in the cache.
    pub index_cache_hits: u64,
    /// Constraint indexes compiled.
    pub index_cache_misses: u64,
    /// Indexes held in the cache.
    pub index_cache_size: u64,
    /// Bytes the cached indexes hold.
    pub index_cache_bytes: u64,
    /// Panics caught on the engine's thread (each failed the requests of its step).
    pub engine_panics: u64,
    /// Requests admitted while prefix reuse was on (each looked its prompt up).
    pub prefix_queries: u64,
    /// Of those, requests that reused at least one cached block.
    pub prefix_hits: u64,
    /// Prompt tokens taken from cached blocks instead of computed.
    pub prefix_hit_tokens: u64,
    /// Tokens held in blocks kept for prefix reuse.
    pub prefix_cached_tokens: u64,
    /// Tokens a constraint forced and jump-forward decoding appended without sampling (also
    /// counted in `completion_tokens`).
    pub jump_forward_tokens: u64,
    /// Whether the engine is healthy: its thread runs and its state is sound.
    pub healthy: bool,
    /// From submission to the first token.
    pub time_to_first_token: HistogramData,
    /// Between consecutive tokens of a sequence.
    pub time_per_token: HistogramData,
    /// Constraint to lazy index (schema compile included).
    pub index_compile: HistogramData,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            requests_finished: Default::default(),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            active: AtomicU64::new(0),
            index_cache_hits: AtomicU64::new(0),
            index_cache_misses: AtomicU64::new(0),
            engine_panics: AtomicU64::new(0),
            prefix_queries: AtomicU64::new(0),
            prefix_hits: AtomicU64::new(0),
            prefix_hit_tokens: AtomicU64::new(0),
            prefix_cached_tokens: AtomicU64::new(0),
            jump_forward_tokens: AtomicU64::new(0),
            time_to_first_token: Histogram::new(LATENCY_BUCKETS),
            time_per_token: Histogram::new(LATENCY_BUCKETS),
            index_compile: Histogram::new(LATENCY_BUCKETS),
        }
    }

    pub(crate) fn finished(&self, reason: crate::FinishReason) {
        let i = match reason {
            crate::FinishReason::Stop => 0,
            crate::FinishReason::Length => 1,
            crate::FinishReason::Cancelled => 2,
            crate::FinishReason::Error => 3,
        };
        self.requests_finished[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of every value.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let f = |i: usize| self.requests_finished[i].load(Ordering::Relaxed);
        MetricsSnapshot {
            finished: [
                ("stop", f(0)),
                ("length", f(1)),
                ("cancelled", f(2)),
                ("error", f(3)),
            ],
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            index_cache_hits: self.index_cache_hits.load(Ordering::Relaxed),
            index_cache_misses: self.index_cache_misses.load(Ordering::Relaxed),
            index_cache_size: 0,
            index_cache_bytes: 0,
            engine_panics: self.engine_panics.load(Ordering::Relaxed),
            prefix_queries: self.prefix_queries.load(Ordering::Relaxed),
            prefix_hits: self.prefix_hits.load(Ordering::Relaxed),
            prefix_hit_tokens: self.prefix_hit_tokens.load(Ordering::Relaxed),
            prefix_cached_tokens: self.prefix_cached_tokens.load(Ordering::Relaxed),
            jump_forward_tokens: self.jump_forward_tokens.load(Ordering::Relaxed),
            healthy: true,
            time_to_first_token: self.time_to_first_token.snapshot(),
            time_per_token: self.time_per_token.snapshot(),
            index_compile: self.index_compile.snapshot(),
        }
    }
}
