"""Ingestion throughput on a BEIR corpus.jsonl (SciFact by default), every variant in one invocation.

Variants (each in its own process, so each has its own peak RSS and nothing warm from another):

    fanrag       Engine.ingest into a fresh home: the whole staged pipeline, wall time
    floor        the embed-only floor: the very chunks fanrag committed (read back from its meta
                 store), embedded by the same default embedder in the same batching (groups of
                 embed.gather chunks, each length-sorted into the embedder's batches by embed())
    st-fp32      sentence-transformers, fp32, on the same chunks (the usual way to embed locally)
    sequential   a plain loop, one document at a time: load -> chunk -> embed -> write every store
    llamaindex   LlamaIndex IngestionPipeline (SentenceSplitter at the same chunk size, the same
                 MiniLM model through HuggingFaceEmbedding), num_workers 1 and 2, best kept
                 (only with --with-llamaindex)

Ratios: fanrag / floor (target <= 1.10: the pipeline hides load, chunk and write behind embedding),
st-fp32 / floor on the embed step (target >= 1.6), and each baseline's wall time / fanrag's.
Model loading is outside every timed region.

    python bench/ingest.py --quick              # first 500 documents
    python bench/ingest.py                      # all 5,183 SciFact documents
    python bench/ingest.py --with-llamaindex
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ROOT,
    MemorySampler,
    environment,
    print_table,
    ratio,
    run_json_subprocess,
    rusage_peaks_mb,
    write_result,
)

DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
QUICK_DOCS = 500
ST_BATCH = 32  # sentence-transformers' own default batch size (and LlamaIndex's HuggingFace embedder's)


def head_lines(src: Path, n: int, dest: Path) -> Path:
    """The first ``n`` non-blank lines of a JSONL file, as a new file."""
    kept = 0
    with open(src, "rb") as f, open(dest, "wb") as out:
        for line in f:
            if kept >= n:
                break
            if line.strip():
                out.write(line)
                kept += 1
    return dest


def _settings(home: Path) -> Any:
    from fanrag.settings import Settings

    return Settings.load(home=home, env={})  # defaults only: the environment must not tune one variant


# ------------------------------------------------------------------------------------------ variants


def variant_fanrag(corpus: Path, home: Path) -> dict[str, Any]:
    from fanrag.engine import Engine

    with Engine.open(home, settings=_settings(home)) as engine:
        engine.embedder  # noqa: B018 - load the model before the clock starts
        with MemorySampler() as mem:
            t0 = time.perf_counter()
            summary = engine.ingest([corpus])
            wall = time.perf_counter() - t0
    return {"wall_s": wall, "docs": summary.ok, "chunks": summary.chunks, "chunks_per_s": summary.chunks / wall,
            "failed": len(summary.failed), "stages": summary.to_dict()["stages"], "peak_tree_rss_mb": mem.peak_mb,
            **rusage_peaks_mb()}


def committed_chunk_texts(home: Path) -> list[str]:
    """The chunks a fanrag run committed, document by document, in chunk order."""
    from fanrag.stores import open_stores

    stores = open_stores(_settings(home), mode="read")
    try:
        docs = [d.doc_id for d in stores.meta.documents(status="committed")]
        ids = stores.meta.chunk_ids_of(docs)
        chunks = stores.meta.get_chunks(ids)
    finally:
        stores.close()
    ordered = sorted(chunks.values(), key=lambda c: (c.doc_id, c.position))
    return [c.text for c in ordered]


def variant_floor(home: Path) -> dict[str, Any]:
    from fanrag.embed import create_embedder

    settings = _settings(home)
    texts = committed_chunk_texts(home)
    embedder = create_embedder(settings.embed)
    embedder.embed(texts[: max(embedder.batch_size, 8)])  # warm-up: first run allocates the session's arenas
    gather = settings.embed.gather
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        for i in range(0, len(texts), gather):  # what the pipeline's embed stage hands over each time
            embedder.embed(texts[i: i + gather])
        wall = time.perf_counter() - t0
    embedder.close()
    return {"wall_s": wall, "chunks": len(texts), "chunks_per_s": len(texts) / wall, "embedder": embedder.name,
            "peak_tree_rss_mb": mem.peak_mb, **rusage_peaks_mb()}


def variant_st(home: Path) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from fanrag.embed.models import find_model_dir

    settings = _settings(home)
    texts = committed_chunk_texts(home)
    model_dir = find_model_dir(settings.embed.model)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = settings.embed.max_length
    model.encode(texts[:ST_BATCH], batch_size=ST_BATCH)
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        model.encode(texts, batch_size=ST_BATCH, normalize_embeddings=True)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "chunks": len(texts), "chunks_per_s": len(texts) / wall, "model": str(model_dir),
            "peak_tree_rss_mb": mem.peak_mb, **rusage_peaks_mb()}


def variant_sequential(corpus: Path, home: Path) -> dict[str, Any]:
    """The loop most RAG scripts are: nothing overlaps, every store is written per document."""
    from dataclasses import replace

    from fanrag.embed import create_embedder, load_tokenizer
    from fanrag.graph.factory import create_extractor
    from fanrag.ids import source_uri
    from fanrag.ingest.chunker import chunk_document
    from fanrag.ingest.loaders.jsonl import entry_document
    from fanrag.stores import open_stores

    settings = _settings(home)
    home.mkdir(parents=True, exist_ok=True)
    embedder = create_embedder(settings.embed)
    stores = open_stores(settings, mode="write", dim=embedder.dim, model=embedder.name)
    tok = load_tokenizer(embedder.tokenizer_spec())
    extractor = create_extractor(settings.stores.entity_extractor)
    c = settings.chunk
    uri = source_uri(corpus)
    docs = n_chunks = 0
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        with open(corpus, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                doc = entry_document(raw, uri, number)
                chunks = chunk_document(doc, tok, size=c.size, overlap=c.overlap, min_size=c.min_size)
                if extractor is not None and chunks:
                    found = extractor.extract([ch.text for ch in chunks])
                    chunks = [replace(ch, entities=tuple(e)) for ch, e in zip(chunks, found, strict=True)]
                vectors = embedder.embed([ch.text for ch in chunks])
                stores.meta.mark_pending([doc])
                stores.vectors.add(chunks, vectors)
                stores.keywords.add(chunks, {doc.doc_id: doc.title})
                stores.graph.add(chunks)
                stores.meta.commit([doc], chunks, {})
                docs += 1
                n_chunks += len(chunks)
        stores.vectors.flush()
        wall = time.perf_counter() - t0
    stores.close()
    embedder.close()
    return {"wall_s": wall, "docs": docs, "chunks": n_chunks, "chunks_per_s": n_chunks / wall,
            "peak_tree_rss_mb": mem.peak_mb, **rusage_peaks_mb()}


class TokenIds:
    """The embedder's tokenizer as LlamaIndex wants it (text -> token list), picklable for num_workers > 1
    (a lambda is not: LlamaIndex would silently drop it in the workers and count with tiktoken)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tok: Any = None

    def __call__(self, text: str) -> list[int]:
        if self._tok is None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(self.path)
            # tokenizer.json truncates and pads to 128: counts would all read 128 without these two
            self._tok.no_truncation()
            self._tok.no_padding()
        return self._tok.encode(text, add_special_tokens=False).ids

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_tok": None}


