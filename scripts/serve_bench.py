#!/usr/bin/env python3
"""The load generator of `cargo xtask bench serve`: OpenAI-SDK clients against a chat server.

Two commands:

  llamacpp-server  starts llama.cpp's own HTTP server in this process (the `xllamacpp`
                   wheel: `xllamacpp.Server(params)`, listening on a random 127.0.0.1 port),
                   prints one JSON line `{"base_url": ...}` on stdout, and serves until its
                   stdin is closed.
  load             runs workloads against a server that is already up and prints one JSON
                   object on the last line of stdout with every figure (progress on stderr).

`load` runs N concurrent clients (asyncio, the official `openai.AsyncOpenAI`, streaming with
`stream_options: {"include_usage": true}`), each taking requests from one shared queue until
`--requests` are done. Per request it measures the time to the first content delta (TTFT),
the end-to-end latency and the completion tokens (from the stream's usage), and checks the
reply: a structured reply must parse as JSON and validate under its schema (`jsonschema`),
end with `finish_reason: "stop"`; a plain reply must be non-empty. Per workload it reports the
aggregate tokens/s (all completion tokens over the workload's wall time, from the first
request sent to the last reply ended), TTFT mean and p99, latency p50 and p99, valid/total.
One warm-up request (not counted) runs before each workload.

Workloads, all chat completions, the same messages for every server:

  structured     short user turns ("Describe a fictional person named X ...") with a
                 `response_format` JSON schema of five properties.
  shared-prompt  the same structured turns behind one long (~900-token) system prompt.
  multi-turn     6-turn conversations, each turn re-sending the whole history (the
                 assistant's replies appended) with one more user message; plain text.
                 ceil(requests / 6) conversations, the last one cut short so that exactly
                 `--requests` turns run; each turn counts as one request.
  plain          the short turns of `structured` without the schema.

Sampling is the same for every server and reproducible: temperature 0.7, top_p 1, top_k and
min_p off (llama.cpp's server defaults to top_k 40 and min_p 0.05 otherwise), seed = the
request's index (conversation x 6 + turn for multi-turn), `max_tokens` as given.

    python3 -m venv target/serve-bench-venv
    target/serve-bench-venv/bin/pip install xllamacpp==2026.10.11549 openai==3.63.0 \\
        jsonschema==4.26.0
    target/serve-bench-venv/bin/python scripts/serve_bench.py llamacpp-server \\
        --threads 2 --slots 8 --ctx-per-slot 8192 [--model FILE.gguf]
    target/serve-bench-venv/bin/python scripts/serve_bench.py load \\
        --base-url http://127.0.0.1:PORT --server formwork|llamacpp --clients 8 \\
        --requests 32 --max-tokens 160 [--workloads structured,shared-prompt,multi-turn,plain]

`cargo xtask bench serve` starts both servers, runs this against each, one after the other,
and prints the tables.
"""

import argparse
import asyncio
import importlib.metadata
import json
import math
import os
import sys
import time
import urllib.request

WORKLOADS = ["structured", "shared-prompt", "multi-turn", "plain"]
TURNS = 6
TEMPERATURE = 0.7

NAMES = [
    "Amara Okafor", "Lars Lindqvist", "Mei Chen", "Diego Alvarez", "Priya Raman",
    "Tomasz Nowak", "Aiko Tanaka", "Fatima Haddad", "Jonas Becker", "Chloe Martin",
    "Kwame Mensah", "Sofia Rossi", "Ivan Petrov", "Leila Farahani", "Mateo Silva",
    "Hannah Schmidt", "Ravi Kapoor", "Nora Fitzgerald", "Yusuf Demir", "Elena Popescu",
    "Kenji Watanabe", "Grace Mwangi", "Oscar Nilsson", "Isabel Duarte", "Arjun Mehta",
    "Zara Ahmed", "Felix Wagner", "Lucia Fernandez", "Samuel Osei", "Ingrid Haugen",
    "Omar Khalil", "Julia Novak",
]

# The small schema of the table: a few required properties, bounded strings.
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "occupation": {"type": "string", "maxLength": 40},
        "city": {"type": "string", "maxLength": 40},
        "hobbies": {
            "type": "array",
            "items": {"type": "string", "maxLength": 30},
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "occupation", "city", "hobbies"],
    "additionalProperties": False,
}

RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "person", "strict": True, "schema": PERSON_SCHEMA},
}

