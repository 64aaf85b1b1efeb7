"""The shared CLI vocabulary (edgebench.options): a list option takes commas, repeats or both; a bad item is
one ``error:`` line and exit 2, found while parsing, before a command imports anything heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from edgebench.cli import LazyGroup
from edgebench.options import formats_option, threads_option


@click.group(cls=LazyGroup)
def group():
    """Tiny commands that print what the options gave them."""


@group.command()
@threads_option((1, 2))
@formats_option("Formats.")
def sweep(threads, formats):
    click.echo(json.dumps({"threads": threads, "formats": formats}))


@group.command()
@threads_option((2,), single=True)
def one(threads):
    click.echo(json.dumps(threads))


def _run(*args):
    return CliRunner().invoke(group, list(args))


def _one_error_line(res, words: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], lines


@pytest.mark.parametrize(
    "args",
    [
        ["--threads", "1,2", "-f", "onnx,tflite-int8"],
        ["--threads", "1", "--threads", "2", "--formats", "onnx", "-f", "tflite-int8"],
        ["--threads", " 1, ", "--threads", "2", "-f", "onnx,", "-f", "tflite-int8"],
    ],
)
def test_comma_and_repeated_give_the_same_tuple(args):
    res = _run("sweep", *args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"threads": [1, 2], "formats": ["onnx", "tflite-int8"]}


def test_defaults_when_not_given():
    assert json.loads(_run("sweep").output) == {"threads": [1, 2], "formats": None}
    assert json.loads(_run("one").output) == [2]
    assert json.loads(_run("one", "--threads", "3").output) == [3]


@pytest.mark.parametrize(
    "cmd, args, words",
    [
        ("sweep", ["--threads", "1,x"], "--threads takes integers, comma-separated or repeated (got 'x')"),
        ("sweep", ["--threads", "1", "--threads", "2.5"], "--threads takes integers"),
        ("sweep", ["--threads", ""], "--threads is empty"),
        ("sweep", ["-f", ","], "--formats is empty"),
        ("one", ["--threads", "1,2"], "--threads takes one value here (got 1,2)"),
        ("one", ["--threads", "1", "--threads", "2"], "--threads takes one value here"),
    ],
)
def test_a_bad_item_is_one_error_line_naming_the_option(cmd, args, words):
    _one_error_line(_run(cmd, *args), words)


def test_a_real_command_fails_on_a_bad_item_before_any_heavy_import(tmp_path):
    """``edgebench bench --threads x``: the one line and exit 2, with no runtime or statistics imported."""
    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from edgebench.cli import cli\n"
        f"res = CliRunner().invoke(cli, ['bench', '--export', {str(tmp_path)!r}, '--threads', '1,x'])\n"
        "heavy = ('tensorflow', 'keras', 'onnxruntime', 'ai_edge_litert', 'statsmodels', 'scipy')\n"
        "print(json.dumps([res.exit_code, res.output, [m for m in heavy if m in sys.modules]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=99)
    exit_code, output, imported = json.loads(out.stdout)
    assert exit_code == 2 and output.strip() == (
        "error: --threads takes integers, comma-separated or repeated (got 'x')"
    )
    assert imported == []
