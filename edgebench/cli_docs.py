"""``docs/cli.md``, generated from every command's ``--help`` (``make cli-doc``), so it cannot drift.

Run as ``python -m edgebench.cli_docs [PATH]``; a test checks that the committed file is current.
"""

from __future__ import annotations

import sys

import click

from edgebench.cli import cli

WIDTH = 100


def _context(command: click.Command, name: str, parent: click.Context | None = None) -> click.Context:
    # With the command's own context_settings (as make_context would apply them): click caches each
    # command's help option once built, so a context without them would give output that depends on
    # whether the CLI already ran in this process.
    settings = {"terminal_width": WIDTH, "max_content_width": WIDTH, **command.context_settings}
    return click.Context(command, info_name=name, parent=parent, **settings)


def _help(command: click.Command, name: str, parent: click.Context | None = None) -> str:
    return command.get_help(_context(command, name, parent))


def markdown() -> str:
    root = _context(cli, "edgebench")
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
        command = cli.get_command(root, name)
        parts += _section(f"edgebench {name}", _help(command, name, root))
        if isinstance(command, click.Group):  # its subcommands too (edgebench device arm64)
            group = _context(command, name, root)
            for sub in command.list_commands(group):
                parts += _section(
                    f"edgebench {name} {sub}", _help(command.get_command(group, sub), sub, group)
                )
    return "\n".join(parts) + "\n"


def _section(title: str, help_text: str) -> list[str]:
    return ["", f"## `{title}`", "", "```text", help_text, "```"]


def main(argv: list[str]) -> None:
    from edgebench.fileio import write_text

    if argv:
        write_text(argv[0], markdown())
    else:
        sys.stdout.write(markdown())


if __name__ == "__main__":
    main(sys.argv[1:])