# One long system prompt shared by every request of `shared-prompt` (about 900 tokens with
# SmolLM2's tokenizer; the figure each server's /tokenize gives is in the report).
SYSTEM_PROMPT = """You are Atlas, the character-design assistant of Lanternfish Studios, a small \
independent company that writes interactive fiction, tabletop role-playing campaigns and \
narrative video games. Writers, game masters and designers come to you when they need a \
believable supporting character quickly: a shopkeeper for a harbour town, a rival scientist, a \
retired pilot who runs a bed and breakfast, a teenager who knows every shortcut through the old \
quarter. Your job is to invent that person so that a writer can drop them into a scene within a \
minute and have them feel lived-in.

How you work:

1. Read the request carefully. The writer usually gives you a name and sometimes a setting, a \
role in the story, or a mood. Keep everything they give you exactly as written. Never rename a \
character, never change a stated age, occupation or place, and never contradict a detail the \
writer has already established, even if you think another choice would be more interesting.

2. Fill in what is missing with choices that are specific and ordinary at the same time. A good \
supporting character is rarely extraordinary; they are precise. Prefer "repairs fishing nets \
and sells smoked mackerel on Saturdays" to "a mysterious fisherman". Prefer a real-sounding \
city or town that fits the name and the setting to an invented kingdom, unless the writer asks \
for a fantasy world. Ages should be plausible for the occupation: a head surgeon is rarely \
twenty-three, an apprentice is rarely sixty.

3. Give every character two or three hobbies or habits that a reader could notice in a scene: \
things they do with their hands, places they go, objects they carry. Avoid hobbies that are \
only labels ("likes music"); say what kind and how ("plays bass in a wedding band", "collects \
enamel pins from train stations"). Hobbies should not repeat the occupation.

4. Keep the tone warm, grounded and free of stereotypes. Do not base characters on real, \
living people. Do not give characters medical diagnoses, criminal records, religious or \
political affiliations unless the writer explicitly asks for them, and never in a mocking way. \
Characters of every background should be written with the same care and specificity.

5. Be brief. Writers read your answers between other tasks. Use short phrases rather than full \
paragraphs inside structured fields, and do not add commentary, greetings, apologies or \
explanations of your choices. If the writer asks for a particular format, such as JSON, answer \
with that format only, with nothing before or after it.

6. Stay consistent within a conversation. If the writer asks follow-up questions about a \
character you already described, answer from what you already said. If they ask for a change, \
change only what they asked for and keep the rest.

About the studio, in case a writer asks:

Lanternfish Studios was founded by four friends who met in a university theatre group. The \
studio has twelve employees and works from a converted printing house near the river. Its \
best-known work is "The Lighthouse Ledger", a branching mystery set on a northern island, in \
which the player keeps the accounts of a lighthouse keeper and slowly discovers who has been \
adding entries at night. The studio is currently writing "Night Market", a campaign book for \
tabletop groups set in a city where the market only opens after sunset, and "Tidewater", a \
narrative game about a family running a ferry between two towns that no longer speak to each \
other. Most of the characters you design end up in one of these projects, so markets, harbours, \
ferries, islands and small river towns come up often, but you should not assume a setting the \
writer has not given.

Formatting rules for structured answers:

- Names are written as the writer gave them, with the same spelling and capitalisation.
- Ages are whole numbers of years.
- Occupations are short noun phrases in lower case, such as "ferry mechanic" or "night-market \
noodle cook".
- Cities are real or realistic place names without the country, such as "Bergen" or "Porto".
- Hobbies are a list of at most three short phrases.
- Every field the format requires must be present, and no other field may be added.

If a request is unclear, make the most reasonable choice and answer anyway; the writer can \
always ask again. If a request asks for something outside character design, such as writing \
a whole chapter, answer briefly that you only design characters and offer a character that \
would fit the request instead. Thank you for helping our writers build their worlds."""

TRIP_CITIES = [
    "Lisbon", "Kyoto", "Oaxaca", "Edinburgh", "Hanoi", "Cape Town", "Tallinn", "Montreal",
    "Istanbul", "Valparaiso", "Krakow", "Marrakesh", "Seoul", "Bologna", "Quebec City",
    "Tbilisi",
]

FOLLOW_UPS = [
    "What is a good local dish to try there?",
    "How many days would you recommend staying?",
    "What is the best way to get around the city?",
    "Any tips for a rainy day?",
    "Summarize your advice in three sentences.",
]


def person_turn(i):
    return f"Describe a fictional person named {NAMES[i % len(NAMES)]} in JSON."


def plain_turn(i):
    return f"Describe a fictional person named {NAMES[i % len(NAMES)]}."


