"""The shared CLI vocabulary (edgebench.options): a list option takes commas, repeats or both; a bad item is
one ``error:`` line and exit 2, found while parsing, before a command imports anything heavy."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgebench.cli import LazyGroup, cli
from edgebench.errors import EdgebenchError
from edgebench.options import formats_option, into, shown, threads_option


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


# --- option groups: a group's options reach the command as one object, and a real command's options fill
# its stage's settings exactly as the dataclass would (the CLI defaults are the dataclass defaults).


@dataclasses.dataclass
class Pace:
    rounds: int = 3
    cap_s: float = 1.0
    other: str = "kept"


@group.command()
@into(
    "pace",
    functools.partial(dataclasses.replace, Pace()),
    shown("--rounds", default=Pace.rounds, help="Rounds."),
    shown("--cap", "cap_s", default=Pace.cap_s, help="Cap."),
)
@threads_option((1,))
def paced(pace, threads):
    """Echo the Pace and the threads."""
    click.echo(json.dumps({"pace": dataclasses.asdict(pace), "threads": threads}))


def test_into_hands_the_group_over_as_one_object_and_keeps_the_help():
    res = _run("paced", "--cap", "0.5", "--threads", "2")
    assert json.loads(res.output) == {"pace": {"rounds": 3, "cap_s": 0.5, "other": "kept"}, "threads": [2]}
    help_text = _run("paced", "--help").output
    assert "Echo the Pace" in help_text
    assert help_text.index("--rounds") < help_text.index("--cap") < help_text.index("--threads")
    assert "[default: 3]" in help_text


class Stop(EdgebenchError):
    """Raised by the faked stage: the command got as far as building its settings."""


def _settings_of(monkeypatch, module: str, function: str, args: list[str]):
    """The settings object a real command passes to its stage (``module.function``, faked here)."""
    seen = []

    def fake(
        *args, **kwargs
    ):  # run_bench(settings, ...), run_tune(settings, ...), export_model(..., settings=)
        seen.append(kwargs.get("settings") or args[0])
        raise Stop("stop")

    monkeypatch.setattr(importlib.import_module(module), function, fake)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and "error: stop" in res.output, res.output
    return seen[0]


def test_bench_defaults_are_bench_settings_defaults(monkeypatch):
    from edgebench.bench.settings import BenchSettings

    got = _settings_of(monkeypatch, "edgebench.bench.benchmark", "run_bench", ["bench", "--export", "e"])
    assert got == BenchSettings(export_dir=Path("e"))


def test_bench_options_fill_bench_settings(monkeypatch):
    from edgebench.bench.gate import GateSettings
    from edgebench.bench.settings import BenchSettings
    from edgebench.runtime.latency_stats import LatencySettings

    args = "--export e --reference r.keras --data d --split val --out o --max-drop 1 --min-accuracy 90"
    args += " --threads 1,4 --batch-sizes 8 --batch-sizes 16 --throughput-threads 4 --rounds 2"
    args += " --min-samples 50 --latency-time-cap 0.5 --throughput-time-cap 0.25 --require onnx"
    args += " --test-per-class 5 --seed 3 --providers CPUExecutionProvider -f onnx,tflite-int8"
    args += " --eval-batch 16 --no-plots --no-time-reference"
    got = _settings_of(monkeypatch, "edgebench.bench.benchmark", "run_bench", ["bench", *args.split()])
    assert got == BenchSettings(
        export_dir=Path("e"),
        reference=Path("r.keras"),
        data="d",
        split="val",
        out_dir=Path("o"),
        gate=GateSettings(1.0, 0.9, ("onnx",)),
        threads=(1, 4),
        batch_sizes=(8, 16),
        throughput_threads=(4,),
        latency=LatencySettings(rounds=2, min_samples=50, time_cap_s=0.5, throughput_time_cap_s=0.25),
        test_per_class=5,
        seed=3,
        providers=["CPUExecutionProvider"],
        formats=["onnx", "tflite-int8"],
        eval_batch=16,
        plots=False,
        time_reference=False,
    )


def test_tune_defaults_are_tune_settings_defaults(monkeypatch):
    from edgebench.tune.space import TuneSettings

    got = _settings_of(monkeypatch, "edgebench.tune.search", "run_tune", ["tune", "--model", "m.keras"])
    assert got == TuneSettings(model=Path("m.keras"))


def test_export_defaults_are_export_settings_defaults(monkeypatch):
    from edgebench.export.pipeline import ExportSettings

    args = ["export", "--model", "m.keras"]
    assert _settings_of(monkeypatch, "edgebench.export.pipeline", "export_model", args) == ExportSettings()
    args += ["--calib-method", "EnTropy", "--onnx-quant-format", "QDQ", "--calib-size", "7", "--split", "val"]
    got = _settings_of(monkeypatch, "edgebench.export.pipeline", "export_model", args)
    assert got == ExportSettings(calib_method="entropy", onnx_quant_format="qdq", calib_size=7, split="val")


SHARED = "--data d --out o --seed 3 --max-drop 1.5 --threads 4"


def test_a_shared_option_means_the_same_in_bench_and_tune(monkeypatch):
    bench = _settings_of(
        monkeypatch, "edgebench.bench.benchmark", "run_bench", ["bench", "--export", "e", *SHARED.split()]
    )
    tune = _settings_of(
        monkeypatch, "edgebench.tune.search", "run_tune", ["tune", "--model", "m", *SHARED.split()]
    )
    assert (
        (bench.data, bench.out_dir, bench.seed) == (tune.data, tune.out_dir, tune.seed) == ("d", Path("o"), 3)
    )
    assert bench.gate.max_drop_pp == tune.max_drop == 1.5
    assert bench.threads == (tune.threads,) == (4,)


@pytest.mark.parametrize("command", [["bench"], ["bundle"]])
def test_a_required_export_folder_is_still_required(command):
    res = CliRunner().invoke(cli, command)
    assert res.exit_code == 2 and "Missing option '--export'" in res.output
