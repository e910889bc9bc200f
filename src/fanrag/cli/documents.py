"""``fanrag ls`` and ``fanrag delete``: documents chosen by id, source glob and status, through one
library call (``fanrag.selection.select``), so that both commands choose exactly alike.

``delete`` selects on a read-only view, shows what it will remove, asks (unless ``--yes``), and only
then opens the index for writing, removing exactly the documents it showed: the writer lock is not held
while a person reads the list.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

import click

from ..engine import Engine
from ..filters import Filter
from ..names import shown
from ..selection import STATUSES, Selection, select, source_path
from ..stores.base import DocumentRecord
from .ingest import _open_for_write
from .options import home_option, json_option
from .query import collections, scope, where_filter

status_option = click.option("--status", type=click.Choice(STATUSES), default=None,
                             help="Only documents in this state.")
collection_option = click.option(
    "--collection", "collections", multiple=True, metavar="NAME", callback=lambda _c, _p, v: collections(v),
    help="Only documents of this collection (repeatable); those ingested without --collection are in 'default'.")
where_option = click.option(
    "--where", "where", metavar="FILTER", default=None, callback=lambda _c, _p, v: where_filter(v),
    help="Only committed documents that this filter matches (the language of `fanrag query --where`), e.g. "
         "\"year >= 2020 and tags in (a, b)\".")
source_option = click.option(
    "--source", "source", metavar="GLOB", default=None,
    help="Only documents whose source file matches GLOB (quote it): * ? [..] within a directory, ** across "
         "directories; relative to the current directory unless it starts with / or **.")


@click.command("ls")
@home_option
@status_option
@source_option
@where_option
@collection_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many documents.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many matching documents first.")
@json_option
def ls(home: str | None, status: str | None, source: str | None, where: Filter | None,
       collections: tuple[str, ...], limit: int | None, offset: int, as_json: bool) -> None:
    """List documents: id, status, chunks, pages, last update, source and title."""
    selection = Selection(source=source, status=status, where=scope(collections, where))
    with Engine.open(home, mode="read") as engine:
        records = select(engine.stores.meta, selection, limit=limit, offset=offset)
    if as_json:
        click.echo(json.dumps({"documents": [_record(r) for r in records], "limit": limit, "offset": offset}))
        return
    for line in table(records):
        click.echo(line)


@click.command("delete")
@click.argument("doc_ids", nargs=-1, metavar="[DOC_ID]...")
@home_option
@source_option
@status_option
@where_option
@collection_option
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def delete(doc_ids: tuple[str, ...], home: str | None, source: str | None, status: str | None,
           where: Filter | None, collections: tuple[str, ...], dry_run: bool, yes: bool, as_json: bool) -> None:
    """Delete documents from every store of the index: by DOC_ID, --source GLOB, --status, --where FILTER
    and/or --collection NAME (all given criteria must match; --collection alone deletes a collection).
    Shows them and asks first, unless --yes. Exits 1 if an id is not in the index."""
    selection = Selection(doc_ids=doc_ids, source=source, status=status, where=scope(collections, where))
    if selection.empty:
        raise click.UsageError("name what to delete: DOC_ID..., --source GLOB, --status, --where FILTER or "
                               "--collection NAME")
    with Engine.open(home, mode="read") as engine:
        records = select(engine.stores.meta, selection)
    missing = selection.missing(records)
    for doc_id in missing:
        also = " matching --source/--status/--where/--collection" if source or status or selection.where else ""
        click.echo(f"fanrag: no document {shown(doc_id)!r}{also}", err=True)
    if not as_json:
        for line in table(records):
            click.echo(line)
    deleted = 0
    if records and not dry_run:
        if not yes:
            click.confirm(f"Delete {_count(records)} from every store?", abort=True, err=True)
        with _open_for_write(home, None) as engine:
            deleted = engine.delete_documents([r.doc_id for r in records])
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "documents": [_record(r) for r in records], "deleted": deleted,
                               "missing": missing}))
    elif dry_run:
        click.echo(f"would delete {_count(records)} (dry run)")
    else:
        click.echo(f"deleted {_count(deleted)}" if records else "no documents match")
    sys.exit(1 if missing else 0)


def _count(n: int | list[Any]) -> str:
    n = n if isinstance(n, int) else len(n)
    return f"{n} document{'' if n == 1 else 's'}"


def shown_source(rec: DocumentRecord) -> str:
    """The document's source path, with its collection entry (``#entry``) for a JSONL record; one line."""
    entry = urlsplit(rec.uri).fragment if rec.uri.startswith("file://") else ""
    return shown(source_path(rec.source) + (f"#{entry}" if entry else ""))


def table(records: list[DocumentRecord]) -> list[str]:
    """One line per document; a failed document's reason follows its source."""
    if not records:
        return []
    lines = [f"{'DOC_ID':<21}  {'STATUS':<9}  {'CHUNKS':>6}  {'PAGES':>5}  {'UPDATED':<19}  SOURCE  TITLE"]
    for r in records:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.updated_at)) if r.updated_at else "-"
        tail = f"  ! {shown(r.error)}" if r.error else (f"  {shown(r.title)}" if r.title else "")
        lines.append(f"{r.doc_id:<21}  {r.status:<9}  {r.n_chunks:>6}  {r.n_pages:>5}  {updated:<19}  "
                     f"{shown_source(r)}{tail}")
    return lines


def _record(rec: DocumentRecord) -> dict[str, Any]:
    """A record as ``GET /documents`` gives it, plus ``path``: the source as ``--source`` matches it."""
    return {**asdict(rec), "path": shown(source_path(rec.source))}
