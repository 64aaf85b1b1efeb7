"""``docs/cli.md``, generated from every command's ``--help`` (``make cli-doc``), so it cannot drift.

Run as ``python -m edgebench.cli_docs [PATH]``; a test checks that the committed file is current.
"""

from __future__ import annotations

import sys

import click

from edgebench.cli import cli

WIDTH = 100


def _help(command: click.Command, name: str, parent: click.Context | None = None) -> str:
    ctx = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH)
    return command.get_help(ctx)


def markdown() -> str:
    root = click.Context(cli, info_name="edgebench", terminal_width=WIDTH, max_content_width=WIDTH)
    parts = [
        "# The edgebench CLI",
        "",
        "Generated from `--help` by `make cli-doc` (`python -m edgebench.cli_docs docs/cli.md`): not typed.",
        "",
        "```text",
        _help(cli, "edgebench"),
        "```",
    ]
    for name in cli.list_commands(root):
        parts += [
            "",
            f"## `edgebench {name}`",
            "",
            "```text",
            _help(cli.get_command(root, name), name, root),
            "```",
        ]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> None:
    from edgebench.fileio import write_text

    if argv:
        write_text(argv[0], markdown())
    else:
        sys.stdout.write(markdown())


if __name__ == "__main__":
    main(sys.argv[1:])
