"""The CLI's generated reference (docs/cli.md) matches what `--help` says now."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_doc_is_generated_from_the_current_help():
    from edgebench.cli import cli
    from edgebench.cli_docs import markdown

    # The CLI having run first (as earlier tests of a suite do) must not change what is generated.
    before = markdown()
    from click.testing import CliRunner

    for args in (["-h"], ["bench", "-h"], ["train", "--help"]):
        assert CliRunner().invoke(cli, args).exit_code == 0
    text = markdown()
    assert text == before, "the generated help depends on whether the CLI ran before"
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert text == committed, "docs/cli.md is stale: make cli-doc"
    for name in cli.list_commands(None):
        assert f"## `edgebench {name}`" in text and f"Usage: edgebench {name} [OPTIONS]" in text
