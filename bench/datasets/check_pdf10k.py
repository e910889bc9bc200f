"""How often BM25 finds the evidence page of the pdf10k set, for each way of reading its PDFs.

Every variant chunks with fanrag's chunker (the default embedder's tokenizer, chunk.size 256, overlap 32,
header budget 32 tokens, headers from ``fanrag.ingest.headers``) and indexes ``header + text`` in
fanrag's BM25 store; a question's pages are ranked by their best chunk (a chunk counts for every page
it spans). Variants:

- ``text``: pdfium's text, no header at all (what fanrag did before chunk headers);
- ``title+page``: the same text, headers with the document title and page only;
- ``sections``: plus the section path (outline, else bold/large lines);
- ``layout``: plus tables from the layout (rows " | "-joined, header rows, headers carried over page
  breaks): fanrag's PDF loader as it is;
- ``pdfplumber``: the sections of ``sections``, but each page's text and tables from pdfplumber
  (``extract_tables`` with text-based edges; rows " | "-joined, first row the header, carried to the next
  page when a page opens with a table whose first row holds numbers).

Usage: ``python bench/datasets/check_pdf10k.py /work/data/pdf10k [--variants layout,pdfplumber]``;
writes ``DIR/bm25_check.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # a checkout without installing

from fanrag.embed.base import TokenizerSpec, load_tokenizer
from fanrag.ingest.chunker import chunk_document
from fanrag.ingest.loaders.pdf import PAGE_SEP, PdfLoader
from fanrag.stores.keywords_tantivy import TantivyKeywordStore
from fanrag.types import Chunk, Document, Page, Table

TOKENIZER = Path(__file__).resolve().parents[2] / "src/fanrag/embed/data/all-MiniLM-L6-v2/tokenizer.json"
K_PAGES = (1, 5, 10)
_NUMBER = re.compile(r"\d")


class PlainPdf(PdfLoader):
    tables = False


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def documents(pdfs: Sequence[Path], variant: str) -> list[Document]:
    out = []
    for pdf in pdfs:
        loader = PdfLoader() if variant == "layout" else PlainPdf()
        [doc] = loader.load(pdf, uri=pdf.name)
        if variant in ("text", "title+page"):
            doc = replace(doc, sections=(), tables=())
        elif variant == "sections":
            doc = replace(doc, tables=())
        elif variant == "pdfplumber":
            doc = plumber_document(pdf, doc)
        out.append(doc)
    return out


def plumber_document(pdf: Path, base: Document) -> Document:
    """``base``'s title and sections over pdfplumber's pages (sections moved to the same page lines)."""
    import pdfplumber

    pages: list[Page] = []
    tables: list[Table] = []
    texts = []
    offset = 0
    carried = ""
    with pdfplumber.open(pdf) as doc:
        for number, page in enumerate(doc.pages, start=1):
            text, found, carried = plumber_page(page, carried)
            pages.append(Page(number, text, offset))
            tables.extend(Table(t.start + offset, t.end + offset, t.header) for t in found)
            texts.append(text)
            offset += len(text) + len(PAGE_SEP)
    text = PAGE_SEP.join(texts)
    sections = tuple(replace(s, start=_moved(s, base, pages, text)) for s in base.sections)
    return replace(base, text=text, pages=tuple(pages), tables=tuple(tables),
                   sections=tuple(sorted(sections, key=lambda s: s.start)))


def plumber_page(page: Any, carried: str) -> tuple[str, list[Table], str]:
    """The page's text in vertical bands (text, table rows, text, ...), its tables, and the header to
    carry to the next page."""
    settings = {"vertical_strategy": "text", "horizontal_strategy": "text"}
    found = sorted(page.find_tables(settings), key=lambda t: t.bbox[1])
    parts: list[str] = []
    tables: list[Table] = []
    top = 0.0
    pos = 0
    boxes = [t.bbox for t in found]

    def outside(obj: Mapping[str, Any]) -> bool:
        return not any(b[0] <= obj.get("x0", -1) <= b[2] and b[1] <= obj.get("top", -1) <= b[3] for b in boxes)

    last_header = ""
    for n, table in enumerate(found):
        above = page.crop((0, top, page.width, table.bbox[1])).filter(outside).extract_text() or ""
        rows = [" | ".join(c.strip() for c in row if c and c.strip()) for row in table.extract()]
        rows = [r for r in rows if r]
        if above.strip():
            parts.append(above.strip())
            pos += len(above.strip()) + 1
        if rows:
            opens = n == 0 and not "".join(parts).strip()
            header = carried if opens and carried and _NUMBER.search(rows[0]) else rows[0]
            body = "\n".join(rows)
            tables.append(Table(pos, pos + len(body), header))
            parts.append(body)
            pos += len(body) + 1
            last_header = header
        top = table.bbox[3]
    rest = page.crop((0, top, page.width, page.height)).filter(outside).extract_text() or ""
    if rest.strip():
        parts.append(rest.strip())
    ends_with_table = bool(found) and not rest.strip()
    return "\n".join(parts), tables, last_header if ends_with_table else ""


def _moved(section: Any, base: Document, pages: Sequence[Page], text: str) -> int:
    """A section's offset on pdfplumber's text: its title's first occurrence on the same page."""
    number = next((p.number for p in reversed(base.pages) if p.offset <= section.start), 1)
    page = pages[number - 1]
    at = text.find(section.title[:30], page.offset, page.offset + len(page.text))
    return at if at >= 0 else page.offset


