"""Build a 10-K-style PDF question set: TAT-QA's financial tables and paragraphs rendered as annual reports.

Source: ``/work/shared/data/tatqa`` (TAT-QA, CC BY 4.0: 277 contexts, each a table from a real annual
report with the paragraphs around it, and 1,663 questions with their answers and gold table/paragraphs).
Its files are checked by sha256 (``SOURCES``), as the registry builders check their downloads.

What it tests: what a PDF loader keeps of a filing. Each context becomes a note of a fictional filer's
annual report, rendered with reportlab (PyPI ``reportlab``, pinned by ``RENDERER``) as a PDF a 10-K
resembles: a cover page; "Item 7" and "Item 8" headings and a "Note N. <topic>" heading per context; a
running header (filer, form, fiscal year) and a page-number footer in small type; paragraphs in 9.5 pt
body text; tables in 8 pt with a bold header row ruled below it, numbers right-aligned, no grid, the
header NOT repeated when a table breaks across pages (so rows on the next page lose their column names,
as they do in real filings). Half of the filings (the even ones) carry bookmarks (an outline); the others
have none, so headings must be read from the type. Questions are TAT-QA's, prefixed with the filer's name
("Alder Holdings: What was ...?"), as a user names the company; the evidence is a page.

Evidence pages are recorded while reportlab lays the pages out (``afterFlowable``): the page of each
paragraph fragment and each table row. A question's evidence is, for each gold paragraph, the page whose
fragment holds an answer string (else the paragraph's first page) and, for each gold table, the pages of
the rows that hold an answer string or a number of the derivation (else the table's first page).

Layout (not BEIR's corpus.jsonl: the PDFs are the corpus):
- ``pdfs/<filer>.pdf``: the corpus files, 8 filings of 34-35 notes each;
- ``queries.jsonl`` (``_id``, ``text``, ``metadata``: ``type`` = TAT-QA's answer_from, ``kind`` =
  answer_type, ``filing``, ``continued`` = whether an evidence page holds rows cut from their header);
- ``qrels/test.tsv``: ``query-id  corpus-id  score`` with corpus-id ``<filer>.pdf#page=<n>`` (1-based,
  the page number a PDF viewer shows, as in ``file.pdf#page=n`` links), score 1 for every evidence page;
- ``answers.jsonl``: TAT-QA's fields (``answer`` as a list of strings, ``answer_type``, ``answer_from``,
  ``scale``, ``derivation``) plus ``gold_pages`` (the corpus-ids above) and ``gold_docs`` (TAT-QA's ids);
- ``pages.jsonl``: every page's text as pdfium reads it (``_id`` = corpus-id), for inspection only;
- ``manifest.json``: sources, licence, renderer, seed, counts.

Deterministic: sorted inputs, one seeded ``random.Random``, reportlab's invariant mode (fixed dates and
ids). Usage: ``python bench/datasets/build_pdf10k.py [--out /work/data/pdf10k] [--seed N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

SOURCE_DIR = Path("/work/shared/data/tatqa")
SOURCES = {  # file -> sha256 of the TAT-QA files this set is built from
    "corpus.jsonl": "",
    "contexts.jsonl": "",
    "queries.jsonl": "",
    "answers.jsonl": "",
}
LICENCE = "TAT-QA (Zhu et al., 2021), CC BY 4.0; the rendered set is CC BY 4.0 with that attribution"
RENDERER = "reportlab==5.1.0"
SEED = 20261205
DEFAULT_OUT = Path("/work/data/pdf10k")
N_FILINGS = 8
FISCAL_YEAR = 2019
_FIRST = ("Alder", "Birch", "Cedar", "Dunmore", "Elmstead", "Fairhaven", "Granite", "Harbor", "Ironwood",
          "Juniper", "Kestrel", "Larkspur", "Meridian", "Northgate", "Oakridge", "Pinecrest", "Quarry",
          "Redfern", "Stonebridge", "Tamarack", "Upland", "Valeview", "Westmoor", "Yarrow")
_SECOND = ("Holdings", "Industries", "Systems", "Technologies", "Group", "Corporation", "Partners", "Brands")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Context:
    """A TAT-QA context: its table (rows of cells) and paragraphs, with their TAT-QA ids."""

    context_id: str
    table_id: str
    rows: tuple[tuple[str, ...], ...]
    paragraphs: tuple[tuple[str, str], ...]  # (id, text)


@dataclass(frozen=True, slots=True)
class Filing:
    slug: str
    name: str
    contexts: tuple[Context, ...]
    outline: bool


@dataclass
class Placement:
    """Where the layout put each paragraph fragment and table row: id -> [(page, text)]."""

    paragraphs: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    rows: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    pages: int = 0


# -- source ---------------------------------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_contexts(source: Path) -> list[Context]:
    docs = {d["_id"]: d["text"] for d in read_jsonl(source / "corpus.jsonl")}
    out = []
    for ctx in sorted(read_jsonl(source / "contexts.jsonl"), key=lambda c: c["context_id"]):
        rows = tuple(tuple(cell.strip() for cell in line.split(" | ")) for line in docs[ctx["table_doc"]].split("\n"))
        paragraphs = tuple((pid, docs[pid]) for pid in ctx["paragraph_docs"])
        out.append(Context(ctx["context_id"], ctx["table_doc"], rows, paragraphs))
    return out


def filings(contexts: Sequence[Context], rng: random.Random) -> list[Filing]:
    """The contexts dealt into ``N_FILINGS`` filers with made-up names (every other one bookmarked)."""
    order = list(contexts)
    rng.shuffle(order)
    names = rng.sample([f"{a} {b}" for a in _FIRST for b in _SECOND], N_FILINGS)
    out = []
    for k in range(N_FILINGS):
        share = tuple(sorted(order[k::N_FILINGS], key=lambda c: c.context_id))
        slug = f"{k + 1:02d}-{names[k].lower().replace(' ', '-')}"
        out.append(Filing(slug, names[k], share, outline=k % 2 == 0))
    return out


def topic(ctx: Context) -> str:
    """A note's heading: the table's first row label of two words or more, else its first paragraph's
    opening words."""
    for row in ctx.rows[1:6]:
        words = re.sub(r"[^\w\s,'&()-]", " ", row[0] if row else "").split()
        if len([w for w in words if w[0].isalpha()]) >= 2:
            return " ".join(words[:9]).rstrip(",:")
    first = ctx.paragraphs[0][1] if ctx.paragraphs else "Other information"
    return " ".join(first.split()[:6]).rstrip(".,;:")


# -- rendering ------------------------------------------------------------------------------------------

def render(filing: Filing, dest: Path) -> Placement:
    """Write the filing's PDF; return where each paragraph fragment and table row landed."""
    from reportlab import rl_config

    rl_config.invariant = 1  # fixed creation date and document id: the same bytes every build
    placement = Placement()
    doc = _template(filing, dest, placement)
    doc.build(_story(filing))
    placement.pages = doc.page
    return placement


