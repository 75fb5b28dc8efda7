"""Records real llama.cpp server responses as fixtures for weir's tests.

    python tests/llama/record.py URL OUTDIR

URL is a running `python -m llama_cpp.server` (http://127.0.0.1:PORT) with
the model tests/llama/models.py calls tiny-2x64, started with
`--n_ctx 256`. Writes OUTDIR/<case>.json per case below:
{"case", "server", "request", "status", "content_type", "reads", "body"},
where `reads` is the body as the socket delivered it (one string per read,
so the server's own chunking is kept) and `body` their concatenation.

The cases cover what decides how weir meters a stream: chat and legacy
completions, streamed and not, `stream_options.include_usage` on and off,
a `length` and a `stop` finish, and a prompt beyond the context window.
Requests are greedy with a fixed seed, so a re-recording with the same
server version and model gives the same tokens (ids and timestamps
differ).
"""

import http.client
import importlib.metadata
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

MODEL = "tiny"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
# A short prompt, and one beyond --n_ctx 256 (one token per byte).
SHORT = "Say something about canaries."
LONG = "canary " * 60
# llama.cpp's end-of-sequence token in these models (tests/llama/models.py):
# biased up, the greedy choice ends the answer early with finish "stop".
EOS_BIAS = {"2": 3.0}


def chat(content, **extra):
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    body.update(temperature=0.0, seed=7, **extra)
    return CHAT, body


def completion(prompt, **extra):
    body = {"model": MODEL, "prompt": prompt}
    body.update(temperature=0.0, seed=7, **extra)
    return COMPLETIONS, body


USAGE = {"stream_options": {"include_usage": True}}
CASES = {
    "chat-stream-length": chat(SHORT, stream=True, max_tokens=16),
    "chat-stream-usage-length": chat(SHORT, stream=True, max_tokens=16, **USAGE),
    "chat-stream-stop": chat(SHORT, stream=True, max_tokens=64, logit_bias=EOS_BIAS),
    "chat-length": chat(SHORT, max_tokens=16),
    "chat-stop": chat(SHORT, max_tokens=64, logit_bias=EOS_BIAS),
    "chat-stream-overflow": chat(LONG, stream=True, max_tokens=16),
    "chat-overflow": chat(LONG, max_tokens=16),
    "completions-stream-length": completion(SHORT, stream=True, max_tokens=16),
    "completions-stream-usage-length": completion(SHORT, stream=True, max_tokens=16, **USAGE),
    "completions-length": completion(SHORT, max_tokens=16),
    "completions-stream-overflow": completion(LONG, stream=True, max_tokens=16),
}


def record(url, path, body):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    reads = []
    while True:
        piece = resp.read1(65536)
        if not piece:
            break
        reads.append(piece.decode("utf-8", errors="surrogateescape"))
    conn.close()
    return resp.status, resp.getheader("content-type"), reads


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__)
    url, out = argv[1], Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    server = f"llama-cpp-python {importlib.metadata.version('llama-cpp-python')}"
    for case, (path, body) in CASES.items():
        status, content_type, reads = record(url, path, body)
        doc = {
            "case": case,
            "server": server,
            "request": {"path": path, "body": body},
            "status": status,
            "content_type": content_type,
            "reads": reads,
            "body": "".join(reads),
        }
        (out / f"{case}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        print(f"{case}: {status} {content_type} {len(doc['body'])} bytes", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
