"""The ``edgebench`` command group.

Subcommands live beside their logic (``edgebench.train.commands`` …) and are imported only when invoked,
so ``edgebench --help`` starts without TensorFlow.
"""

from __future__ import annotations

import importlib

import click

from edgebench import __version__
from edgebench.errors import EdgebenchError, storage_error
from edgebench.runtime import InferenceError

# name -> "module:attribute" of the click command
COMMANDS = {
    "train": "edgebench.train.commands:train",
    "predict": "edgebench.train.commands:predict",
    "pack-model": "edgebench.train.commands:pack_model",
    "fetch-model": "edgebench.train.commands:fetch_model",
    "train-plan": "edgebench.train.plan_command:train_plan",
    "test-size": "edgebench.train.test_size_command:test_size",
    "gpu-payload": "edgebench.train.commands:gpu_payload",
    "export": "edgebench.export.commands:export",
    "import": "edgebench.export.commands:import_files",
    "bench": "edgebench.bundle.bench_command:bench",  # bench's own command with --device
    "compare": "edgebench.bench.commands:compare",
    "crosscheck": "edgebench.bench.commands:crosscheck",
    "results-doc": "edgebench.bench.results_doc:results_doc",
    "bundle": "edgebench.bundle.commands:bundle",
    "tune": "edgebench.tune.commands:tune",
    "device": "edgebench.device_commands:device",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (pattern from click's documentation)."""

    def list_commands(self, ctx):
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx, name):
        if name not in COMMANDS:  # one added with add_command (tests build such groups)
            return super().get_command(ctx, name)
        module_name, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (EdgebenchError, InferenceError) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            full = storage_error(exc)  # a full disk, a quota, a read-only folder: the user's to fix
            if full is None:
                raise
            click.echo(f"error: {full}", err=True)
            ctx.exit(EdgebenchError.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgebench")
def cli():
    """Fine-tune ResNet50 on CIFAR-10, export it to edge formats and benchmark every artifact.

    Every list option takes a comma list or repeats: --threads 1,2 is --threads 1 --threads 2.
    Exit 1: a failed check (a gate, a regression, a --strict refusal); exit 2: bad input or an unusable
    artifact.
    """


def main():
    cli()


if __name__ == "__main__":
    main()
