#!/usr/bin/env python3
"""Write llama.cpp golden outputs for the models Formwork is tested on.

llama.cpp is an independent oracle for Formwork's own tokenizer and forward
pass. This script loads a model through `xllamacpp` (Python bindings that
embed llama.cpp's own server) and records, in
crates/formwork-model/tests/golden/llamacpp_<name>.json (one file per entry
of MODELS: `smollm2`, SmolLM2-135M-Instruct Q4_1, the default; `gemma3`,
Gemma 3 270M Q4_K_M, a base model without a chat template):

  * model       - file name, sha256, GGUF tokenizer metadata, xllamacpp
                  version and the llama.cpp build info the wheel reports;
  * tokenization- ids llama.cpp's tokenizer gives ~35 strings, plus the
                  model's own extra strings (POST /tokenize, add_special=true,
                  parse_special=true);
  * greedy      - 32 pure-argmax tokens after each of 16 prompts (14 raw plus
                  2 chat prompts, or 16 raw ones for a base model), run from
                  the listed prompt ids;
  * logits      - top-10 next-token log-probabilities after 3 prompts.

Rerun (offline; CPU only; a few minutes on 2 busy cores):

    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install xllamacpp==2026.10.11549
    /tmp/golden-venv/bin/python scripts/llamacpp_goldens.py \
        [--name smollm2|gemma3] [--model PATH] [--out PATH]

--model and --out default to the entry's file in models/ and its golden file;
the model's sha256 is checked against the entry either way.

The goldens were made with xllamacpp 2026.10.11549 (CPU wheel, cp310-abi3,
manylinux x86_64). Another version embeds another llama.cpp, whose tokenizer
or kernels may differ; the script records the version it ran with and warns
when it is not the pinned one.

How it talks to llama.cpp: `xllamacpp.Server(params)` starts llama.cpp's
server in-process and also listens on a random 127.0.0.1 port
(`server.listening_address`). The bindings have no tokenize method, so the
script uses the server's native HTTP endpoints on that loopback address:
/tokenize, /detokenize, /apply-template and /completion. One greedy request
is also made through `server.handle_completions` (the in-process API) as a
cross-check.

Greedy decoding is pure argmax: samplers=["top_k"], top_k=1, temperature 0,
repeat/presence/frequency penalties off, DRY off, no logit bias. llama.cpp's
server stops at an end-of-generation token; EOG tokens are NOT suppressed
(that would be a logit bias), instead the script appends the EOG token to the
context and asks for the rest, so every prompt gets 32 argmax tokens. The
index of the first EOG token is recorded. Each prompt is run three times
(token-id prompt with n_probs, token-id prompt without, string prompt) and
the runs must agree.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import urllib.request

PINNED_XLLAMACPP = "2026.10.11549"
N_GEN = 32
SEED = 42
N_THREADS = 2
N_CTX = 2048

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.join(REPO, "crates", "formwork-model", "tests", "golden")

# ---------------------------------------------------------------------------
# Inputs

TOKENIZATION_STRINGS = [
    ("plain", "Hello world"),
    ("single_word", "Hello"),
    ("leading_space", " Hello"),
    ("trailing_space", "Hello "),
    ("leading_and_trailing_spaces", "  leading and trailing spaces  "),
    ("multiple_spaces", "multiple    spaces   between  words"),
    ("sentence", "The quick brown fox jumps over the lazy dog."),
    ("newline", "line one\nline two"),
    ("double_newline", "Paragraph one.\n\nParagraph two."),
    ("only_newlines", "\n\n\n"),
    ("crlf_and_tab", "a\r\nb\tc"),
    ("digits", "12345"),
    ("decimal", "3.14159"),
    ("digits_in_text", "In 2024 there were 366 days and 8,784 hours."),
    ("punctuation", "Hello, world! How's it going? (Fine.) [ok] {yes}; a-b_c... --- !!!"),
    ("contraction_dont", "don't"),
    ("contractions", "I'll say we're sure they've gone, she's here and it'd be OK."),
    ("code_python", "def add(a, b):\n    return a + b\n"),
    ("code_rust_tabs", "fn main() {\n\tprintln!(\"hi {}\", x);\n}\n"),
    ("code_nested_indent", "if x:\n    for i in range(10):\n        print(i)\n"),
    ("url", "https://example.com/path?q=1&r=two#frag"),
    ("identifiers", "HTTPServer camelCase snake_case CONSTANT_VALUE"),
    ("cjk_chinese", "你好，世界！"),
    ("cjk_japanese", "こんにちは、世界。カタカナ"),
    ("korean", "안녕하세요"),
    ("cyrillic", "Привет, мир"),
    ("emoji", "I love 🦀 and 😀!"),
    ("emoji_zwj", "👨‍👩‍👧 family"),
    ("accented_latin", "café naïve résumé Ærøskøbing façade"),
    ("accented_mixed", "Ünïcödé àéîõü ñ ß"),
    ("special_tokens_chatml", "<|im_start|>user\nHi there<|im_end|>"),
    ("special_token_mid_text", "text before <|im_end|> text after"),
    ("special_endoftext", "<|endoftext|>"),
    ("empty", ""),
]

CHAT_FRANCE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
CHAT_HAIKU = [  # no system message: the template injects SmolLM's default one
    {"role": "user", "content": "Write a haiku about the sea."},
]

LONG_PARAGRAPH = (
    "The history of the printing press begins in the fifteenth century, when "
    "Johannes Gutenberg combined movable metal type, oil-based ink, and a "
    "wooden screw press adapted from those used to make wine. Before his "
    "invention, books were copied by hand, which made them rare and "
    "expensive. Within a few decades, printing shops had spread to more than "
    "two hundred cities across Europe, and millions of volumes were in "
    "circulation. Scholars argue that this sudden flood of information helped"
)

RAW_PROMPTS = [
    ("capital_france", "The capital of France is"),
    ("fibonacci", "def fibonacci(n):"),
    ("once_upon", "Once upon a time"),
    ("json_prefix", '{"name": "'),
    ("numbered_list", "Here are three fruits:\n1. Apple\n2."),
    ("long_paragraph", LONG_PARAGRAPH),
    ("quick_brown_fox", "The quick brown fox"),
    ("arithmetic_qa", "Q: What is 12 + 35?\nA:"),
    ("history", "In 1969, Neil Armstrong"),
    ("python_imports", "import numpy as np\nimport"),
    ("html", "<!DOCTYPE html>\n<html>\n<head>\n  <title>"),
    ("translate", "Translate to French: Good morning, my friend.\nFrench:"),
    ("primary_colors", "The three primary colors are"),
    ("water_boils", "Water boils at"),
]

N_LOGITS = 10

# Gemma's SentencePiece vocabulary: its control and user-defined tokens (runs of
# spaces, newlines and tabs are user-defined tokens, split out before the
# merges), digits, scripts and characters only byte fallback can spell.
GEMMA_TOKENIZATION_STRINGS = [
    ("gemma_turns", "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"),
    ("gemma_start_of_turn", "<start_of_turn>"),
    ("gemma_end_of_turn_mid_text", "done.<end_of_turn>\nnext"),
    ("gemma_bos_eos_text", "<bos>text<eos>"),
    ("gemma_unused_and_image", "<unused0> <start_of_image> [multimodal]"),
    ("spaces_2", "a  b"),
    ("spaces_5", "a     b"),
    ("spaces_40", "x" + " " * 40 + "y"),
    ("newlines_3", "a\n\n\nb"),
    ("newlines_40", "\n" * 40),
    ("tabs_run", "\t\t\tindented\n\t\tless"),
    ("mixed_whitespace", " \n  \n\t \n   end  "),
    ("space_before_newline", "end of line \nnext"),
    ("long_number", "12345678901234567890"),
    ("long_decimal", "3.14159265358979323846264338327950288"),
    ("numbers_with_separators", "1,234,567.89 and 1 000 000 and 0x1F and 1e-10"),
    ("cjk_long", "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。"),
    ("emoji_run", "🦀🦀🦀 🎉🎊 👍🏽 🇫🇷"),
    ("byte_fallback_rare", "\u16a0\u16c7\u16bb \U00013000 \ue000 \U0001d518\U0001d52b"),
    ("control_chars", "a\x00b\x07c\x1bd\x7f"),
    ("metaspace_literal", "\u2581already\u2581spaced"),
    ("byte_token_text", "<0x41><0x0A>"),
    ("json_object", '{"name": "Ada", "age": 36, "tags": ["x", "y"]}'),
]

GEMMA_EXTRA_PROMPTS = [
    ("largest_planet", "The largest planet in the solar system is"),
    ("json_city", '{"city": "Paris", "country": "'),
]

# One entry per golden file. `chat`: the GGUF ships a chat template, so two
# chat prompts (rendered by llama.cpp's /apply-template) join the raw ones.
MODELS = {
    "smollm2": {
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "out": "llamacpp_smollm2.json",
        "title": "SmolLM2-135M-Instruct Q4_1",
        "extra_strings": [],
        "extra_prompts": [],
        "chat": True,
        "logit_prompts": ["capital_france", "fibonacci", "chatml_france"],
    },
    "gemma3": {
        "file": "gemma-3-270m-q4_k_m.gguf",
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "out": "llamacpp_gemma3.json",
        "title": "Gemma 3 270M (base) Q4_K_M",
        "extra_strings": GEMMA_TOKENIZATION_STRINGS,
        "extra_prompts": GEMMA_EXTRA_PROMPTS,
        "chat": False,
        "logit_prompts": ["capital_france", "fibonacci", "json_prefix"],
    },
}

# Token texts llama.cpp (src/llama-vocab.cpp) treats as end of generation,
# besides the GGUF's eos/eot/eom ids.
EOG_TEXTS = [
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
    "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
    "<|end_of_text|>", "<end_of_utterance>",
]


# ---------------------------------------------------------------------------
# GGUF metadata (minimal reader: scalar keys in full, arrays by length)

_GGUF_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}


def read_gguf_metadata(path):
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def rstr():
            return f.read(rd("<Q")).decode("utf-8", errors="replace")

        def rval(t):
            if t in _GGUF_SCALARS:
                return rd(_GGUF_SCALARS[t])
            if t == 8:
                return rstr()
            if t == 9:
                et, n = rd("<I"), rd("<Q")
                for _ in range(n):
                    rval(et)
                return {"array_of_type": et, "len": n}
            raise ValueError(f"unknown GGUF value type {t}")

        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        version = rd("<I")
        rd("<Q")  # tensor count
        n_kv = rd("<Q")
        meta = {"gguf.version": version}
        for _ in range(n_kv):
            key = rstr()
            meta[key] = rval(rd("<I"))
        return meta


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# llama.cpp server access


class Llama:
    def __init__(self, model_path):
        import xllamacpp

        self.xl = xllamacpp
        p = xllamacpp.CommonParams()
        p.model.path = model_path
        p.n_ctx = N_CTX
        p.n_parallel = 1
        p.cpuparams.n_threads = N_THREADS
        p.cpuparams_batch.n_threads = N_THREADS
        p.sampling.seed = SEED
        self.server = xllamacpp.Server(p)
        self.base = self.server.listening_address
        if not self.base:
            raise RuntimeError("xllamacpp server has no listening address")

    def post(self, path, body):
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read().decode("utf-8"))

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=60) as r:
            return json.loads(r.read().decode("utf-8"))

    def tokenize(self, text, add_special=True, parse_special=True, pieces=False):
        r = self.post(
            "/tokenize",
            {"content": text, "add_special": add_special,
             "parse_special": parse_special, "with_pieces": pieces},
        )
        return r["tokens"]

    def detokenize(self, ids):
        return self.post("/detokenize", {"tokens": ids})["content"]

    def apply_template(self, messages):
        return self.post(
            "/apply-template", {"messages": messages, "add_generation_prompt": True}
        )["prompt"]

    @staticmethod
    def greedy_body(prompt, n_predict, n_probs=0, cache_prompt=False):
        return {
            "prompt": prompt,
            "n_predict": n_predict,
            "samplers": ["top_k"],
            "top_k": 1,
            "temperature": 0.0,
            "top_p": 1.0,
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "dry_multiplier": 0.0,
            "xtc_probability": 0.0,
            "mirostat": 0,
            "ignore_eos": False,
            "logit_bias": [],
            "stop": [],
            "seed": SEED,
            "n_probs": n_probs,
            "post_sampling_probs": False,
            "return_tokens": True,
            "cache_prompt": cache_prompt,
        }

    def complete(self, body):
        r = self.post("/completion", body)
        gs = r.get("generation_settings", {})
        assert gs.get("samplers") == ["top_k"] and gs.get("top_k") == 1, gs
        assert gs.get("temperature") == 0.0 and gs.get("repeat_penalty") == 1.0, gs
        return r

    def greedy(self, prompt, n_probs=0):
        """N_GEN argmax tokens after `prompt` (ids or string), continuing past EOG.

        Returns (tokens, first_eog_index or None, per-step probs or None,
        prompt tokens evaluated by the first request).
        """
        vocab_eog = self.eog_ids
        out, probs, first_eog = [], [], None
        r = self.complete(self.greedy_body(prompt, N_GEN, n_probs))
        n_prompt = r["tokens_evaluated"]
        while True:
            toks = r["tokens"]
            out += toks
            if n_probs:
                probs += r["completion_probabilities"]
            if len(out) >= N_GEN:
                break
            if r["stop_type"] != "eos" or not toks or toks[-1] not in vocab_eog:
                raise RuntimeError(f"generation stopped early: {r['stop_type']}")
            if first_eog is None:
                first_eog = len(out) - 1
            # Continue after the EOG token: the context is prompt + out; the
            # KV cache holds prompt + out[:-1], so only the EOG token is new.
            ids = prompt if isinstance(prompt, list) else self.tokenize(prompt)
            r = self.complete(
                self.greedy_body(ids + out, N_GEN - len(out), n_probs, cache_prompt=True)
            )
        if first_eog is None:
            hit = [i for i, t in enumerate(out) if t in vocab_eog]
            first_eog = hit[0] if hit else None
        return out[:N_GEN], first_eog, (probs[:N_GEN] if n_probs else None), n_prompt


# ---------------------------------------------------------------------------
# Output formatting: 2-space indent, lists of scalars on one line


def dump(obj, ind=0):
    pad, pad1 = "  " * ind, "  " * (ind + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad1}{json.dumps(k, ensure_ascii=False)}: {dump(v, ind + 1)}"
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in obj) + "]"
        return "[\n" + ",\n".join(pad1 + dump(v, ind + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--model", help="the GGUF file (default: models/<the entry's file>)")
    ap.add_argument("--out", help="the golden file (default: the entry's file in tests/golden)")
    args = ap.parse_args()
    spec = MODELS[args.name]
    args.model = args.model or os.path.join(REPO, "models", spec["file"])
    args.out = args.out or os.path.join(GOLDEN_DIR, spec["out"])

    import xllamacpp

    if xllamacpp.__version__ != PINNED_XLLAMACPP:
        print(f"warning: xllamacpp {xllamacpp.__version__}, goldens were made with "
              f"{PINNED_XLLAMACPP}", file=sys.stderr)

    sha = sha256_file(args.model)
    if sha != spec["sha256"]:
        sys.exit(f"model sha256 {sha} != expected {spec['sha256']}")
    meta = read_gguf_metadata(args.model)
    tok_meta = {k: v for k, v in meta.items()
                if k.startswith("tokenizer.") and k != "tokenizer.chat_template"}
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    n_vocab = meta["tokenizer.ggml.tokens"]["len"]

    llm = Llama(args.model)
    props = llm.get("/props")
    try:
        ver = xllamacpp._version.get_versions()
    except Exception:  # noqa: BLE001
        ver = {}

    # EOG ids: llama.cpp treats eos, eot and these GGUF ids as end of generation.
    eog = set()
    for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
              "tokenizer.ggml.eom_token_id"):
        if k in meta:
            eog.add(meta[k])
    # llama.cpp also marks the tokens spelled as one of EOG_TEXTS as EOG.
    for text in EOG_TEXTS:
        toks = llm.tokenize(text, add_special=False, parse_special=True, pieces=True)
        if len(toks) == 1 and toks[0]["piece"] == text:
            eog.add(toks[0]["id"])
    llm.eog_ids = eog

    # ---- tokenization ----------------------------------------------------
    has_template = bool(meta.get("tokenizer.chat_template"))
    if spec["chat"] != has_template:
        sys.exit(f"{args.name}: expected chat template {spec['chat']}, the GGUF has {has_template}")
    inputs = list(TOKENIZATION_STRINGS) + spec["extra_strings"]
    if spec["chat"]:
        chat_france_text = llm.apply_template(CHAT_FRANCE)
        chat_haiku_text = llm.apply_template(CHAT_HAIKU)
        inputs.append(("chatml_france_prompt", chat_france_text))
    tok_entries = []
    for name, text in inputs:
        with_pieces = llm.tokenize(text, add_special=True, parse_special=True, pieces=True)
        ids = [t["id"] for t in with_pieces]
        no_add = llm.tokenize(text, add_special=False, parse_special=True)
        bos_id = meta.get("tokenizer.ggml.bos_token_id")
        bos_added = ids == [bos_id] + no_add
        assert ids == no_add or bos_added, (name, ids, no_add)
        entry = {
            "name": name,
            "text": text,
            "ids": ids,
            "pieces": [t["piece"] for t in with_pieces],
            "bos_added": bos_added,
        }
        no_special = llm.tokenize(text, add_special=True, parse_special=False)
        if no_special != ids:
            entry["ids_without_special_parsing"] = no_special
        # round trip through llama.cpp's detokenizer
        entry["detokenized"] = llm.detokenize(ids)
        tok_entries.append(entry)

    # ---- greedy ----------------------------------------------------------
    prompts = [(n, "raw", t) for n, t in RAW_PROMPTS + spec["extra_prompts"]]
    if spec["chat"]:
        prompts += [
            ("chatml_france", "chatml", chat_france_text),
            ("chatml_haiku", "chatml", chat_haiku_text),
        ]
    greedy_entries = []
    prompt_ids_by_name = {}
    for name, kind, text in prompts:
        ids = llm.tokenize(text, add_special=True, parse_special=True)
        prompt_ids_by_name[name] = ids
        a, eog_a, probs, n_eval = llm.greedy(ids, n_probs=2)
        assert n_eval == len(ids), (name, n_eval, len(ids))
        b, eog_b, _, _ = llm.greedy(ids)
        c, eog_c, _, n_eval_c = llm.greedy(text)  # server tokenizes the string
        if not (a == b == c and eog_a == eog_b == eog_c and n_eval_c == len(ids)):
            sys.exit(f"non-deterministic or tokenization mismatch for {name}:\n{a}\n{b}\n{c}")
        margins = []
        for step, tok in zip(probs, a):
            top = step["top_logprobs"]
            assert top[0]["id"] == tok, (name, step, tok)  # chosen == argmax
            margins.append(round(top[0]["logprob"] - top[1]["logprob"], 4))
        greedy_entries.append({
            "name": name,
            "kind": kind,
            "prompt_text": text,
            "prompt_ids": ids,
            "generated_ids": a,
            "generated_text": llm.detokenize(a),
            "first_eog_index": eog_a,
            "top1_top2_logprob_margin": margins,
        })

    # Cross-check one prompt through the in-process binding API.
    fr = prompt_ids_by_name["capital_france"]
    body = Llama.greedy_body(fr, N_GEN)
    rr = llm.server.handle_completions(body)
    inproc_text = rr["choices"][0]["text"] if "choices" in rr else rr.get("content")
    ref = next(e for e in greedy_entries if e["name"] == "capital_france")
    inproc_ok = inproc_text == llm.detokenize(
        ref["generated_ids"][: ref["first_eog_index"]]
        if ref["first_eog_index"] is not None else ref["generated_ids"])
    if not inproc_ok:
        sys.exit(f"handle_completions disagrees with /completion: {inproc_text!r}")

    # ---- logits (top-N log-probabilities) --------------------------------
    logit_entries = []
    for name in spec["logit_prompts"]:
        ids = prompt_ids_by_name[name]
        r = llm.complete(Llama.greedy_body(ids, 1, n_probs=N_LOGITS))
        top = r["completion_probabilities"][0]["top_logprobs"]
        logit_entries.append({
            "name": name,
            "prompt_ids": ids,
            "top": [{"id": t["id"], "token": t["token"], "logprob": t["logprob"]}
                    for t in top],
        })

    doc = {
        "description": (
            "Golden outputs from llama.cpp (via the xllamacpp bindings) for "
            f"{spec['title']}; generated by scripts/llamacpp_goldens.py --name {args.name}"
        ),
        "model": {
            "file": os.path.basename(args.model),
            "sha256": sha,
            "architecture": meta.get("general.architecture"),
            "gguf_version": meta.get("gguf.version"),
            "file_type": props.get("model_ftype"),
            "tokenizer_metadata": tok_meta,
            "bos_token": props.get("bos_token"),
            "eos_token": props.get("eos_token"),
            "eog_token_ids": sorted(eog),
            "chat_template": meta.get("tokenizer.chat_template"),
        },
        "oracle": {
            "xllamacpp_version": xllamacpp.__version__,
            "xllamacpp_revision": ver.get("full-revisionid"),
            "xllamacpp_date": ver.get("date"),
            "llama_cpp_build_info": dict(xllamacpp.BUILD_INFO),
            "server_build_info": props.get("build_info"),
            "system_info": xllamacpp.get_system_info().strip(),
            "n_threads": N_THREADS,
            "n_ctx": N_CTX,
            "seed": SEED,
            "backend": "CPU",
        },
        "tokenization": {
            "method": (
                "llama.cpp server POST /tokenize with add_special=true, "
                "parse_special=true (special-token text such as <|im_start|> becomes "
                "its single id). 'ids_without_special_parsing' (only where it differs) "
                "is parse_special=false. 'pieces' are the per-token strings, or byte "
                "lists where a token is not valid UTF-8 alone. 'detokenized' is POST "
                "/detokenize of 'ids'."
            ),
            "add_bos_token": add_bos,
            "pre": meta.get("tokenizer.ggml.pre"),
            "bos_added": any(e["bos_added"] for e in tok_entries),
            "entries": tok_entries,
        },
        "greedy": {
            "method": (
                "llama.cpp server POST /completion with the prompt given as token ids "
                "(prompt_ids = /tokenize add_special=true parse_special=true), "
                "samplers=[top_k], top_k=1, temperature=0, no penalties/DRY/XTC/"
                "mirostat/logit bias. Generation runs 32 steps; when the model emits an "
                "EOG token the token is kept and generation continues after it, so "
                "generated_ids are always 32 argmax tokens; first_eog_index marks the "
                "first EOG (null if none). Each prompt ran three times (ids + n_probs, "
                "ids, string prompt) with identical results, and each chosen token "
                "equals the top-1 of llama.cpp's raw (pre-sampling) distribution. "
                "top1_top2_logprob_margin = logit(top1) - logit(top2) per step: small "
                "margins are where a correct independent implementation may diverge. "
                "generated_text = /detokenize of generated_ids (special tokens shown)."
            ),
            "n_generated": N_GEN,
            "entries": greedy_entries,
        },
        "logits": {
            "method": (
                "Raw logits are not exposed by the bindings; these are llama.cpp's "
                "top-10 next-token log-probabilities after the prompt, i.e. "
                f"log_softmax over the full {n_vocab:,}-token vocabulary of the raw logits "
                "(n_probs=10, post_sampling_probs=false, temperature not applied). "
                "Compare log_softmax(our logits), or differences of logits, which "
                "equal differences of these logprobs."
            ),
            "top_n": N_LOGITS,
            "entries": logit_entries,
        },
    }

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(dump(doc) + "\n")
    print(f"wrote {args.out}: {len(tok_entries)} tokenization, "
          f"{len(greedy_entries)} greedy, {len(logit_entries)} logits entries",
          file=sys.stderr)
    del llm


if __name__ == "__main__":
    main()