def variant_llamaindex(corpus: Path, home: Path, workers: int) -> dict[str, Any]:
    """LlamaIndex's IngestionPipeline: SentenceSplitter (same size and overlap, counted in the same
    tokenizer) then HuggingFaceEmbedding of the same local MiniLM, nodes kept in memory."""
    try:
        from llama_index.core import Document as LIDocument
        from llama_index.core.ingestion import IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    except ImportError as exc:
        return {"error": f"llama-index not installed ({exc.name}): pip install llama-index-core "
                         "llama-index-embeddings-huggingface"}
    from fanrag.embed.models import find_model_dir

    settings = _settings(home)
    model_dir = find_model_dir(settings.embed.model)
    docs = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                title, text = obj.get("title") or "", obj.get("text") or ""
                docs.append(LIDocument(text=f"{title}\n\n{text}" if title else text, id_=str(obj["_id"])))
    splitter = SentenceSplitter(chunk_size=settings.chunk.size, chunk_overlap=settings.chunk.overlap,
                                tokenizer=TokenIds(str(model_dir / "tokenizer.json")))
    embed = HuggingFaceEmbedding(model_name=str(model_dir), device="cpu", embed_batch_size=ST_BATCH,
                                 max_length=settings.embed.max_length)
    pipeline = IngestionPipeline(transformations=[splitter, embed])
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        nodes = pipeline.run(documents=docs, num_workers=workers if workers > 1 else None)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "docs": len(docs), "chunks": len(nodes), "chunks_per_s": len(nodes) / wall,
            "num_workers": workers, "peak_tree_rss_mb": mem.peak_mb, **rusage_peaks_mb()}


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    name = args.variant
    if name == "fanrag":
        return variant_fanrag(args.corpus, args.home)
    if name == "floor":
        return variant_floor(args.home)
    if name == "st-fp32":
        return variant_st(args.home)
    if name == "sequential":
        return variant_sequential(args.corpus, args.home)
    if name == "llamaindex":
        return variant_llamaindex(args.corpus, args.home, args.workers)
    raise SystemExit(f"unknown variant {name}")


