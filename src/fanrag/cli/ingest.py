"""``fanrag ingest`` and ``fanrag status``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import click

from ..engine import Engine
from ..filters import FilterError, parse_tag
from ..filters.model import COLLECTION, in_collections
from ..ingest.sources import PathSource, SourceFile
from ..ingest.summary import IngestSummary
from ..names import shown
from ..settings import Settings
from .options import executor_option, home_option, json_option, pipeline_overrides
from .query import collections

if TYPE_CHECKING:
    from ..stores.base import MetaStore


class _RichProgress:
    """Live line on stderr: documents, pages, chunks/s, ETA (by parts, the unit of scheduled work)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("[bold]ingest"), BarColumn(), TextColumn("{task.completed}/{task.total} parts"),
                           TextColumn("{task.fields[docs]} docs · {task.fields[pages]} pages · "
                                      "{task.fields[rate]:.0f} chunks/s"),
                           TimeElapsedColumn(), TimeRemainingColumn(),
                           console=_stderr_console(), transient=True)
        self._task = self._p.add_task("ingest", total=0, docs=0, pages=0, rate=0.0)
        self._t0 = time.perf_counter()
        self._docs = self._pages = self._chunks = self._total = 0

    def __enter__(self) -> Self:
        self._p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._p.__exit__(*exc)

    def _update(self, advance: int = 0) -> None:
        rate = self._chunks / max(time.perf_counter() - self._t0, 1e-6)
        self._p.update(self._task, advance=advance, total=self._total, docs=self._docs, pages=self._pages,
                       rate=rate)

    def planned(self, parts: int) -> None:
        self._total += parts
        self._update()

    def part_done(self, pages: int, failed: int) -> None:
        self._pages += pages
        self._update(advance=1)

    def committed(self, docs: int, chunks: int) -> None:
        self._docs += docs
        self._chunks += chunks
        self._update()

    def unchanged(self, docs: int) -> None:
        self._docs += docs
        self._update()


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@home_option
@click.option("--workers", type=int, default=None, help="Load/chunk processes (default: number of cores).")
@executor_option
@click.option("--prune", is_flag=True, help="Also remove documents whose source file is gone.")
@click.option("--password", default=None, help="Password for encrypted PDFs.")
@click.option("--root", type=click.Path(file_okay=False, exists=True), default=None,
              help="Confine the ingest to this directory: every file, named or met in the walk, must resolve "
                   "(symlinks followed) inside it; the others fail by name.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", callback=lambda _c, _p, v: _tags(v),
              help="Set KEY to VALUE (a number when it reads as one) in the metadata of every document of the "
                   "named paths, for `query --where \"KEY = VALUE\"`; repeatable. Re-ingesting a changed file "
                   "without it drops the tag.")
@click.option("--collection", metavar="NAME", default=None, callback=lambda _c, _p, v: _collection(v),
              help="Put the documents of the named paths in this collection (a document is in one collection at "
                   "a time: its file's). Without it, a new document is in 'default' and one already ingested stays "
                   "in its collection.")
@json_option
def ingest(paths: tuple[str, ...], home: str | None, workers: int | None, executor: str | None, prune: bool,
           password: str | None, root: str | None, quiet: bool, tags: dict[str, str | int | float],
           collection: str | None, as_json: bool) -> None:
    """Ingest files and directories (PDF, HTML, Markdown, text, DOCX, JSONL collections).

    Unchanged documents are skipped, changed ones replaced in every store; a killed run resumes where
    it stopped when started again. Exits 1 if any file failed (every good file is still committed).
    """
    if collection is not None:
        tags = {**tags, COLLECTION: collection}
    with _open_for_write(home, pipeline_overrides(workers, executor)) as engine:
        source = _Recorded(paths, root=root, password=password, exclude=[engine.settings.home],
                           meta=engine.stores.meta)
        show = not quiet and not as_json and sys.stderr.isatty()
        if show:
            with _RichProgress() as progress:
                summary = engine.ingest(source, prune=prune, progress=progress)
        else:
            summary = engine.ingest(source, prune=prune)
        source.report(summary)  # files the walk refused (outside --root, symlink loops) fail by name
        if COLLECTION not in tags:
            source.restore()
        # after the run: the documents it committed, and those it found unchanged, get the tags
        tagged = engine.stores.meta.tag_documents(source.recorded, tags) if tags else 0
    if as_json:
        click.echo(json.dumps(summary.to_dict() | ({"tagged": tagged} if tags else {})))
    else:
        _print_summary(summary)
        if tags:
            click.echo(f"tagged {tagged} document{'' if tagged == 1 else 's'}: "
                       + ", ".join(f"{k}={v}" for k, v in tags.items()))
    sys.exit(summary.exit_code)


