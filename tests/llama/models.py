"""Tiny LLaMA-architecture models for the tests that run a real llama.cpp server.

    python tests/llama/models.py        writes the models (once) and prints
                                        {"dir": DIR, "models": {NAME: PATH}}

No model can be downloaded where weir is tested, so the tests make their
own: seeded random weights in the LLaMA architecture, written as GGUF with
the `gguf` package, and a byte-level vocabulary (the three special tokens
and one token per byte, SentencePiece-style byte fallback), so that any
prompt tokenizes and every generated token decodes. The models talk
nonsense, but llama.cpp loads and runs them like any other: every token a
test sees was really computed by the server.

Two sizes, so that one is measurably slower per prompt token and per
output token than the other (the 8x256 model does about 60 times the
arithmetic per token of the 2x64 one):

    tiny-2x64     2 layers,  64 wide, 4 heads   (~0.7 MB)
    tiny-8x256    8 layers, 256 wide, 8 heads   (~34 MB)

The files are deterministic (fixed seeds, float32) and cached under
${WEIR_CACHE:-~/.cache/weir}/llama/<hash of this script>/: changing this
script writes new ones, running it again costs nothing. Each file is
written to a temporary name and renamed, so concurrent callers never see
half a model.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import gguf
import numpy as np

# name -> (layers, width, heads, seed)
SIZES = {
    "tiny-2x64": (2, 64, 4, 64),
    "tiny-8x256": (8, 256, 8, 256),
}
# The models' trained context; the server's n_ctx may be smaller.
CONTEXT = 4096
UNK, BOS, EOS = 0, 1, 2


def vocabulary():
    """Tokens, scores and types: <unk>, <s>, </s>, then <0x00>..<0xFF>."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    return tokens, [0.0] * len(tokens), types


def write(path, layers, width, heads, seed):
    """Writes one model to `path` (a temporary name, then renamed)."""
    rng = np.random.default_rng(seed)
    ff = 4 * width
    tokens, scores, types = vocabulary()

    def matrix(rows, cols):
        # Rows x cols as GGUF wants them (out x in), scaled so activations
        # stay near unit size through the layers.
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(path.stem)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(width)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(width // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(True)

    vocab = len(tokens)
    w.add_tensor("token_embd.weight", rng.standard_normal((vocab, width)).astype(np.float32))
    for i in range(layers):
        ones = np.ones(width, dtype=np.float32)
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", matrix(width, width))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones.copy())
        w.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(ff, width))
        w.add_tensor(f"blk.{i}.ffn_up.weight", matrix(ff, width))
        w.add_tensor(f"blk.{i}.ffn_down.weight", matrix(width, ff))
    w.add_tensor("output_norm.weight", np.ones(width, dtype=np.float32))
    w.add_tensor("output.weight", matrix(vocab, width))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def main():
    script = Path(__file__).read_bytes()
    key = hashlib.sha256(script).hexdigest()[:12]
    cache = Path(os.environ.get("WEIR_CACHE") or Path.home() / ".cache" / "weir")
    out = cache / "llama" / key
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, (layers, width, heads, seed) in SIZES.items():
        path = out / f"{name}.gguf"
        if not path.exists():
            print(f"==> writing {path}", file=sys.stderr)
            write(path, layers, width, heads, seed)
        models[name] = str(path)
    print(json.dumps({"dir": str(out), "models": models}))


if __name__ == "__main__":
    main()