# ------------------------------------------------------------------------------------------ orchestration


def compare(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The ratios the targets are stated in (None where a variant is missing or failed)."""
    def wall(name: str) -> float:
        r = results.get(name) or {}
        return 0.0 if "error" in r else float(r.get("wall_s", 0.0))

    return {
        "fanrag_over_floor": ratio(wall("fanrag"), wall("floor")),  # target <= 1.10
        "st_fp32_over_floor": ratio(wall("st-fp32"), wall("floor")),  # default embedder speed-up, target >= 1.6
        "sequential_over_fanrag": ratio(wall("sequential"), wall("fanrag")),
        "llamaindex_over_fanrag": ratio(wall("llamaindex"), wall("fanrag")),
    }


def orchestrate(corpus: Path, docs: int | None, with_llamaindex: bool, name: str, keep: Path | None) -> int:
    env0 = environment()
    source = corpus
    tmp = Path(tempfile.mkdtemp(prefix="fanrag-bench-ingest-"))
    try:
        if docs:
            corpus = head_lines(corpus, docs, tmp / "corpus.jsonl")
        me = str(Path(__file__).resolve())
        home = keep or tmp / "home"
        results: dict[str, dict[str, Any]] = {}
        plan = [("fanrag", ["--home", str(home)]), ("floor", ["--home", str(home)]),
                ("st-fp32", ["--home", str(home)]), ("sequential", ["--home", str(tmp / "seq-home")])]
        for variant, extra in plan:
            print(f"running {variant} ...", file=sys.stderr, flush=True)
            results[variant] = run_json_subprocess([me, "--variant", variant, "--corpus", str(corpus), *extra])
            if variant == "fanrag" and "error" in results[variant]:
                break  # every other variant reads fanrag's chunks
        if with_llamaindex:
            tries = []
            for workers in (1, 2):
                print(f"running llamaindex num_workers={workers} ...", file=sys.stderr, flush=True)
                tries.append(run_json_subprocess([me, "--variant", "llamaindex", "--corpus", str(corpus),
                                                  "--home", str(tmp / "li"), "--workers", str(workers)]))
            ok = [t for t in tries if "error" not in t]
            results["llamaindex"] = min(ok, key=lambda t: t["wall_s"]) if ok else tries[-1]
            results["llamaindex"]["tries"] = [{k: t.get(k) for k in ("num_workers", "wall_s", "error")}
                                              for t in tries]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = compare(results)
    path = write_result(name, {"corpus": str(source), "first_docs": docs,
                               "variants": results, "ratios": ratios,
                               "targets": {"fanrag_over_floor": "<= 1.10", "st_fp32_over_floor": ">= 1.6"}}, env0)
    rows = [{"variant": k, **v} for k, v in results.items()]
    print_table(f"ingest: {source}" + (f" (first {docs} documents)" if docs else ""), rows,
                ["variant", "wall_s", "chunks", "chunks_per_s", "peak_tree_rss_mb", "error"])
    print_table("ratios", [{"ratio": k, "value": v} for k, v in ratios.items()], ["ratio", "value"])
    print(f"wrote {path}")
    return 0 if all("error" not in v for k, v in results.items() if k != "llamaindex") else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--quick", action="store_true", help=f"first {QUICK_DOCS} documents")
    ap.add_argument("--docs", type=int, default=None, help="only the first N documents")
    ap.add_argument("--with-llamaindex", action="store_true")
    ap.add_argument("--name", default="ingest", help="result file name (bench/results/NAME.json)")
    ap.add_argument("--keep-home", type=Path, default=None, help="build fanrag's index here and keep it")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    ap.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0
    if not args.corpus.is_file():
        print(f"no corpus at {args.corpus} (pass --corpus)", file=sys.stderr)
        return 2
    docs = args.docs or (QUICK_DOCS if args.quick else None)
    return orchestrate(args.corpus, docs, args.with_llamaindex, args.name, args.keep_home)


if __name__ == "__main__":
    sys.exit(main())
