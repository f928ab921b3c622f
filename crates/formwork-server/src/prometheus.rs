//! `GET /metrics`: the engine's counters and the HTTP layer's, in Prometheus' text
//! exposition format (version 0.0.4).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `formwork_requests_total{route, status}` | counter | HTTP responses, counted by the HTTP layer |
//! | `formwork_sequences_finished_total{reason}` | counter | choices ended: `stop`, `length`, `cancelled`, `error` |
//! | `formwork_prompt_tokens_total` | counter | prompt tokens processed |
//! | `formwork_completion_tokens_total` | counter | tokens generated |
//! | `formwork_jump_forward_tokens_total` | counter | generated tokens a structure forced, appended without sampling (jump-forward decoding) |
//! | `formwork_queue_depth` | gauge | requests admitted and not running yet (being prepared or waiting for a slot) |
//! | `formwork_active_sequences` | gauge | sequences generating now |
//! | `formwork_index_cache_hits_total`, `formwork_index_cache_misses_total` | counter | constraint indexes found in / compiled into the cache |
//! | `formwork_index_cache_size` | gauge | indexes held |
//! | `formwork_index_cache_bytes` | gauge | bytes the cached indexes hold (bounded by `--index-cache-mb`) |
//! | `formwork_engine_panics_total` | counter | panics caught on the engine's thread (each failed its step's requests with a 500) |
//! | `formwork_prefix_cache_queries_total` | counter | requests that looked their prompt up in the prefix cache |
//! | `formwork_prefix_cache_hits_total` | counter | of those, requests that reused at least one cached block |
//! | `formwork_prefix_cache_hit_tokens_total` | counter | prompt tokens reused instead of computed (the tokens saved) |
//! | `formwork_prefix_cache_tokens` | gauge | tokens held in blocks kept for prefix reuse (within `--kv-cache-tokens`) |
//! | `formwork_engine_healthy` | gauge | 1 while the engine serves soundly, 0 once it does not (`/health` answers 503) |
//! | `formwork_time_to_first_token_seconds` | histogram | submission to first token |
//! | `formwork_time_per_output_token_seconds` | histogram | between consecutive tokens of a sequence |
//! | `formwork_index_compile_seconds` | histogram | regex to token index, on a cache miss |
//!
//! ```
//! use formwork_engine::MetricsSnapshot;
//! use formwork_server::prometheus::render;
//!
//! let text = render(&MetricsSnapshot::default(), &[("/health", 200, 3)]);
//! assert!(text.contains("formwork_requests_total{route=\"/health\",status=\"200\"} 3\n"));
//! assert!(text.contains("formwork_active_sequences 0\n"));
//! ```

use std::fmt::Write as _;

use formwork_engine::{HistogramData, MetricsSnapshot};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition of the engine's metrics and the HTTP request counts
/// (`(route, status, count)`).
pub fn render(engine: &MetricsSnapshot, requests: &[(&str, u16, u64)]) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "formwork_requests_total",
        "counter",
        "HTTP responses by route and status.",
    );
    for (route, status, count) in requests {
        let _ = writeln!(
            out,
            "formwork_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
            escape(route)
        );
    }
    header(
        &mut out,
        "formwork_sequences_finished_total",
        "counter",
        "Choices ended, by reason.",
    );
    for (reason, count) in &engine.finished {
        let _ = writeln!(
            out,
            "formwork_sequences_finished_total{{reason=\"{reason}\"}} {count}"
        );
    }
    let scalars = [
        (
            "formwork_prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            engine.prompt_tokens,
        ),
        (
            "formwork_completion_tokens_total",
            "counter",
            "Tokens generated.",
            engine.completion_tokens,
        ),
        (
            "formwork_jump_forward_tokens_total",
            "counter",
            "Generated tokens a structure forced, appended without sampling.",
            engine.jump_forward_tokens,
        ),
        (
            "formwork_queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            engine.queued,
        ),
        (
            "formwork_active_sequences",
            "gauge",
            "Sequences generating now.",
            engine.active,
        ),
        (
            "formwork_index_cache_hits_total",
            "counter",
            "Constraint indexes found in the cache.",
            engine.index_cache_hits,
        ),
        (
            "formwork_index_cache_misses_total",
            "counter",
            "Constraint indexes compiled.",
            engine.index_cache_misses,
        ),
        (
            "formwork_index_cache_size",
            "gauge",
            "Constraint indexes held in the cache.",
            engine.index_cache_size,
        ),
        (
            "formwork_index_cache_bytes",
            "gauge",
            "Bytes the cached constraint indexes hold.",
            engine.index_cache_bytes,
        ),
        (
            "formwork_engine_panics_total",
            "counter",
            "Panics caught on the engine's thread; each failed the requests of its step.",
            engine.engine_panics,
        ),
        (
            "formwork_prefix_cache_queries_total",
            "counter",
            "Requests that looked their prompt up in the prefix cache.",
            engine.prefix_queries,
        ),
        (
            "formwork_prefix_cache_hits_total",
            "counter",
            "Requests that reused at least one cached block of an earlier prompt.",
            engine.prefix_hits,
        ),
        (
            "formwork_prefix_cache_hit_tokens_total",
            "counter",
            "Prompt tokens reused from the prefix cache instead of computed.",
            engine.prefix_hit_tokens,
        ),
        (
            "formwork_prefix_cache_tokens",
            "gauge",
            "Tokens held in blocks kept for prefix reuse.",
            engine.prefix_cached_tokens,
        ),
        (
            "formwork_engine_healthy",
            "gauge",
            "1 while the engine serves soundly, else 0.",
            u64::from(engine.healthy),
        ),
    ];
    for (name, kind, help, value) in scalars {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    histogram(
        &mut out,
        "formwork_time_to_first_token_seconds",
        "From submission to the first generated token.",
        &engine.time_to_first_token,
    );
    histogram(
        &mut out,
        "formwork_time_per_output_token_seconds",
        "Between consecutive tokens of a sequence.",
        &engine.time_per_token,
    );
    histogram(
        &mut out,
        "formwork_index_compile_seconds",
        "Compiling a constraint into a token index (cache misses).",
        &engine.index_compile,
    );
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramData) {
    header(out, name, "histogram", help);
    for (bound, count) in h.bounds.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// Escapes a label value (`\`, `"` and newlines).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_inf() {
        let snapshot = MetricsSnapshot {
            time_to_first_token: HistogramData {
                bounds: vec![0.1, 1.0],
                cumulative: vec![1, 3, 4],
                sum: 5.5,
                count: 4,
            },
            jump_forward_tokens: 7,
            ..MetricsSnapshot::default()
        };
        let text = render(&snapshot, &[]);
        for line in [
            "# TYPE formwork_time_to_first_token_seconds histogram",
            "formwork_time_to_first_token_seconds_bucket{le=\"0.1\"} 1",
            "formwork_time_to_first_token_seconds_bucket{le=\"1\"} 3",
            "formwork_time_to_first_token_seconds_bucket{le=\"+Inf\"} 4",
            "formwork_time_to_first_token_seconds_sum 5.5",
            "formwork_time_to_first_token_seconds_count 4",
            "# TYPE formwork_jump_forward_tokens_total counter",
            "formwork_jump_forward_tokens_total 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // An empty histogram still has its +Inf bucket.
        assert!(text.contains("formwork_index_compile_seconds_bucket{le=\"+Inf\"} 0\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
