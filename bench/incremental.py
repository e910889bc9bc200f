"""Updates that cost what changed: a big PDF ingested in full, then again after a one-page edit, in one run.

    full         Engine.ingest of the PDF into a fresh home (the embedding cache is empty)
    incremental  the same path again after page ``--edit-page`` was edited: the file's hash changed, so it is
                 planned, loaded and chunked again, but only the chunks whose text changed are embedded
                 (``embed/cache.py``); the target is <= 5 % of the full time
    uncached     (unless ``--no-baseline``) a second edit of the same page re-ingested with ``embed.cache``
                 off: what the same update cost before the cache

The edit replaces page N by its own text with one sentence added, drawn in Helvetica (its layout changes,
its page number stays). Each step reports wall seconds, the texts the embedder was given (a counting
wrapper), the stage seconds and the embedding cache's size. The embedder is loaded before the clock starts.

The full run uses R's reference manual (fullrefman.pdf, 2,415 pages): fetch it with
``/work/shared/data/fetch-docs-corpus DEST pdf`` and pass ``--pdf DEST/pdf/fullrefman.pdf``. ``--quick``
uses the gnuplot manual in examples/corpus (311 pages; split into page ranges like the big one). ``--pages N``
takes the first N pages only: a copy without the title and outline, and one that is not split below
``pipeline.pdf_page_threshold`` pages (then an edit moves the chunk boundaries of the pages after it).

    python bench/incremental.py --quick
    python bench/incremental.py --pdf /data/docs/pdf/fullrefman.pdf
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, environment, print_table, ratio, write_result
from pdf import QUICK_PDF, first_pages, page_count

sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from make_fixtures import pdf_bytes, text_page

TARGET = 0.05  # the target: re-ingesting after a one-page edit costs at most 5 % of the full ingest
FONTS = b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"


class CountingEmbedder:
    """The engine's embedder, counting the texts it is given (the cache's misses)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.texts = 0

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return self._inner.embed(texts)

    def take(self) -> int:
        n, self.texts = self.texts, 0
        return n


def page_text(pdf_path: Path, index: int) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(pdf_path))
    try:
        return pdf[index].get_textpage().get_text_range()
    finally:
        pdf.close()


def edited_copy(src: Path, index: int, sentence: str, dest: Path) -> Path:
    """``src`` with page ``index`` (0-based) replaced by its own text plus ``sentence``, drawn anew."""
    import pypdfium2 as pdfium

    lines = [ln[:95] for ln in page_text(src, index).splitlines() if ln.strip()][:40] + [sentence]
    patch = dest.with_suffix(".page.pdf")
    safe = [ln.encode("latin-1", "replace").decode("latin-1") for ln in lines]
    patch.write_bytes(pdf_bytes([text_page(safe)], FONTS))
    # Edited in place, not copied page by page into a new document: the title and the outline (which make the
    # chunk headers of every page) must stay, or every chunk would change.
    original, page = pdfium.PdfDocument(str(src)), pdfium.PdfDocument(str(patch))
    try:
        original.del_page(index)
        original.import_pages(page, [0], index=index)
        original.save(str(dest))
    finally:
        original.close()
        page.close()
    patch.unlink()
    return dest


def step(engine: Any, counting: CountingEmbedder, path: Path) -> dict[str, Any]:
    """One timed ingest of ``path``: its wall seconds, texts embedded and stages."""
    t0 = time.perf_counter()
    summary = engine.ingest([path])
    wall = time.perf_counter() - t0
    stats = engine.stores.meta.stats()
    return {"wall_s": wall, "committed": summary.ok, "chunks": summary.chunks, "embedded": counting.take(),
            "cache_entries": stats["embed_cache"], "index_chunks": stats["chunks"],
            "failed": [f"{s}: {r}" for s, r in summary.failed], "stages": summary.to_dict()["stages"]}