def _styles() -> dict[str, Any]:
    from reportlab.lib.enums import TA_JUSTIFY, TA_RIGHT
    from reportlab.lib.styles import ParagraphStyle

    return {
        "cover": ParagraphStyle("cover", fontName="Helvetica-Bold", fontSize=20, leading=26, spaceAfter=18),
        "h1": ParagraphStyle("h1", fontName="Helvetica-Bold", fontSize=14, leading=18, spaceBefore=12,
                             spaceAfter=8),
        "h2": ParagraphStyle("h2", fontName="Helvetica-Bold", fontSize=11, leading=14, spaceBefore=10,
                             spaceAfter=5),
        "body": ParagraphStyle("body", fontName="Helvetica", fontSize=9.5, leading=12.5, alignment=TA_JUSTIFY,
                               spaceAfter=6),
        "cell": ParagraphStyle("cell", fontName="Helvetica", fontSize=8, leading=9.5),
        "num": ParagraphStyle("num", fontName="Helvetica", fontSize=8, leading=9.5, alignment=TA_RIGHT),
        "head": ParagraphStyle("head", fontName="Helvetica-Bold", fontSize=8, leading=9.5),
        "headnum": ParagraphStyle("headnum", fontName="Helvetica-Bold", fontSize=8, leading=9.5,
                                  alignment=TA_RIGHT),
    }


def _template(filing: Filing, dest: Path, placement: Placement) -> Any:
    from reportlab.lib.pagesizes import letter
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph, Table

    width, height = letter
    running = f"{filing.name}  |  Annual Report on Form 10-K  |  Fiscal Year {FISCAL_YEAR}"

    def decorate(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillGray(0.35)
        canvas.drawString(72, height - 36, running)
        canvas.drawCentredString(width / 2, 30, f"Page {doc.page}")
        canvas.restoreState()

    class Template(BaseDocTemplate):
        def afterFlowable(self, flowable: Any) -> None:
            page = self.page
            if isinstance(flowable, Table):
                for row in flowable._cellvalues:
                    cells = [_first(c) for c in row]  # drawn cells come as tuples of flowables
                    tag = getattr(cells[0], "tag", None)
                    if tag:
                        placement.rows[tag].append((page, " ".join(_cell_text(c) for c in cells)))
            elif isinstance(flowable, Paragraph) and getattr(flowable, "tag", None):
                placement.paragraphs[flowable.tag].append((page, flowable.getPlainText()))
            heading = getattr(flowable, "heading", None)
            if heading and filing.outline:
                key = f"h{id(flowable)}"
                self.canv.bookmarkPage(key)
                self.canv.addOutlineEntry(heading[1], key, level=heading[0], closed=False)

    doc = Template(str(dest), pagesize=letter, title=f"{filing.name} Annual Report {FISCAL_YEAR}",
                   author=filing.name, leftMargin=72, rightMargin=72, topMargin=64, bottomMargin=56)
    frame = Frame(doc.leftMargin, doc.bottomMargin, doc.width, doc.height, id="body")
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame], onPage=decorate)])
    return doc