def percentile(xs, q):
    """The q-th percentile of xs, linearly interpolated between the closest ranks."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def mean(xs):
    return sum(xs) / len(xs) if xs else None


def http_json(url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# llama.cpp's server


def llamacpp_server(a):
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = a.model
    p.n_parallel = a.slots
    # Each slot gets n_ctx / n_parallel tokens (kv_unified is off by default): the same
    # context per sequence, and the same KV budget in all, as `formwork serve` is given.
    p.n_ctx = a.slots * a.ctx_per_slot
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    # Everything else (prompt caching, continuous batching, batch sizes) is the server's
    # default.
    server = xllamacpp.Server(p)
    print(json.dumps({
        "base_url": server.listening_address,
        "xllamacpp": getattr(xllamacpp, "__version__", "?"),
    }), flush=True)
    sys.stdin.read()
    os._exit(0)


# ---------------------------------------------------------------------------
# Load


class Request:
    """One chat request: its messages, structure, seed, and what came back."""

    def __init__(self, index, messages, structured, conversation=None, turn=None):
        self.index = index
        self.messages = messages
        self.structured = structured
        self.conversation = conversation
        self.turn = turn
        self.text = ""
        self.ttft = None
        self.latency = None
        self.completion_tokens = None
        self.prompt_tokens = None
        self.cached_tokens = None
        self.finish_reason = None
        self.valid = False
        self.error = None

    def record(self):
        out = {
            "index": self.index,
            "ttft_s": self.ttft,
            "latency_s": self.latency,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "finish_reason": self.finish_reason,
            "valid": self.valid,
            "chars": len(self.text),
        }
        if self.conversation is not None:
            out["conversation"] = self.conversation
            out["turn"] = self.turn
        if self.error:
            out["error"] = self.error
        return out


def check(req, validator):
    """Whether the reply is what was asked: a valid document ended by `stop`, or some text."""
    if not req.structured:
        return bool(req.text.strip())
    if req.finish_reason != "stop":
        return False
    try:
        doc = json.loads(req.text)
    except ValueError:
        return False
    return validator.is_valid(doc)


async def send(client, model, req, max_tokens, validator):
    """Sends `req`, streaming, and fills in its measurements."""
    extra = {}
    if req.structured:
        extra["response_format"] = RESPONSE_FORMAT
    t0 = time.perf_counter()
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=req.messages,
            max_tokens=max_tokens,
            temperature=TEMPERATURE,
            top_p=1.0,
            seed=req.index,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"top_k": 0, "min_p": 0.0},
            **extra,
        )
        parts = []
        async for chunk in stream:
            if chunk.usage is not None:
                req.completion_tokens = chunk.usage.completion_tokens
                req.prompt_tokens = chunk.usage.prompt_tokens
                details = getattr(chunk.usage, "prompt_tokens_details", None)
                req.cached_tokens = getattr(details, "cached_tokens", None)
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    if req.ttft is None:
                        req.ttft = time.perf_counter() - t0
                    parts.append(choice.delta.content)
                if choice.finish_reason:
                    req.finish_reason = choice.finish_reason
        req.text = "".join(parts)
        req.latency = time.perf_counter() - t0
        if req.completion_tokens is None:
            req.error = "the stream carried no usage"
        req.valid = req.error is None and check(req, validator)
    except Exception as e:  # one failed request is a figure, not the end of the run
        req.latency = time.perf_counter() - t0
        req.error = f"{type(e).__name__}: {e}"
        req.valid = False


def single_turns(workload, count):
    """The requests of a one-turn workload, by index."""
    out = []
    for i in range(count):
        if workload == "plain":
            messages = [{"role": "user", "content": plain_turn(i)}]
        else:
            messages = [{"role": "user", "content": person_turn(i)}]
            if workload == "shared-prompt":
                messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        out.append(Request(i, messages, structured=workload != "plain"))
    return out


def conversations(count):
    """The turn counts of the multi-turn workload: `count` turns in conversations of TURNS."""
    n = math.ceil(count / TURNS)
    return [min(TURNS, count - c * TURNS) for c in range(n)]


async def run_conversation(client, model, c, turns, max_tokens, validator, done):
    history = []
    for t in range(turns):
        if t == 0:
            city = TRIP_CITIES[c % len(TRIP_CITIES)]
            question = f"I'm planning a trip to {city}. What should I see first?"
        else:
            question = FOLLOW_UPS[(t - 1) % len(FOLLOW_UPS)]
        history.append({"role": "user", "content": question})
        req = Request(c * TURNS + t, list(history), structured=False, conversation=c, turn=t)
        await send(client, model, req, max_tokens, validator)
        done.append(req)
        if req.error:
            return
        history.append({"role": "assistant", "content": req.text})


async def run_workload(client, model, workload, a, validator):
    """Runs `workload` once (after a warm-up request); returns its report."""
    warm = single_turns("plain" if workload == "multi-turn" else workload, 1)[0]
    warm.index = 10_000
    await send(client, model, warm, a.max_tokens, validator)
    if warm.error:
        log(f"  warm-up failed: {warm.error}")
    queue = asyncio.Queue()
    done = []
    if workload == "multi-turn":
        for c, turns in enumerate(conversations(a.requests)):
            queue.put_nowait((c, turns))
    else:
        for req in single_turns(workload, a.requests):
            queue.put_nowait(req)

    async def client_loop():
        while True:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if workload == "multi-turn":
                c, turns = job
                await run_conversation(client, model, c, turns, a.max_tokens, validator, done)
            else:
                await send(client, model, job, a.max_tokens, validator)
                done.append(job)

    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(a.clients)))
    wall = time.perf_counter() - start
    done.sort(key=lambda r: r.index)
    ok = [r for r in done if r.error is None]
    tokens = sum(r.completion_tokens or 0 for r in ok)
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    latencies = [r.latency for r in ok]
    finish = {}
    for r in done:
        finish[str(r.finish_reason)] = finish.get(str(r.finish_reason), 0) + 1
    errors = [r.error for r in done if r.error]
    report = {
        "workload": workload,
        "requests": len(done),
        "clients": a.clients,
        "max_tokens": a.max_tokens,
        "wall_s": wall,
        "completion_tokens": tokens,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
        "cached_tokens": sum(r.cached_tokens or 0 for r in ok),
        "agg_tok_s": tokens / wall if wall > 0 else None,
        "ttft_mean_s": mean(ttfts),
        "ttft_p99_s": percentile(ttfts, 99),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "valid": sum(r.valid for r in done),
        "total": len(done),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "finish_reasons": finish,
        "per_request": [r.record() for r in done],
    }
    return report


def server_facts(base, server):
    """What the server says about itself: its model name, the system prompt's token count,
    and its context per sequence."""
    facts = {"model": http_json(base + "/v1/models")["data"][0]["id"]}
    if server == "formwork":
        t = http_json(base + "/tokenize", {"prompt": SYSTEM_PROMPT, "add_special_tokens": False})
        facts["system_prompt_tokens"] = t["count"]
        facts["context_per_sequence"] = t["max_model_len"]
    else:
        t = http_json(base + "/tokenize", {"content": SYSTEM_PROMPT})
        facts["system_prompt_tokens"] = len(t["tokens"])
        props = http_json(base + "/props")
        facts["context_per_sequence"] = props.get("default_generation_settings", {}).get("n_ctx")
    return facts


async def load_main(a):
    import jsonschema
    import openai

    validator = jsonschema.Draft202012Validator(PERSON_SCHEMA)
    base = a.base_url.rstrip("/")
    facts = server_facts(base, a.server)
    log(f"{a.server}: model {facts['model']}, system prompt {facts['system_prompt_tokens']} "
        f"tokens, context per sequence {facts['context_per_sequence']}")
    client = openai.AsyncOpenAI(
        base_url=base + "/v1",
        api_key="unused",
        timeout=600.0,
        max_retries=0,
    )
    reports = []
    for workload in a.workloads:
        log(f"{a.server}: {workload}, {a.requests} requests from {a.clients} clients")
        r = await run_workload(client, facts["model"], workload, a, validator)
        log(f"{a.server}: {workload}: {r['agg_tok_s']:.1f} tok/s, TTFT mean "
            f"{r['ttft_mean_s'] or float('nan'):.2f} s, valid {r['valid']}/{r['total']}")
        reports.append(r)
    await client.close()
    return {
        "server": a.server,
        "base_url": base,
        "openai": openai.__version__,
        "jsonschema": importlib.metadata.version("jsonschema"),
        "temperature": TEMPERATURE,
        **facts,
        "workloads": reports,
    }


def workloads(text):
    names = [w.strip() for w in text.split(",") if w.strip()]
    for w in names:
        if w not in WORKLOADS:
            raise argparse.ArgumentTypeError(f"unknown workload {w!r} (expected {', '.join(WORKLOADS)})")
    return names


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("llamacpp-server", help="serve a GGUF with llama.cpp until stdin closes")
    s.add_argument("--model", default=os.path.join(repo, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    s.add_argument("--threads", type=int, required=True)
    s.add_argument("--slots", type=int, required=True)
    s.add_argument("--ctx-per-slot", type=int, required=True)
    ld = sub.add_parser("load", help="run the workloads against a server")
    ld.add_argument("--base-url", required=True)
    ld.add_argument("--server", choices=["formwork", "llamacpp"], required=True)
    ld.add_argument("--clients", type=int, required=True)
    ld.add_argument("--requests", type=int, required=True)
    ld.add_argument("--max-tokens", type=int, required=True)
    ld.add_argument("--workloads", type=workloads, default=list(WORKLOADS))
    a = ap.parse_args()
    if a.command == "llamacpp-server":
        llamacpp_server(a)
    else:
        print(json.dumps(asyncio.run(load_main(a))), flush=True)


if __name__ == "__main__":
    main()
