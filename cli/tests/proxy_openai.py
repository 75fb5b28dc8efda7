"""The real Python `openai` client through `weir proxy`, for cli/tests/proxy.rs.

    proxy_openai.py stream URL [CA] [--http2]
        one streamed chat completion: what arrived, and over which HTTP version
        (CA: a PEM file, the only CA trusted for https; --http2: HTTP/2 only,
        by ALPN over https and with prior knowledge (h2c) over http)

URLs are OpenAI base URLs (http://127.0.0.1:PORT/v1). Prints one JSON object.
"""

import json
import sys

import openai

MODEL = "weir-sim"
MESSAGES = [{"role": "user", "content": "Say something."}]


def client(url, ca=None, http2=False):
    # The openai client's own httpx defaults, trusting only `ca` when given.
    options = {}
    if ca:
        options["verify"] = ca
    if http2:
        # HTTP/2 needs the `h2` package (tests/requirements.txt). Without
        # HTTP/1.1 the client speaks h2 from the first byte over plain http.
        options.update(http1=False, http2=True)
    http_client = openai.DefaultHttpxClient(**options) if options else None
    return openai.OpenAI(
        base_url=url, api_key="x", max_retries=0, timeout=30.0, http_client=http_client
    )


def stream(url, ca=None, http2=False):
    """Streams one completion; every chunk's content, the finish reason, usage."""
    raw = client(url, ca, http2).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    contents, finish, usage, chunks = [], None, None, 0
    for chunk in raw.parse():
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                contents.append(choice.delta.content)
            finish = choice.finish_reason or finish
    return {
        "version": openai.__version__,
        "http_version": raw.http_response.http_version,
        "cohort": raw.headers.get("x-weir-cohort"),
        "chunks": chunks,
        "contents": contents,
        "text": "".join(contents),
        "finish": finish,
        "usage": usage,
    }


def main(argv):
    args = [a for a in argv[2:] if a != "--http2"]
    if argv[1:2] == ["stream"] and len(args) in (1, 2):
        result = stream(*args, http2="--http2" in argv)
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
