"""Precompute per-token text features with a local T5 and write the ``.npz`` that
:class:`mmar.models.text.PrecomputedTextFeatures` reads.

Needs the optional ``transformers>=4.40,<5`` (its Flax T5; transformers 5 has no Flax models)
and a T5 the user already has on disk, as a Hugging Face directory holding the Flax (or, with
``--from-pt`` and torch installed, PyTorch) weights and the tokenizer files. Nothing is
downloaded. Captions come from a text file (one per line, blank lines skipped) or, with
``--bandai``, every caption :mod:`mmar.data.captions` generates::

    .venv/bin/python tools/precompute_text_features.py --model ~/models/t5-v1_1-base \\
        --bandai --max-len 20 --out /tmp/text/bandai_t5base.npz

MoScale's setting is T5-v1.1-base with 20 tokens (768-d); the file then plugs into
``TextCrossAttention(768, ..., max_len=20)``. Features are stored as float16 unless
``--dtype float32``; ``pooled`` is the masked mean of the token features. Over-long captions are
truncated with a warning (``--strict`` makes that an error).

The file format (see :mod:`mmar.models.text`): ``texts (N,) str``, ``features (N, L, D)``,
``mask (N, L) bool``, optional ``pooled (N, D)`` and ``encoder`` (a string). Any other encoder
(CLIP, an LLM) can write the same file with :func:`mmar.models.text.save_text_features`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmar.models.text import FlaxT5TextEncoder, hf_tokenize, precompute_text_features  # noqa: E402


def bandai_captions() -> list[str]:
    """Every caption :mod:`mmar.data.captions` generates, in a fixed order."""
    from mmar.data.captions import CONTENT_PHRASES, STYLE_PHRASES, all_captions

    out: list[str] = []
    for dataset, table in sorted(CONTENT_PHRASES.items()):
        for content in table:
            for style in STYLE_PHRASES:
                out.extend(all_captions(dataset, content, style))
    return list(dict.fromkeys(out))


def read_captions(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local Hugging Face T5 directory (weights + tokenizer)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--captions", help="text file, one caption per line")
    src.add_argument("--bandai", action="store_true", help="every caption mmar.data.captions generates")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--max-len", type=int, default=20, help="tokens per caption, EOS included (MoScale: 20)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--from-pt", action="store_true", help="the directory holds PyTorch weights (needs torch)")
    p.add_argument("--strict", action="store_true", help="error on captions longer than --max-len")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers import AutoTokenizer

    texts = bandai_captions() if args.bandai else read_captions(args.captions)
    tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    encoder, variables = FlaxT5TextEncoder.from_pretrained(args.model, max_len=args.max_len,
                                                           from_pt=args.from_pt)
    encode = jax.jit(encoder.encode)
    overflow = "error" if args.strict else "truncate"

    def encode_fn(batch: list[str]):
        ids, mask = hf_tokenize(tokenizer, batch, args.max_len, overflow=overflow)
        tokens, pooled = encode(variables, ids, mask)
        return np.asarray(tokens), mask, np.asarray(pooled)

    n = precompute_text_features(args.out, texts, encode_fn, batch_size=args.batch,
                                 encoder=str(args.model), dtype=np.dtype(args.dtype))
    print(f"wrote {n} captions x {args.max_len} tokens x {encoder.dim} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
