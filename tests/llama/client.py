"""The real `openai` client against llama.cpp servers, for cli/tests/llama.rs.

    client.py agree PROXY ADMIN DIRECT N     N streamed chats through the proxy,
                                             each followed by the proxy's
                                             observations and the server's own
                                             count of the same completion
    client.py load URL RATE SECONDS SHORTEST LONGEST
                                             open-loop streamed chats at RATE/s,
                                             prompts of SHORTEST..LONGEST bytes
    client.py warm URL N                     N short chats, one at a time

PROXY and DIRECT are OpenAI base URLs (http://127.0.0.1:PORT/v1), ADMIN the
proxy's admin listener (http://127.0.0.1:PORT). Prints one JSON object.

Completions are greedy (temperature 0) with a fixed seed, so the same
request sent twice gets the same tokens: the non-streamed copy's `usage`
is the server's count of what the streamed one generated (llama.cpp's
server sends no usage chunk in a stream, even with `include_usage`).
"""

import json
import random
import sys
import threading
import time
import urllib.request

import openai

MODEL = "tiny"
MAX_TOKENS = 24


def client(url, timeout=60.0):
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=timeout)


def prompt(rng, shortest, longest):
    """A prompt of shortest..longest bytes (one token per byte here)."""
    n = rng.randint(shortest, longest)
    words = []
    while sum(len(w) + 1 for w in words) < n:
        words.append(rng.choice(["weir", "canary", "stable", "token", "llama", "stream"]))
    return " ".join(words)[:n]


def request(text):
    return dict(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        seed=7,
    )


def stream(c, text):
    """One streamed chat: what the client saw."""
    started = time.perf_counter()
    first_chunk = first_content = None
    chunks = token_events = 0
    contents, finish = [], None
    for chunk in c.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **request(text)
    ):
        now = time.perf_counter() - started
        chunks += 1
        if first_chunk is None:
            first_chunk = now
        for choice in chunk.choices:
            content = choice.delta.content
            # Every generated token is one chunk with a `content` string,
            # "" when it ends inside a UTF-8 character.
            if content is not None and choice.finish_reason is None:
                token_events += 1
            if content:
                contents.append(content)
                if first_content is None:
                    first_content = now
            finish = choice.finish_reason or finish
    return {
        "ttft": first_chunk,
        "first_content": first_content,
        "seconds": time.perf_counter() - started,
        "chunks": chunks,
        "token_events": token_events,
        "content_events": len(contents),
        "finish": finish,
    }


def observations(admin, requests=0):
    """The proxy's observations once it has recorded `requests` requests
    in all and has none in flight: the client reads a stream's last byte a
    moment before the proxy records the request."""
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{admin}/v1/observations", timeout=10) as r:
            doc = json.load(r)
        done = sum(sum(c["requests"].values()) for c in doc["cohorts"])
        idle = all(c["inflight"] == 0 for c in doc["cohorts"])
        if (done >= requests and idle) or time.monotonic() > deadline:
            return doc
        time.sleep(0.005)


def agree(proxy, admin, direct, n):
    rng = random.Random(16)
    through, server = client(proxy), client(direct)
    before = observations(admin)
    done = sum(sum(c["requests"].values()) for c in before["cohorts"])
    out = {"version": openai.__version__, "before": before, "requests": []}
    for i in range(n):
        text = prompt(rng, 8, 64)
        seen = stream(through, text)
        seen["after"] = observations(admin, done + i + 1)
        usage = server.chat.completions.create(**request(text)).usage
        seen["usage"] = usage.completion_tokens
        out["requests"].append(seen)
    return out


def load(url, rate, seconds, shortest, longest):
    """Open loop: request i starts at i/rate s, whatever the others do."""
    rng = random.Random(16)
    c = client(url, timeout=120.0)
    results, lock = [], threading.Lock()

    def one(text):
        try:
            seen = stream(c, text)
            outcome = "ok" if seen["finish"] else "no_finish"
        except Exception as e:  # noqa: BLE001 - any failure is an outcome here
            outcome = type(e).__name__
        with lock:
            results.append({"prompt": len(text), "outcome": outcome})

    threads = []
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one, args=(prompt(rng, shortest, longest),), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout=180)
    outcomes = {}
    for r in results:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    return {"sent": len(threads), "outcomes": outcomes}


def warm(url, n):
    """Short prompts (8..24 bytes, ~60 tokens with the chat template, 27
    at most generated) that fit a 128-token context."""
    c = client(url)
    rng = random.Random(5)
    for _ in range(n):
        stream(c, prompt(rng, 8, 24))
    return {"warmed": n}


def main(argv):
    cmd, args = argv[1:2], argv[2:]
    if cmd == ["agree"] and len(args) == 4:
        result = agree(args[0], args[1], args[2], int(args[3]))
    elif cmd == ["load"] and len(args) == 5:
        result = load(args[0], float(args[1]), float(args[2]), int(args[3]), int(args[4]))
    elif cmd == ["warm"] and len(args) == 2:
        result = warm(args[0], int(args[1]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
