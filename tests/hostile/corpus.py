"""A hostile corpus, written into a directory: what a careless or hostile user feeds ``fanrag ingest``.

``write_corpus(root)`` writes every case below into ``root`` (mixed with good files) and returns the
cases, each with what must happen to it:

    ok      committed (every good file, whatever its name holds)
    fail    the file fails, alone, with one line that names it (escaped) and matches ``reason``
    entry   a collection with one bad line: the line fails (named by its entry), the good one ("fine")
            commits

``bound`` says which guard makes a case fail cleanly, so that a suite can say which one is missing when
a case commits, hangs or eats memory instead. Cases:

    bombs           a DOCX whose document.xml inflates ~1000x (256 MB), a PDF whose content stream
                    inflates to 512 MB
    page counts     a PDF whose page tree claims 1,048,000 pages in 700 bytes (its one real page commits),
                    a real 3,000-page PDF and a 600-entry collection (fanned out in ranges)
    nesting         HTML 100,000 elements deep, a JSON line nested 100,000 deep
    size            a 64 MB JSON line, a JSONL of 2M blank lines
    unicode         JSON text, title and id holding lone surrogates
    names           non-UTF-8 bytes, newlines, tabs, a terminal escape, 255 bytes, leading dashes,
                    spaces, bidi overrides: good content (committed), and one bad file with an odd name
    special files   a FIFO, a file-symlink loop, a dangling symlink, a directory symlink cycle; and,
                    named directly (``direct``), the FIFO and /dev/zero
    plain bad       empty, binary, UTF-16, a truncated PDF, a collection whose two entries share an id

``Mutator`` is a thread that edits and deletes files of a directory while a run goes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.fixtures.make_fixtures import pdf_file  # the object-and-xref serialiser the fixtures use

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MB = 1 << 20

Expect = Literal["ok", "fail", "entry"]


@dataclass(frozen=True, slots=True)
class Case:
    """One file of the corpus and what must happen to it."""

    path: str  # as the walk will name it (a str: it may hold any byte, surrogate-escaped)
    expect: Expect
    what: str  # what it is, for messages
    reason: str = ""  # regex (case-insensitive) the failure's one-line reason must match
    bound: str = ""  # the guard that makes it fail cleanly: named when it does not


@dataclass(frozen=True, slots=True)
class Corpus:
    root: Path
    cases: tuple[Case, ...]
    direct: tuple[Case, ...]  # special files named on the command line, outside the walk

    def expecting(self, expect: Expect) -> list[Case]:
        return [c for c in self.cases + self.direct if c.expect == expect]


# -------------------------------------------------------------------------------------------- writers

def _text(words: int, topic: str) -> str:
    rng = random.Random(topic)
    vocab = ["tide", "moon", "harbour", "current", "salt", "keel", "mast", "chart", "reef", "gale", topic]
    return " ".join(rng.choice(vocab) for _ in range(words)) + ".\n"


def pdf(pages: list[bytes], *, count: int | None = None) -> bytes:
    """A PDF with one page per content stream in ``pages`` (raw or already /FlateDecode'd: a stream that
    starts with zlib's header is marked so); ``count`` overrides the page tree's /Count."""
    objs: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    font = 3 + 2 * len(pages)
    for content in pages:
        page_no = len(objs) + 1
        kids.append(b"%d 0 R" % page_no)
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                    b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (page_no + 1, font))
        flate = b" /Filter /FlateDecode" if content[:1] == b"\x78" else b""
        objs.append(b"<< /Length %d%s >>\nstream\n" % (len(content), flate) + content + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objs[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(pages) if count is None else count)
    return pdf_file(objs, version=b"1.7")


def text_page(text: str) -> bytes:
    return b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"


def _deflated(block: bytes, times: int) -> bytes:
    """``block`` repeated ``times`` times, zlib-compressed without ever holding the whole."""
    z = zlib.compressobj(9)
    return b"".join(z.compress(block) for _ in range(times)) + z.flush()


def docx_bomb(path: Path, inflated_mb: int) -> None:
    """The checklist fixture with its document.xml replaced by ``inflated_mb`` MB of paragraphs."""
    para = b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p>"
    block = para * (MB // len(para))
    with zipfile.ZipFile(FIXTURES / "checklist.docx") as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in src.infolist():
            if info.filename != "word/document.xml":
                out.writestr(info, src.read(info))
        head = src.read("word/document.xml").split(b"<w:body>")[0] + b"<w:body>"
        with out.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(head)
            for _ in range(inflated_mb):
                f.write(block)
            f.write(b"</w:body></w:document>")


def _jsonl_line(entry_id: str, text: str) -> bytes:
    return json.dumps({"_id": entry_id, "title": entry_id, "text": text}).encode() + b"\n"


def _write(root: Path, name: str | bytes, data: bytes) -> str:
    path = os.path.join(os.fsencode(root), os.fsencode(name))
    with open(path, "wb") as f:
        f.write(data)
    return os.fsdecode(path)


# -------------------------------------------------------------------------------------------- the corpus

def write_corpus(root: Path) -> Corpus:
    """Write the hostile corpus into ``root`` (created); returns its cases."""
    root.mkdir(parents=True, exist_ok=True)
    return Corpus(root, tuple(_good(root)) + tuple(_bad(root)) + tuple(_special(root)), tuple(_direct(root)))


def _good(root: Path) -> Iterator[Case]:
    def ok(name: str | bytes, data: bytes, what: str) -> Case:
        return Case(_write(root, name, data), "ok", what)

    yield ok("alpha.txt", _text(400, "alpha").encode(), "plain text")
    yield ok("beta.md", b"# Beta\n\n" + _text(300, "beta").encode(), "markdown")
    yield ok("gamma.html", b"<html><head><title>Gamma</title></head><body><p>" + _text(300, "gamma").encode()
             + b"</p></body></html>", "html")
    yield ok("one-page.pdf", pdf([text_page("The harbour chart shows the reef at low tide.")]), "a one-page PDF")
    for fixture in ("three-pages.pdf", "checklist.docx"):
        yield Case(str(shutil.copy(FIXTURES / fixture, root / fixture)), "ok", f"fixture {fixture}")
    yield ok("collection.jsonl", b"".join(_jsonl_line(f"e{i}", _text(40, f"e{i}")) for i in range(600)),
             "a JSONL collection of 600 entries (split in line ranges)")
    yield ok("pages-3000.pdf", pdf([text_page(f"Page {i} of the tide almanac.") for i in range(3000)]),
             "a real 3,000-page PDF (split in page ranges)")
    yield ok("surrogates.jsonl", b'{"_id": "fine", "title": "Lone \\ud800 title", "text": "A lone \\udc00 in the text."}\n',
             "JSON text and title holding lone surrogates (\\ud800 escapes)")
    yield ok("count-lie.pdf", pdf([text_page("The one real page.")], count=1_048_000),
             "a 700-byte PDF whose page tree claims 1,048,000 pages (its one real page is ingested)")
    yield ok(b"latin1-\xe9t\xe9.txt", _text(200, "latin").encode(), "a name that is not UTF-8")
    yield ok("new\nline.txt", _text(200, "newline").encode(), "a name with a newline")
    yield ok("tab\tname.md", _text(200, "tab").encode(), "a name with a tab")
    yield ok("esc-\x1b[31mred.txt", _text(200, "escape").encode(), "a name with a terminal escape")
    yield ok("bidi-\u202eftp.exe.txt", _text(200, "bidi").encode(), "a name with a bidi override")
    yield ok("-rf --help.txt", _text(200, "dash").encode(), "a name with leading dashes")
    yield ok("  spaced  name .txt", _text(200, "space").encode(), "a name with spaces")
    yield ok("n" * 251 + ".txt", _text(200, "long").encode(), "a 255-byte name")
    yield ok("emoji-\U0001f30a.txt", _text(200, "wave").encode(), "a name with an emoji")


def _bad(root: Path) -> Iterator[Case]:
    def bad(name: str | bytes, data: bytes, what: str, reason: str, bound: str = "") -> Case:
        return Case(_write(root, name, data), "fail", what, reason, bound)

    yield bad("empty.txt", b"", "an empty file", r"empty")
    yield bad("binary.txt", random.Random(1).randbytes(8192), "binary junk named .txt", r"binary")
    yield bad("utf16.txt", "tide tables\n".encode("utf-16"), "UTF-16 text", r"utf-16")
    yield bad("truncated.pdf", pdf([text_page("cut")])[:300], "a truncated PDF", r"pdf|corrupt|readable|pages")
    yield Case(_write(root, "doubled.jsonl", _jsonl_line("fine", "The first entry.") + _jsonl_line("fine", "A twin.")),
               "entry", "a JSONL whose two entries share an id (the second fails)", r"repeat")
    yield bad(b"bad-\xff\nname.txt", random.Random(2).randbytes(4096), "binary junk with an odd name", r"binary")
    docx = root / "bomb.docx"
    docx_bomb(docx, 256)
    yield Case(str(docx), "fail", "a DOCX zip bomb (256 MB of XML in under 1 MB)",
               r"compress|inflat|expand|unzip|zip|large|limit|bomb", "the DOCX decompressed-size bound")
    yield bad("stream-bomb.pdf", pdf([_deflated(b" " * MB, 512)]), "a PDF content stream inflating to 512 MB",
              r"stream|decompress|inflat|large|limit", "the PDF stream-size bound")
    yield bad("deep.html", b"<html><body>" + b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000
              + b"</body></html>", "HTML nested 100,000 deep", r"nest|depth|deep", "the HTML depth bound")
    yield bad("blank-lines.jsonl", b"\n" * 2_000_000, "a JSONL of 2,000,000 blank lines", r"blank|empty|no entr",
              "a line-range part that finds its first line at C speed (loaders/jsonl.py _skip_lines)")
    yield Case(_write(root, "deep.jsonl", b'{"_id": "deep", "text": "nested", "metadata": {"x": '
                      + b"[" * 100_000 + b"]" * 100_000 + b"}}\n" + _jsonl_line("fine", _text(50, "deep"))),
               "entry", "a JSON line nested 100,000 deep", r"nest|depth|deep|recursion", "the JSON depth bound")
    yield Case(_write(root, "surrogate-id.jsonl", b'{"_id": "\\ud800", "text": "An id no URI can spell."}\n'
                      + _jsonl_line("fine", _text(50, "id").strip())),
               "entry", "a JSONL entry whose _id is a lone surrogate", r"id|surrogate|unicode|encode",
               "the JSONL loader failing that line alone (quote() raised UnicodeEncodeError for the whole file)")
    yield Case(_write(root, "long-line.jsonl", _jsonl_line("long", "tide " * (13 * MB))
                      + _jsonl_line("fine", _text(50, "long"))),
               "entry", "a 64 MB JSON line", r"line|long|large|limit|bytes", "the JSONL line-length bound")


def _special(root: Path) -> Iterator[Case]:
    fifo = root / "pipe.txt"
    os.mkfifo(fifo)
    yield Case(str(fifo), "fail", "a FIFO in the walk", r"fifo|pipe|regular|special")
    os.symlink("loop-b.txt", root / "loop-a.txt")
    os.symlink("loop-a.txt", root / "loop-b.txt")
    yield Case(str(root / "loop-a.txt"), "fail", "a file-symlink loop", r"loop|symbolic")
    yield Case(str(root / "loop-b.txt"), "fail", "a file-symlink loop", r"loop|symbolic")
    os.symlink("nowhere.txt", root / "dangling.txt")
    yield Case(str(root / "dangling.txt"), "fail", "a dangling symlink", r"no such|dangling|removed")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text(_text(200, "inner"))
    os.symlink("..", root / "sub" / "cycle")  # a directory symlink cycle: never walked twice
    yield Case(str(root / "sub" / "inner.txt"), "ok", "a file next to a directory symlink cycle")


def _direct(root: Path) -> Iterator[Case]:
    """Special files named on the command line: outside ``root``, so that the walk does not meet them."""
    beside = root.with_name(root.name + "-direct")
    beside.mkdir(exist_ok=True)
    os.mkfifo(beside / "named.pipe")
    yield Case(str(beside / "named.pipe"), "fail", "a FIFO named directly", r"fifo|pipe|regular|special")
    yield Case("/dev/zero", "fail", "/dev/zero named directly", r"device|regular|special")


# -------------------------------------------------------------------------------------------- mutation

class Mutator(threading.Thread):
    """Edits, deletes and re-creates files of a directory while a run goes, until stopped: each round
    picks a file and appends to it, truncates it, deletes it, or swaps it for another file."""

    def __init__(self, root: Path, *, seed: int = 7, pause_s: float = 0.02) -> None:
        super().__init__(name="hostile-mutator", daemon=True)
        self._files = sorted(root.glob("m*.txt"))
        self._rng = random.Random(seed)
        self._pause_s = pause_s
        self._halt = threading.Event()
        self.actions = 0

    def run(self) -> None:
        while not self._halt.wait(self._pause_s):
            path = self._rng.choice(self._files)
            try:
                self._mutate(path, self._rng.randrange(4))
            except OSError:
                continue  # it was already gone: fine, the next round picks another
            self.actions += 1

    def _mutate(self, path: Path, action: int) -> None:
        if action == 0:
            with open(path, "a") as f:
                f.write(_text(30, f"edit{self.actions}"))
        elif action == 1:
            path.write_text(_text(5, "short"))
        elif action == 2:
            path.unlink()
        else:  # replaced under its name by another file (rename is atomic)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(_text(80, f"swap{self.actions}"))
            os.replace(tmp, path)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def write_mutable(root: Path, n: int = 120) -> list[Path]:
    """``n`` good text files for a ``Mutator`` to work on."""
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"m{i:03d}.txt" for i in range(n)]
    for i, path in enumerate(paths):
        path.write_text(_text(300, f"m{i}"))
    return paths


def settle(seconds: float = 0.05) -> None:
    """Let mtimes move on (a file edited within the same tick as its ingest would look unchanged)."""
    time.sleep(seconds)
