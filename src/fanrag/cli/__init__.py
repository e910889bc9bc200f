"""The ``fanrag`` command: a few lines per command over the library; library errors become clean
messages (exit 2 for usage/config errors, 1 for failed work)."""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import ConfigError, FanragError

# Subcommands live in their own modules and are imported when the group is built; a module that is
# missing (an optional part not installed) just leaves its command out.
_COMMANDS = {
    "ingest": "fanrag.cli.ingest:ingest",
    "status": "fanrag.cli.ingest:status",
    "query": "fanrag.cli.query:query",
    "serve": "fanrag.cli.serve:serve",
    "eval": "fanrag.cli.eval:eval_cmd",
    "tune": "fanrag.cli.eval:tune",
    "submit": "fanrag.cli.jobs:submit",
    "worker": "fanrag.cli.jobs:worker",
    "jobs": "fanrag.cli.jobs:jobs",
    "celery-ingest": "fanrag.cli.celery_cmd:celery_ingest",
    "ls": "fanrag.cli.documents:ls",
    "delete": "fanrag.cli.documents:delete",
    "completion": "fanrag.cli.completion:completion",
    "mcp": "fanrag.cli.mcp:mcp",
}


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        except FanragError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group)
@click.version_option(package_name="fanrag")
def cli() -> None:
    """fanrag: retrieval-augmented generation, parallel by design."""


def _register() -> None:
    for name, target in _COMMANDS.items():
        module, _, attr = target.partition(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real bug inside the module: let it show
                raise
            continue
        cli.add_command(cmd, name)


_register()


def main() -> None:
    cli(prog_name="fanrag")


if __name__ == "__main__":
    sys.exit(main())
