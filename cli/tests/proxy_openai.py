"""The real Python `openai` client through `weir proxy`, for cli/tests/proxy.rs.

    proxy_openai.py stream URL [CA]        one streamed chat completion: what arrived
                                           (CA: a PEM file, the only CA trusted for https)

URLs are OpenAI base URLs (http://127.0.0.1:PORT/v1). Prints one JSON object.
"""

import json
import sys

import openai

MODEL = "weir-sim"
MESSAGES = [{"role": "user", "content": "Say something."}]


def client(url, ca=None):
    # The openai client's own httpx defaults, trusting only `ca` when given.
    http_client = openai.DefaultHttpxClient(verify=ca) if ca else None
    return openai.OpenAI(
        base_url=url, api_key="x", max_retries=0, timeout=30.0, http_client=http_client
    )


def stream(url, ca=None):
    """Streams one completion; every chunk's content, the finish reason, usage."""
    raw = client(url, ca).chat.completions.with_raw_response.create(
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


def main(argv):
    if argv[1:2] == ["stream"] and len(argv) in (3, 4):
        result = stream(*argv[2:])
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
