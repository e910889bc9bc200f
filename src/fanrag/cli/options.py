"""Options shared by several commands."""

from __future__ import annotations

import click

home_option = click.option(
    "--home", type=click.Path(file_okay=False), envvar="FANRAG_HOME", default=None,
    help="Index directory (default: $FANRAG_HOME or ./.fanrag).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