def index(docs: Sequence[Document], header_tokens: int, folder: Path) -> TantivyKeywordStore:
    tokenizer = load_tokenizer(TokenizerSpec(kind="hf", path=str(TOKENIZER), max_tokens=254))
    store = TantivyKeywordStore(folder)
    chunks: list[Chunk] = []
    pages: dict[str, list[str]] = {}
    for doc in docs:
        for c in chunk_document(doc, tokenizer, size=256, overlap=32, min_size=16, header_tokens=header_tokens):
            chunks.append(c)
            pages[c.chunk_id] = [f"{doc.uri}#page={p}" for p in range(c.page_start, c.page_end + 1)]
    store.add(chunks)
    store.pages = pages  # type: ignore[attr-defined]
    return store


def ranked_pages(store: TantivyKeywordStore, question: str, k: int) -> list[str]:
    pages: dict[str, None] = {}
    for hit in store.search(question, 200):
        for page in store.pages[hit.chunk_id]:  # type: ignore[attr-defined]
            pages.setdefault(page)
        if len(pages) >= k:
            break
    return list(pages)[:k]


def score(store: TantivyKeywordStore, queries: Sequence[Mapping[str, Any]],
          gold: Mapping[str, set[str]]) -> dict[str, dict[str, float]]:
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for q in queries:
        ranked = ranked_pages(store, q["text"], max(K_PAGES))
        meta = q["metadata"]
        groups = ("all", f"from/{meta['type']}", "continued" if meta["continued"] else "not_continued")
        first = next((i for i, p in enumerate(ranked) if p in gold[q["_id"]]), None)
        for g in groups:
            cell = sums[g]
            cell["questions"] += 1
            for k in K_PAGES:
                cell[f"hit@{k}"] += float(first is not None and first < k)
            cell["mrr@10"] += 1.0 / (first + 1) if first is not None else 0.0
    return {g: {m: (v if m == "questions" else round(v / cell["questions"], 3)) for m, v in cell.items()}
            for g, cell in sorted(sums.items())}


VARIANTS: dict[str, tuple[str, int]] = {  # name -> (documents variant, header tokens)
    "text": ("text", 0), "title+page": ("title+page", 32), "sections": ("sections", 32),
    "layout": ("layout", 32), "pdfplumber": ("pdfplumber", 32),
}


def run(folder: Path, variants: Iterable[str]) -> dict[str, Any]:
    pdfs = sorted((folder / "pdfs").glob("*.pdf"))
    queries = read_jsonl(folder / "queries.jsonl")
    gold: dict[str, set[str]] = defaultdict(set)
    for line in (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, page, _ = line.split("\t")
        gold[qid].add(page)
    results: dict[str, Any] = {}
    for name in variants:
        kind, header_tokens = VARIANTS[name]
        docs = documents(pdfs, kind)
        with tempfile.TemporaryDirectory() as tmp:
            store = index(docs, header_tokens, Path(tmp) / "bm25")
            try:
                results[name] = score(store, queries, gold)
            finally:
                store.close()
        results[name]["tables_found"] = {"tables": sum(len(d.tables) for d in docs),
                                         "sections": sum(len(d.sections) for d in docs)}
        print(name, json.dumps(results[name]["all"]), file=sys.stderr)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    results = run(args.folder, [v for v in args.variants.split(",") if v])
    (args.folder / "bm25_check.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))



if __name__ == "__main__":
    main()
