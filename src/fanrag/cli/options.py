"""Options shared by several commands."""

from __future__ import annotations

import click

home_option = click.option(
    "--home", type=click.Path(file_okay=False), envvar="FANRAG_HOME", default=None,
    help="Index directory (default: $FANRAG_HOME or ./.fanrag).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
executor_option = click.option(
    "--executor", default=None,
    help="Where load/chunk and embedding run (pipeline.executor): local (default), ray (RAY_ADDRESS, else a "
         "local Ray), ray:ADDRESS (a cluster, from one of its nodes), ray://HOST:PORT (Ray Client).")


def pipeline_overrides(workers: int | None, executor: str | None) -> dict[str, dict[str, object]] | None:
    """Settings overrides for the --workers/--executor options that were given."""
    given: dict[str, object] = {k: v for k, v in (("workers", workers), ("executor", executor)) if v is not None}
    return {"pipeline": given} if given else None