def _first(cell: Any) -> Any:
    return cell[0] if isinstance(cell, (tuple, list)) and cell else cell


def _cell_text(cell: Any) -> str:
    return cell.getPlainText() if hasattr(cell, "getPlainText") else str(cell)


def _tagged(text: str, style: Any, tag: str = "", heading: tuple[int, str] | None = None) -> Any:
    """A Paragraph that keeps ``tag`` (and its heading) on the fragments a page break splits it into."""
    from reportlab.platypus import Paragraph

    class Tagged(Paragraph):
        def split(self, avail_width: float, avail_height: float) -> list[Any]:
            parts = super().split(avail_width, avail_height)
            for part in parts:
                part.tag = self.tag
            return parts

    para = Tagged(escape(text), style)
    para.tag = tag
    para.heading = heading
    return para


def _story(filing: Filing) -> list[Any]:
    from reportlab.platypus import PageBreak, Paragraph, Spacer

    st = _styles()
    story: list[Any] = [
        Spacer(1, 120),
        Paragraph(escape(filing.name), st["cover"]),
        Paragraph(f"Annual Report on Form 10-K for the fiscal year ended December 31, {FISCAL_YEAR}", st["body"]),
        PageBreak(),
    ]
    half = (len(filing.contexts) + 1) // 2
    items = (("Item 7. Management's Discussion and Analysis of Financial Condition and Results of Operations",
              filing.contexts[:half]),
             ("Item 8. Financial Statements and Supplementary Data", filing.contexts[half:]))
    note = 0
    for item, contexts in items:
        story.append(_tagged(item, st["h1"], heading=(0, item)))
        for ctx in contexts:
            note += 1
            title = f"Note {note}. {topic(ctx)}"
            story.append(_tagged(title, st["h2"], heading=(1, title)))
            paragraphs = [_tagged(text, st["body"], pid) for pid, text in ctx.paragraphs]
            table = _table(ctx, st)
            # Alternate: the table after the first paragraph, or first of all.
            story.extend([*paragraphs[:1], table, *paragraphs[1:]] if note % 2 else [table, *paragraphs])
    return story


def _table(ctx: Context, st: dict[str, Any]) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    n_cols = max(len(r) for r in ctx.rows)
    data = []
    for r, row in enumerate(ctx.rows):
        cells = list(row) + [""] * (n_cols - len(row))
        styled = []
        for c, cell in enumerate(cells):
            numeric = c > 0 and bool(_NUMBER.search(cell)) and len(cell) < 24
            style = ("headnum" if numeric or c > 0 else "head") if r == 0 else ("num" if numeric else "cell")
            styled.append(_tagged(cell, st[style], f"{ctx.table_id}#{r}" if c == 0 else ""))
        data.append(styled)
    width = 468.0
    first = width * (0.42 if n_cols > 2 else 0.6)
    widths = [first] + [(width - first) / (n_cols - 1)] * (n_cols - 1) if n_cols > 1 else [width]
    table = Table(data, colWidths=widths, repeatRows=0, splitByRow=1, hAlign="LEFT")
    table.setStyle(TableStyle([
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
        ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]))
    return table


# -- questions ------------------------------------------------------------------------------------------

def answer_strings(answer: Any) -> list[str]:
    values = answer if isinstance(answer, list) else [answer]
    return [str(v).strip() for v in values if str(v).strip()]


def evidence_pages(info: Mapping[str, Any], placement: Placement, table_ids: set[str]) -> list[int]:
    """The pages that hold a question's evidence (see the module docstring)."""
    needles = answer_strings(info["answer"])
    numbers = _NUMBER.findall(info.get("derivation") or "")
    pages: set[int] = set()
    for gold in info["gold_docs"]:
        if gold in table_ids:
            rows = [(page, text) for tag, placed in placement.rows.items() if tag.split("#")[0] == gold
                    for page, text in placed]
            hits = {page for page, text in rows if any(_holds(text, n) for n in needles + numbers)}
            pages |= hits or ({rows[0][0]} if rows else set())
        else:
            frags = placement.paragraphs.get(gold, [])
            hits = {page for page, text in frags if any(_holds(text, n) for n in needles + numbers)}
            pages |= hits or ({frags[0][0]} if frags else set())
    return sorted(pages)


