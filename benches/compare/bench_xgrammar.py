"""XGrammar over JSONSchemaBench, measured the way `benches/grammar.rs` measures
formwork-grammar and llguidance, on the default model's vocabulary (SmolLM2-135M, 49,152
tokens).

1. **Schema text to first mask** for the same uniform sample (SplitMix64, seed 2026) of 600
   JSONSchemaBench schemas: a `GrammarCompiler` without cache, on one thread, compiles the
   schema text (`compile_json_schema`, compact separators, no free whitespace), then a fresh
   `GrammarMatcher` fills the first token bitmask. Median of three runs per schema; median,
   p90 and worst over the schemas XGrammar compiles, and why it refuses the others. By
   default in XGrammar's strict mode (its default: objects take only their declared
   properties when `additionalProperties` is unset, as ours do); `--modes non-strict` or
   `both` adds JSON Schema's open objects, which XGrammar compiles far more slowly (seconds
   for large schemas).
2. **Per step** (`accept_token`, then `fill_next_token_bitmask`) along the same documents:
   the first two valid instances of each sampled schema, compact JSON in the schema's property
   order, greedily tokenized over the text tokens, at most 400 tokens; kept where XGrammar
   accepts them token by token and then a stop token. Mean and p99, raw and less the cost of
   two empty calls into XGrammar's bindings (the Python overhead a step pays).

Differences from the Rust bench: this script sees only XGrammar, so its counts are over the
schemas and documents XGrammar takes, not over those every engine takes; steps are timed from
Python (`time.perf_counter_ns`).

Run of 2026-12-07 on the shared 2-core machine (xgrammar 0.2.9, torch 2.15.0, one compiler
thread; the lead's tests ran beside it; a first run gave 4.98 / 46.97 ms / 6.3 s, 6.0 µs):

    Compiled: XGrammar strict 593 (of 600).

    | mode | schemas | median | p90 | max | schemas over 100 ms |
    |---|---:|---:|---:|---:|---:|
    | XGrammar strict | 593 | 5.30 ms | 46.35 ms | 6692.5 ms | 34 |

    Slowest five (strict): Github_hard:1000 6692.5 ms; WashingtonPost:70 3760.6 ms;
    WashingtonPost:27 3558.7 ms; Github_medium:194 2727.5 ms; Github_hard:205 1753.8 ms
    Refused 7: minProperties above the properties (3), minItems above prefixItems (3),
    schema `false` (1).

    Per step (empty-call baseline 452 ns):

    | mode | documents | steps | refused | mean | p99 | mean less baseline |
    |---|---:|---:|---:|---:|---:|---:|
    | XGrammar strict | 571 | 52413 | 77 | 6.6 µs | 38.5 µs | 6.2 µs |

    Slowest five per step (strict mean): Github_medium:1936 351.2 µs; Kubernetes:543 40.3 µs;
    Github_easy:849 22.4 µs; Github_hard:394 19.0 µs; Github_medium:728 14.5 µs

Non-strict compiles take minutes per hundred schemas, so only the first 100 of the sample
(`--modes both --limit 100`, 11 minutes): strict 99 compiled, median 5.26 ms, p90 79.2 ms,
max 3.9 s, 8 over 100 ms; non-strict 100 compiled, median 296 ms, p90 3.66 s, max 66.7 s
(Github_ultra:62; Kubernetes:761 32.3 s), 66 over 100 ms; per step strict 5.1 µs mean /
35.2 µs p99 (82 documents), non-strict 7.8 / 41.9 µs (85 documents).

Setup (PyPI only; xgrammar imports torch and transformers, the plain PyPI wheels work on a CPU):

    python3 -m venv /work/scratch/venv-xgr
    /work/scratch/venv-xgr/bin/pip install xgrammar gguf

Run from the workspace root:

    /work/scratch/venv-xgr/bin/python benches/compare/bench_xgrammar.py            # 600 schemas
    /work/scratch/venv-xgr/bin/python benches/compare/bench_xgrammar.py --limit 50 # a quick try
    FORMWORK_COMPARE_ALL=1 /work/scratch/venv-xgr/bin/python benches/compare/bench_xgrammar.py
"""

import argparse
import importlib.metadata
import json
import math
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

