"""One big PDF: single process vs page-range fan-out, same invocation.

    single   pipeline.pdf_page_threshold huge: the whole PDF is one job in one worker process
    fanout   pipeline.pdf_page_threshold small: ranges of pipeline.pages_per_range pages, one job each,
             spread over the worker processes, merged in page order before the document is written

Both run Engine.ingest into a fresh home in their own process; the report gives pages/s end to end
(embedding included, as a user sees it), the load+chunk CPU seconds, peak RSS of the process tree and
of the largest child, and the fan-out speed-up.

The full run uses R's reference manual (fullrefman.pdf, 2,415 pages): fetch it with
``/work/shared/data/fetch-docs-corpus DEST pdf`` and pass ``--pdf DEST/pdf/fullrefman.pdf``. ``--quick``
uses the first ``--pages`` (default 120) pages of the gnuplot manual in examples/corpus.

    python bench/pdf.py --quick
    python bench/pdf.py --pdf /data/docs/pdf/fullrefman.pdf
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

QUICK_PDF = ROOT / "examples" / "corpus" / "gnuplot-5.4-manual.pdf"
HUGE = 1_000_000_000


def first_pages(src: Path, n: int, dest: Path) -> Path:
    """A copy of the first ``n`` pages of a PDF (pdfium copies the page objects, text and fonts)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(src))
    try:
        out = pdfium.PdfDocument.new()
        out.import_pages(pdf, list(range(min(n, len(pdf)))))
        out.save(str(dest))
        out.close()
    finally:
        pdf.close()
    return dest


def page_count(path: Path) -> int:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        return len(pdf)
    finally:
        pdf.close()


def pipeline_overrides(mode: str, threshold: int, pages_per_range: int) -> dict[str, Any]:
    if mode == "single":
        return {"pdf_page_threshold": HUGE}
    if mode == "fanout":
        return {"pdf_page_threshold": threshold, "pages_per_range": pages_per_range}
    raise ValueError(f"unknown mode {mode!r}")


def variant(pdf: Path, home: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from fanrag.engine import Engine
    from fanrag.settings import Settings

    settings = Settings.load(home=home, overrides={"pipeline": overrides}, env={})
    with Engine.open(home, settings=settings) as engine:
        engine.embedder  # noqa: B018 - model loaded before the clock starts
        with MemorySampler() as mem:
            t0 = time.perf_counter()
            summary = engine.ingest([pdf])
            wall = time.perf_counter() - t0
    return {"wall_s": wall, "pages": summary.pages, "pages_per_s": summary.pages / wall, "chunks": summary.chunks,
            "failed": [f"{s}: {r}" for s, r in summary.failed], "load_chunk_cpu_s": summary.stages.load_chunk,
            "embed_s": summary.stages.embed, "workers": settings.pipeline.workers or settings.cores,
            "peak_tree_rss_mb": mem.peak_mb, **rusage_peaks_mb()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pdf", type=Path, default=None, help="the PDF (default with --quick: the gnuplot manual)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pages", type=int, default=None, help="only the first N pages (--quick: 120)")
    ap.add_argument("--threshold", type=int, default=16, help="fanout: pdf_page_threshold")
    ap.add_argument("--pages-per-range", type=int, default=None, help="fanout: default pipeline.pages_per_range")
    ap.add_argument("--name", default="pdf")
    ap.add_argument("--variant-json", default=None, help=argparse.SUPPRESS)  # internal: one run, JSON args
    args = ap.parse_args(argv)
    if args.variant_json:
        spec = json.loads(args.variant_json)
        print(json.dumps(variant(Path(spec["pdf"]), Path(spec["home"]), spec["overrides"])))
        return 0
    from fanrag.settings import PipelineSettings

    pdf = args.pdf or (QUICK_PDF if args.quick else None)
    if pdf is None or not pdf.is_file():
        print("pass --pdf PATH (see --help for fetching fullrefman.pdf), or --quick", file=sys.stderr)
        return 2
    pages = args.pages or (120 if args.quick else None)
    per_range = args.pages_per_range or PipelineSettings().pages_per_range
    env0 = environment()
    tmp = Path(tempfile.mkdtemp(prefix="fanrag-bench-pdf-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        target = first_pages(pdf, pages, tmp / f"first-{pages}.pdf") if pages else pdf
        for mode in ("single", "fanout"):
            print(f"running {mode} ...", file=sys.stderr, flush=True)
            spec = {"pdf": str(target), "home": str(tmp / f"home-{mode}"),
                    "overrides": pipeline_overrides(mode, args.threshold, per_range)}
            results[mode] = run_json_subprocess([str(Path(__file__).resolve()), "--variant-json", json.dumps(spec)])
        n_pages = page_count(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    speedup = ratio(results["single"].get("wall_s", 0.0), results["fanout"].get("wall_s", 0.0))
    path = write_result(args.name, {"pdf": str(pdf), "pages": n_pages, "first_pages": pages,
                                    "threshold": args.threshold, "pages_per_range": per_range,
                                    "variants": results, "ratios": {"fanout_speedup": speedup}}, env0)
    print_table(f"pdf: {pdf.name}, {n_pages} pages", [{"mode": k, **v} for k, v in results.items()],
                ["mode", "wall_s", "pages_per_s", "chunks", "load_chunk_cpu_s", "peak_tree_rss_mb",
                 "children_peak_mb", "error"])
    print(f"fan-out speed-up (single wall / fanout wall): {speedup if speedup is None else round(speedup, 3)}")
    print(f"wrote {path}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
