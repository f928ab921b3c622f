#!/usr/bin/env python3
"""llama.cpp's prefill and decode speed on a GGUF, measured like `formwork bench`.

The same fixed prompt of ordinary token ids as `formwork bench --prompt-tokens P` (token
`300 + (i * 7919) % (vocab - 400)`), prefilled in one request, then G tokens decoded greedily
with EOS ignored; one warm-up run, the median of 3. llama.cpp reports its own timings
(`timings.prompt_per_second`, `timings.predicted_per_second` of its server's /completion).
Prints one JSON line like formwork's.

    python3 -m venv /tmp/llamacpp-venv
    /tmp/llamacpp-venv/bin/pip install xllamacpp==2026.10.11549
    /tmp/llamacpp-venv/bin/python scripts/llamacpp_bench.py \\
        [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--prompt-tokens 512] \\
        [--gen-tokens 256] [--threads 2]

`cargo xtask bench model` runs this and `formwork bench` one after the other and prints
the ratios.
"""

import argparse
import json
import os
import statistics
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=49152)
    a = ap.parse_args()

    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = a.model
    p.n_ctx = max(2048, a.prompt_tokens + a.gen_tokens + 16)
    p.n_batch = 2048
    p.n_ubatch = 512
    p.n_parallel = 1
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    server = xllamacpp.Server(p)
    base = server.listening_address

    span = max(1, a.vocab - 400)
    prompt = [300 + (i * 7919) % span for i in range(a.prompt_tokens)]

    def once(n):
        body = {
            "prompt": prompt,
            "n_predict": n,
            "ignore_eos": True,
            "cache_prompt": False,
            "samplers": ["top_k"],
            "top_k": 1,
            "temperature": 0.0,
        }
        req = urllib.request.Request(
            base + "/completion",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=600) as r:
            t = json.loads(r.read())["timings"]
        return t["prompt_per_second"], t["predicted_per_second"]

    once(16)
    runs = [once(a.gen_tokens) for _ in range(a.repetitions)]
    print(json.dumps({
        "engine": "llama.cpp",
        "xllamacpp": getattr(xllamacpp, "__version__", "?"),
        "prefill_tok_s": round(statistics.median(r[0] for r in runs), 1),
        "decode_tok_s": round(statistics.median(r[1] for r in runs), 1),
        "prompt_tokens": a.prompt_tokens,
        "gen_tokens": a.gen_tokens,
        "threads": a.threads,
    }))
    os._exit(0)


if __name__ == "__main__":
    main()
