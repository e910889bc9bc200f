"""``fanrag completion bash|zsh|fish``: click's completion script for the shell, to source from its
start-up file (docs/cli.md). The script calls ``fanrag`` back with ``_FANRAG_COMPLETE`` set, which
click answers from the live command tree, so commands and options added later complete too."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

PROG = "fanrag"  # the installed script's name: the one the shell completes, whatever ran this command
COMPLETE_VAR = "_FANRAG_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script, e.g. eval "$(fanrag completion bash)" in ~/.bashrc."""
    cls = get_completion_class(shell)
    assert cls is not None  # the choice holds only the shells click ships
    click.echo(cls(ctx.find_root().command, {}, PROG, COMPLETE_VAR).source())