def _holds(text: str, needle: str) -> bool:
    if len(needle) < 2:
        return False
    if needle[0].isdigit() or needle[0] in "$(-":  # a number: not inside a longer one
        return re.search(rf"(?<![\d.,]){re.escape(needle)}(?![\d])", text) is not None
    return needle.lower() in " ".join(text.split()).lower()


def continued_pages(placement: Placement) -> dict[int, set[str]]:
    """page -> tables with rows on it whose header row is on an earlier page."""
    first_page: dict[str, int] = {}
    out: dict[int, set[str]] = defaultdict(set)
    for tag, placed in sorted(placement.rows.items(), key=lambda kv: (kv[0].split("#")[0], int(kv[0].split("#")[1]))):
        table, row = tag.split("#")
        for page, _ in placed:
            if row == "0":
                first_page[table] = page
            elif page > first_page.get(table, page):
                out[page].add(table)
    return out


# -- the set --------------------------------------------------------------------------------------------

def build(source: Path, out: Path, seed: int) -> dict[str, Any]:
    """Render every filing and write the question files; returns the manifest."""
    check_sources(source)
    rng = random.Random(seed)
    contexts = load_contexts(source)
    queries = {q["_id"]: q["text"] for q in read_jsonl(source / "queries.jsonl")}
    answers = sorted(read_jsonl(source / "answers.jsonl"), key=lambda a: (a["context_id"], a["_id"]))
    (out / "pdfs").mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    rows_q, rows_a, qrels, pages_rows = [], [], [], []
    counts: Counter[str] = Counter()
    for filing in filings(contexts, rng):
        pdf = out / "pdfs" / f"{filing.slug}.pdf"
        placement = render(filing, pdf)
        counts["pages"] += placement.pages
        cont = continued_pages(placement)
        counts["tables_split_across_pages"] += len({t for ts in cont.values() for t in ts})
        pages_rows.extend(_page_texts(pdf))
        table_ids = {c.table_id for c in filing.contexts}
        ctx_ids = {c.context_id for c in filing.contexts}
        for info in (a for a in answers if a["context_id"] in ctx_ids):
            pages = evidence_pages(info, placement, table_ids)
            if not pages:
                counts["questions_without_evidence_page"] += 1
                continue
            gold = [f"{pdf.name}#page={p}" for p in pages]
            continued = any(cont.get(p, set()) & set(info["gold_docs"]) for p in pages)
            counts["questions_on_continued_tables"] += continued
            rows_q.append({"_id": info["_id"], "text": f"{filing.name}: {queries[info['_id']]}",
                           "metadata": {"type": info["answer_from"], "kind": info["answer_type"],
                                        "filing": pdf.name, "continued": continued}})
            rows_a.append({"_id": info["_id"], "answer": answer_strings(info["answer"]),
                           "answer_type": info["answer_type"], "answer_from": info["answer_from"],
                           "scale": info["scale"], "derivation": info["derivation"], "gold_pages": gold,
                           "gold_docs": info["gold_docs"]})
            qrels.extend((info["_id"], g) for g in gold)
    _write_jsonl(out / "queries.jsonl", rows_q)
    _write_jsonl(out / "answers.jsonl", rows_a)
    _write_jsonl(out / "pages.jsonl", pages_rows)
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{c}\t1\n" for q, c in qrels)
    manifest = {
        "source": {"dir": str(source), "files": {n: sha256_of(source / n) for n in SOURCES}, "licence": LICENCE},
        "renderer": RENDERER, "seed": seed, "filings": N_FILINGS, "filings_with_outline": N_FILINGS // 2,
        "contexts": len(contexts), "questions": len(rows_q),
        "gold_pages_per_question": dict(sorted(Counter(len(a["gold_pages"]) for a in rows_a).items())),
        "by_type": dict(sorted(Counter(a["answer_from"] for a in rows_a).items())), **dict(sorted(counts.items())),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def check_sources(source: Path) -> None:
    """Stop when a TAT-QA file is not the one the set was built from (where a checksum is pinned)."""
    for name, digest in SOURCES.items():
        got = sha256_of(source / name)
        if digest and got != digest:
            raise SystemExit(f"{source / name}: sha256 {got} is not the pinned {digest}; the set would differ")


def _page_texts(pdf: Path) -> list[dict[str, str]]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        rows = []
        for i in range(len(doc)):
            page = doc[i]
            text = page.get_textpage().get_text_range().replace("\r\n", "\n")
            rows.append({"_id": f"{pdf.name}#page={i + 1}", "title": pdf.stem, "text": text})
            page.close()
        return rows
    finally:
        doc.close()


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE_DIR, help="the TAT-QA directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the set is written")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    print(json.dumps(build(args.source, args.out, args.seed) | {"out": str(args.out)}, indent=2))


if __name__ == "__main__":
    main()