def run(pdf: Path, work: Path, edit_index: int, baseline: bool) -> dict[str, dict[str, Any]]:
    from fanrag.engine import Engine
    from fanrag.settings import Settings

    target = work / "manual.pdf"  # one path for every step: the same source, edited in place
    shutil.copy(pdf, target)
    settings = Settings.load(home=work / "home", env={})
    out: dict[str, dict[str, Any]] = {}
    with Engine.open(settings=settings) as engine:
        counting = CountingEmbedder(engine.embedder)
        engine.embedder = counting  # type: ignore[assignment]
        counting.embed(["warm up"])  # the model loaded and its first forward pass done before the clock
        counting.take()
        print("full ingest ...", file=sys.stderr, flush=True)
        out["full"] = step(engine, counting, target)
        edited_copy(pdf, edit_index, "This sentence was added by bench/incremental.py.", work / "edit.pdf")
        shutil.move(work / "edit.pdf", target)
        print(f"re-ingest after editing page {edit_index + 1} ...", file=sys.stderr, flush=True)
        out["incremental"] = step(engine, counting, target)
        if baseline:
            engine.settings = engine.settings.replace(embed={"cache": False})
            edited_copy(pdf, edit_index, "This sentence was edited again, with the cache off.", work / "edit.pdf")
            shutil.move(work / "edit.pdf", target)
            print("re-ingest after a second edit, cache off ...", file=sys.stderr, flush=True)
            out["uncached"] = step(engine, counting, target)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pdf", type=Path, default=None, help="the PDF (default with --quick: the gnuplot manual)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pages", type=int, default=None, help="only the first N pages")
    ap.add_argument("--edit-page", type=int, default=None, help="1-based page to edit (default: the middle one)")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the cache-off re-ingest (it costs about one more full ingest)")
    ap.add_argument("--name", default="incremental")
    ap.add_argument("--results-dir", type=Path, default=None, help="default: bench/results")
    args = ap.parse_args(argv)
    pdf = args.pdf or (QUICK_PDF if args.quick else None)
    if pdf is None or not pdf.is_file():
        print("pass --pdf PATH (see --help for fetching fullrefman.pdf), or --quick", file=sys.stderr)
        return 2
    pages = args.pages
    env0 = environment()
    work = Path(tempfile.mkdtemp(prefix="fanrag-bench-incremental-"))
    try:
        source = first_pages(pdf, pages, work / f"first-{pages}.pdf") if pages else pdf
        n_pages = page_count(source)
        edit_index = (args.edit_page - 1) if args.edit_page else n_pages // 2
        if not 0 <= edit_index < n_pages:
            print(f"--edit-page must be within 1..{n_pages}", file=sys.stderr)
            return 2
        steps = run(source, work, edit_index, args.baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    full, inc = steps["full"], steps["incremental"]
    ratios = {"incremental_over_full": ratio(inc["wall_s"], full["wall_s"]),
              "embedded_over_chunks": ratio(inc["embedded"], inc["chunks"])}
    if "uncached" in steps:
        ratios["uncached_over_incremental"] = ratio(steps["uncached"]["wall_s"], inc["wall_s"])
    share = ratios["incremental_over_full"]
    extra = {} if args.results_dir is None else {"results_dir": args.results_dir}
    path = write_result(args.name, {"pdf": str(pdf), "pages": n_pages, "first_pages": pages,
                                    "edited_page": edit_index + 1, "steps": steps, "ratios": ratios,
                                    "target": TARGET, "meets_target": share is not None and share <= TARGET},
                        env0, **extra)
    print_table(f"incremental: {pdf.name}, {n_pages} pages, page {edit_index + 1} edited",
                [{"step": k, **v} for k, v in steps.items()],
                ["step", "wall_s", "chunks", "embedded", "cache_entries", "index_chunks", "failed"])
    print(f"incremental / full wall: {share if share is None else round(share, 4)} (target <= {TARGET})")
    print(f"wrote {path}")
    return 0 if not any(s["failed"] for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
