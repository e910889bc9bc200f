"""``fanrag celery-ingest``: an ingestion run on Celery workers (``pip install 'fanrag[celery]'``)."""

from __future__ import annotations

import json
import sys

import click

from .options import home_option, json_option


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@home_option
@click.option("--broker", envvar="FANRAG_CELERY_BROKER", default=None,
              help="Celery broker, a Redis URL ($FANRAG_CELERY_BROKER; default redis://127.0.0.1:6379/0).")
@click.option("--backend", envvar="FANRAG_CELERY_BACKEND", default=None,
              help="Celery result backend URL ($FANRAG_CELERY_BACKEND; default: the broker).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=3600.0, show_default=True,
              help="Seconds to wait for the run to finish.")
@click.option("--prune", is_flag=True, help="Also remove documents whose source file is gone.")
@click.option("--password", default=None, help="Password for encrypted PDFs (travels in the tasks).")
@json_option
def celery_ingest(paths: tuple[str, ...], home: str | None, broker: str | None, backend: str | None,
                  timeout: float, prune: bool, password: str | None, as_json: bool) -> None:
    """Ingest files and directories through Celery workers that share this filesystem.

    Start the workers first: exactly one on the write queue, any number on the work queue:

      celery -A fanrag.ingest.celery.worker worker -Q fanrag.write --pool solo

      celery -A fanrag.ingest.celery.worker worker -Q fanrag --concurrency 4

    Exits 1 if any file failed (every good file is still committed).
    """
    from ..ingest.celery import ingest_with_celery
    from ..settings import Settings
    from .ingest import _print_summary

    summary = ingest_with_celery(list(paths), Settings.load(home=home), broker_url=broker,
                                 backend_url=backend, timeout=timeout, prune=prune, password=password)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        _print_summary(summary)
    sys.exit(summary.exit_code)