import gguf
import xgrammar as xgr

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "jsonschemabench"
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

SAMPLE = 600
SEED = 2026
DOCS_PER_SCHEMA = 2
MAX_DOC_TOKENS = 400
MASK64 = (1 << 64) - 1

# formwork_gguf::END_TOKEN_NAMES less its plain EOS spellings, and the keys naming end ids.
END_TOKEN_NAMES = {
    "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
    "<|end_of_text|>", "<|return|>", "<|call|>", "<EOT>", "_<EOT>", "<end_of_utterance>",
}
END_TOKEN_KEYS = (
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id",
)


class Rng:
    """SplitMix64, as `Rng` in `benches/grammar.rs`."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        """The next 64-bit output."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def gpt2_unicode_to_byte():
    """The inverse of GPT-2's `bytes_to_unicode` table."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def read_vocabulary(path):
    """Token bytes, special (not text) flags and end-of-generation ids of a GPT-2 byte-level
    GGUF vocabulary, by `formwork_index::Vocabulary::from_gguf`'s rules: types 2, 3 and 5 are
    special, 4 literal, 6 one `<0xNN>` byte; the end ids (special too) are those the
    eos/eot/eom keys name and the end-of-turn tokens by name (SmolLM2: `<|endoftext|>` and
    `<|im_end|>`)."""
    reader = gguf.GGUFReader(path)

    def field(key):
        return reader.fields[key].contents() if key in reader.fields else None

    if field("tokenizer.ggml.model") != "gpt2":
        sys.exit(f"{path}: only GPT-2 byte-level vocabularies are supported here")
    texts = field("tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type") or [1] * len(texts)
    to_byte = gpt2_unicode_to_byte()
    tokens, special = [], []
    for text, kind in zip(texts, types):
        special.append(kind in (2, 3, 5))
        if kind in (2, 3, 4, 5):
            tokens.append(text.encode())
        elif kind == 6 and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            tokens.append(bytes([int(text[3:5], 16)]))
        else:
            tokens.append(b"".join(
                bytes([to_byte[c]]) if c in to_byte else c.encode() for c in text
            ))
    ends = {field(k) for k in END_TOKEN_KEYS} - {None}
    ends |= {i for i, t in enumerate(texts) if t in END_TOKEN_NAMES}
    ends = sorted(i for i in ends if i < len(texts))
    for i in ends:
        special[i] = True  # never text, as `Vocabulary::is_special`
    return tokens, special, ends


class GreedyTokenizer:
    """Longest text token first at each position; the lowest id among equal tokens
    (`Vocabulary::tokenize_greedy`)."""

    def __init__(self, tokens, special):
        self.ids = {}
        for i, t in enumerate(tokens):
            if t and not special[i]:
                self.ids.setdefault(t, i)
        self.longest = max(map(len, self.ids))

    def tokenize(self, text):
        """Token ids spelling `text`, or None where some position starts no token."""
        out, pos = [], 0
        while pos < len(text):
            for n in range(min(self.longest, len(text) - pos), 0, -1):
                i = self.ids.get(text[pos:pos + n])
                if i is not None:
                    out.append(i)
                    pos += n
                    break
            else:
                return None
        return out


def ryu_float(x):
    """A finite float as serde_json writes it (ryu: shortest digits, `1e-7`, `0.00001`)."""
    if x == 0 or not math.isfinite(x):
        return repr(x)
    shortest = Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(map(str, shortest.digits))
    n, k = len(digits), shortest.exponent
    point = n + k  # digits before the decimal point
    if 0 <= k and point <= 16:
        body = digits + "0" * k + ".0"
    elif 0 < point <= 16:
        body = digits[:point] + "." + digits[point:]
    elif -5 < point <= 0:
        body = "0." + "0" * -point + digits
    elif n == 1:
        body = f"{digits}e{point - 1}"
    else:
        body = f"{digits[0]}.{digits[1:]}e{point - 1}"
    return ("-" if x < 0 else "") + body


def compact_json(v):
    """`serde_json::Value::to_string` with preserve_order: compact, keys in insertion order."""
    if isinstance(v, dict):
        return "{" + ",".join(compact_json(k) + ":" + compact_json(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(map(compact_json, v)) + "]"
    if isinstance(v, float):
        return ryu_float(v)
    return json.dumps(v, ensure_ascii=False)


def jsonschemabench():
    """Every entry, files sorted by path: (name `file:line`, schema, valid instances)."""
    out = []
    for path in sorted(DATA.glob("*.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):
            try:
                v = json.loads(line)
            except json.JSONDecodeError:
                continue
            valid = [t["data"] for t in v.get("tests") or [] if t.get("valid") is True]
            out.append((f"{path.stem}:{i + 1}", v.get("schema"), valid))
    return out


def sample(entries, n, seed):
    """A uniform sample of `n` entries (`sample` in `benches/grammar.rs`)."""
    rng = Rng(seed)
    entries = list(entries)
    n = min(n, len(entries))
    for i in range(n):
        j = i + rng.next() % (len(entries) - i)
        entries[i], entries[j] = entries[j], entries[i]
    return entries[:n]


def compile_first_mask(compiler, text, strict, bitmask):
    """Schema text to the first mask; returns the compiled grammar."""
    compiled = compiler.compile_json_schema(
        text, any_whitespace=False, separators=(",", ":"), strict_mode=strict
    )
    xgr.GrammarMatcher(compiled).fill_next_token_bitmask(bitmask)
    return compiled


def median3(f):
    """Median of three timed calls of `f`, in ms, and its last result."""
    times = []
    for _ in range(3):
        start = time.perf_counter_ns()
        result = f()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return sorted(times)[1], result


def accepts(compiled, tokens, stop):
    """Whether XGrammar takes `tokens` one by one and then the stop token."""
    m = xgr.GrammarMatcher(compiled)
    return all(m.accept_token(t) for t in tokens) and m.accept_token(stop)


def time_steps(compiled, tokens, bitmask):
    """Nanoseconds of each step (accept one token, fill the next mask) along `tokens`."""
    m = xgr.GrammarMatcher(compiled)
    m.fill_next_token_bitmask(bitmask)
    clock, accept, fill = time.perf_counter_ns, m.accept_token, m.fill_next_token_bitmask
    out = []
    for t in tokens:
        start = clock()
        accept(t)
        fill(bitmask)
        out.append(clock() - start)
    return out


def call_baseline(compiled):
    """Median ns of two empty calls into the bindings, timed as a step is."""
    m = xgr.GrammarMatcher(compiled)
    clock, empty = time.perf_counter_ns, m.is_terminated
    times = []
    for _ in range(10_000):
        start = clock()
        empty()
        empty()
        times.append(clock() - start)
    return sorted(times)[len(times) // 2]


def quantile(v, q):
    """The `q` quantile as `benches/grammar.rs` takes it (nearest rank, half away from 0)."""
    if not v:
        return math.nan
    s = sorted(v)
    return s[math.floor((len(s) - 1) * q + 0.5)]


def mean(v):
    """Arithmetic mean (0 for none)."""
    return sum(v) / max(len(v), 1)


def fmt_ns(ns):
    """ns, µs or ms, as `fmt_ns` in `benches/grammar.rs`."""
    if ns < 1000:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns / 1e6:.2f} ms"


def main():
    """Measures, then prints the markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="only the first N schemas of the sample")
    ap.add_argument("--modes", choices=["strict", "non-strict", "both"], default="strict",
                    help="XGrammar's strict mode (closed objects, as ours; the default), its "
                    "non-strict mode (far slower to compile), or both")
    ap.add_argument("--threads", type=int, default=1,
                    help="GrammarCompiler max_threads (default 1, as the Rust engines)")
    args = ap.parse_args()

    tokens, special, ends = read_vocabulary(MODEL)
    info = xgr.TokenizerInfo(
        [b"" if s else t for t, s in zip(tokens, special)],
        xgr.VocabType.RAW,
        stop_token_ids=ends,
    )
    tokenizer = GreedyTokenizer(tokens, special)
    compiler = xgr.GrammarCompiler(info, max_threads=args.threads, cache_enabled=False)
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    meta = importlib.metadata.version
    print(f"xgrammar {meta('xgrammar')} (pip install xgrammar from PyPI, into {sys.prefix}); "
          f"torch {meta('torch')}, apache-tvm-ffi {meta('apache-tvm-ffi')}; "
          f"max_threads {args.threads}; vocabulary {MODEL.name}, {info.vocab_size} tokens, "
          f"stop tokens {ends}", file=sys.stderr)

    every = jsonschemabench()
    total = len(every)
    entries = sample(every, total if os.environ.get("FORMWORK_COMPARE_ALL") else SAMPLE, SEED)
    entries = entries[:args.limit]
    print(f"{len(entries)} of {total} schemas (seed {SEED})", file=sys.stderr)

    modes = {m: m == "strict" for m in ("strict", "non-strict") if args.modes in (m, "both")}
    first = {m: [] for m in modes}  # (name, ms)
    refused = {m: {} for m in modes}  # reason -> count
    steps = {m: [] for m in modes}
    per_schema = {m: [] for m in modes}  # (name, mean ns)
    docs_used = {m: 0 for m in modes}
    docs_refused = {m: 0 for m in modes}
    baselines = []
    for k, (name, schema, valid) in enumerate(entries):
        if k % 50 == 0:
            print(f"{k}/{len(entries)}", file=sys.stderr)
        text = compact_json(schema)
        docs = [tokenizer.tokenize(compact_json(d).encode()) for d in valid[:DOCS_PER_SCHEMA]]
        docs = [d for d in docs if d is not None and len(d) <= MAX_DOC_TOKENS]
        for mode, strict in modes.items():
            try:
                ms, compiled = median3(lambda: compile_first_mask(compiler, text, strict, bitmask))
            except Exception as e:  # XGrammar reports refusals as RuntimeError and others.
                reason = str(e).split(": ", 1)[-1].split("\n")[0][:60]
                refused[mode][reason] = refused[mode].get(reason, 0) + 1
                continue
            first[mode].append((name, ms))
            mine = []
            for d in docs:
                if not accepts(compiled, d, ends[0]):
                    docs_refused[mode] += 1
                    continue
                docs_used[mode] += 1
                mine += time_steps(compiled, d, bitmask)
            if mine:
                steps[mode] += mine
                per_schema[mode].append((name, mean(mine)))
                if len(baselines) < 20:
                    baselines.append(call_baseline(compiled))
    baseline = sorted(baselines)[len(baselines) // 2] if baselines else 0

    print(f"\n### XGrammar, schema text to first mask: {len(entries)} JSONSchemaBench schemas "
          f"(uniform sample of {total}, seed {SEED})\n")
    print("Compiled: " + ", ".join(f"XGrammar {m} {len(first[m])}" for m in modes)
          + f" (of {len(entries)}).\n")
    print("| mode | schemas | median | p90 | max | schemas over 100 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in modes:
        v = [ms for _, ms in first[m]]
        print(f"| XGrammar {m} | {len(v)} | {quantile(v, 0.5):.2f} ms | {quantile(v, 0.9):.2f} ms "
              f"| {quantile(v, 1.0):.1f} ms | {sum(x > 100 for x in v)} |")
    for m in modes:
        slowest = sorted(first[m], key=lambda r: -r[1])[:5]
        print(f"\nSlowest five ({m}): " + "; ".join(f"{n} {ms:.1f} ms" for n, ms in slowest))
    for m in modes:
        reasons = sorted(refused[m].items(), key=lambda r: -r[1])[:12]
        print(f"\nXGrammar {m} refused {sum(refused[m].values())}: {reasons}")

    print(f"\n### XGrammar, per step (accept one token + next mask) along valid instances "
          f"(empty-call baseline {fmt_ns(baseline)})\n")
    print("| mode | documents | steps | refused | mean | p99 | mean less baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in modes:
        v = steps[m]
        print(f"| XGrammar {m} | {docs_used[m]} | {len(v)} | {docs_refused[m]} | "
              f"{fmt_ns(mean(v))} | {fmt_ns(quantile(v, 0.99))} | "
              f"{fmt_ns(max(mean(v) - baseline, 0))} |")
    for m in modes:
        slowest = sorted(per_schema[m], key=lambda r: -r[1])[:5]
        print(f"\nSlowest five per step ({m} mean): "
              + "; ".join(f"{n} {fmt_ns(ns)}" for n, ns in slowest))


if __name__ == "__main__":
    main()