class _Recorded(PathSource):
    """The paths' sources, remembering each one whose outcome the run recorded (committed, unchanged or
    failed: a collection that failed in part has committed documents to tag), and, as the walk meets it,
    the collection its documents are in: a changed file is committed with its loader's metadata, and
    ``restore`` puts it back in its collection."""

    def __init__(self, *args: Any, meta: MetaStore, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.recorded: list[str] = []
        self._meta = meta
        self._prior: dict[str, str] = {}

    def __iter__(self) -> Iterator[SourceFile]:
        for src in super().__iter__():
            docs = self._meta.documents("committed", src.uri, 1)
            prior = (docs[0].metadata or {}).get(COLLECTION) if docs else None
            if isinstance(prior, str):
                self._prior[src.uri] = prior
            yield src

    def restore(self) -> None:
        """Each recorded source's documents back in the collection they were in before the run."""
        by_name: dict[str, list[str]] = {}
        for uri in self.recorded:
            if uri in self._prior:
                by_name.setdefault(self._prior[uri], []).append(uri)
        for name, uris in by_name.items():
            self._meta.tag_documents(uris, {COLLECTION: name})

    def committed(self, source: SourceFile) -> None:
        self.recorded.append(source.uri)

    def failed(self, source: SourceFile, reason: str) -> None:
        self.recorded.append(source.uri)


def _collection(name: str | None) -> str | None:
    return None if name is None else collections((name,))[0]


def _tags(values: tuple[str, ...]) -> dict[str, str | int | float]:
    """``--tag KEY=VALUE ...`` as a dict (the last value of a key wins); a bad tag is a usage error."""
    try:
        return dict(parse_tag(v) for v in values)
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="'--tag'") from None


def _open_for_write(home: str | None, overrides: dict[str, Any] | None) -> Engine:
    """The index opened for writing. A home that cannot be written fails here with one line that names
    it and why, before any store maps a file (a read-only file system gave SIGBUS or a long traceback)."""
    settings = Settings.load(home=home, overrides=overrides)
    reason = _unwritable(settings.home)
    if reason is None:
        try:
            return Engine.open(settings=settings)
        except OSError as exc:  # a file inside the home (its lock, a store) cannot be opened for writing
            reason = f"{exc.strerror or exc}" + (f" ({shown(str(exc.filename))})" if exc.filename else "")
    raise click.ClickException(f"{shown(str(settings.home))}: cannot open the index for writing: {reason}")


def _unwritable(home: Path) -> str | None:
    """Why ``home`` (or the nearest directory above it that exists, where it would be made) cannot be
    written; None if it can."""
    where = next((p for p in (home, *home.parents) if p.exists()), Path("/"))
    if os.access(where, os.W_OK):
        return None
    read_only = os.statvfs(where).f_flag & os.ST_RDONLY
    return f"{'read-only file system' if read_only else 'permission denied'} ({shown(str(where))})"


def _print_summary(s: IngestSummary) -> None:
    click.echo(f"{s.ok} ingested, {s.unchanged} unchanged, {len(s.failed)} failed, {s.removed} removed "
               f"from {s.sources} sources: {s.chunks} chunks, {s.pages} pages in {s.wall_s:.1f} s "
               f"({s.chunks_per_s:.0f} chunks/s)")
    st = s.stages
    stores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(st.write_stores.items()))
    click.echo(f"stages (s): load+chunk {st.load_chunk:.2f} (cpu, all workers), embed {st.embed:.2f}, "
               f"write {st.write:.2f} [{stores}]")
    if s.swept:
        click.echo(f"swept {s.swept} documents an interrupted run had left half-written")
    for source, reason in s.failed:  # names shown escaped: one line per failure, whatever a name holds
        click.echo(f"FAILED {shown(source)}: {shown(reason)}", err=True)


@click.command()
@home_option
@click.option("--collection", "collections", multiple=True, metavar="NAME",
              callback=lambda _c, _p, v: collections(v),
              help="What these collections hold (documents, chunks, pages, sources) rather than the whole index.")
@json_option
def status(home: str | None, collections: tuple[str, ...], as_json: bool) -> None:
    """Show what the index holds."""
    with Engine.open(home, mode="read") as engine:
        info = collection_stats(engine, collections) if collections else engine.status().to_dict()
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    for key, value in info.items():
        click.echo(f"{key:>16}: {value}")


def collection_stats(engine: Engine, names: tuple[str, ...]) -> dict[str, Any]:
    """A collection's own statistics: its committed documents, their chunks and pages, their sources."""
    meta = engine.stores.meta
    docs = [d for d in (meta.get_document(i) for i in meta.filter_documents(in_collections(names))) if d]
    return {"collections": list(names), "documents": len(docs), "chunks": sum(d.n_chunks for d in docs),
            "pages": sum(d.n_pages for d in docs), "sources": len({d.source for d in docs})}
