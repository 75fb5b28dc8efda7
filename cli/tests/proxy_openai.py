"""The real Python `openai` client through `weir proxy`, for cli/tests/proxy.rs.

    proxy_openai.py stream URL             one streamed chat completion: what arrived
    proxy_openai.py ttft DIRECT PROXY N    N requests to each URL, interleaved: TTFTs

URLs are OpenAI base URLs (http://127.0.0.1:PORT/v1). Prints one JSON object.
"""

import json
import sys
import time

import openai

MODEL = "weir-sim"
MESSAGES = [{"role": "user", "content": "Say something."}]


def client(url):
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=30.0)


def stream(url):
    """Streams one completion; every chunk's content, the finish reason, usage."""
    raw = client(url).chat.completions.with_raw_response.create(
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
        "cohort": raw.headers.get("x-weir-cohort"),
        "chunks": chunks,
        "contents": contents,
        "text": "".join(contents),
        "finish": finish,
        "usage": usage,
    }


def time_to_first_content(c):
    """Seconds from sending the request to the first chunk with content."""
    started = time.perf_counter()
    first = None
    for chunk in c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        # Read to the end so the pooled connection is reused by the next request.
    if first is None:
        raise SystemExit("a stream ended without content")
    return first


def ttft(direct_url, proxy_url, n):
    """n TTFTs per URL, alternating which goes first, after warming both pools."""
    direct, proxy = client(direct_url), client(proxy_url)
    for _ in range(3):
        time_to_first_content(direct)
        time_to_first_content(proxy)
    out = {"direct": [], "proxy": []}
    for i in range(n):
        order = [("direct", direct), ("proxy", proxy)]
        if i % 2:
            order.reverse()
        for name, c in order:
            out[name].append(time_to_first_content(c))
    return out


def main(argv):
    if argv[1:2] == ["stream"] and len(argv) == 3:
        result = stream(argv[2])
    elif argv[1:2] == ["ttft"] and len(argv) == 5:
        result = ttft(argv[2], argv[3], int(argv[4]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
