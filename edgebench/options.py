"""The CLI vocabulary every command shares: one name, one meaning and one parser per option.

Each factory takes its default from the caller (the stage's settings dataclass), so a value is written
once and the core imports no stage. Options that go together come as one group decorator (``group``);
``into`` hands a group's values to the command as one object, e.g. the settings dataclass they fill. A
parameter is named after the settings field it fills, so a command passes its options straight on.

Every list option takes a comma list, repeats, or both:
``--threads 1,2`` is ``--threads 1 --threads 2``. A bad item is an ``EdgebenchError`` (the CLI's one
``error:`` line, exit 2), not click's usage block, like every other bad input.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click

from edgebench.errors import EdgebenchError

# item type -> (what the error says it takes, metavar word)
_ITEMS = {int: ("integers", "N"), float: ("numbers", "X"), str: ("names", "NAME")}
DATA_SOURCES = "keras, <root>/<split>/<class>/* folder, cifar-10-batches-py folder or .npz"


def parse_list(values, option: str, item=str) -> tuple:
    """``values`` (one string per use of the option, or one string) split at commas into ``item``s."""
    if isinstance(values, str):
        values = (values,)
    words = [w.strip() for value in values for w in str(value).split(",")]
    words = [w for w in words if w]
    if not words:
        raise EdgebenchError(f"{option} is empty")
    out = []
    for word in words:
        try:
            out.append(item(word))
        except ValueError:
            raise EdgebenchError(
                f"{option} takes {_ITEMS[item][0]}, comma-separated or repeated (got '{word}')"
            ) from None
    return tuple(out)


def list_option(*decls: str, item=str, default=None, single: bool = False, help: str, **kwargs):
    """A click option giving a tuple of ``item`` (``default`` when not given: a tuple, or None).

    ``single``: the list must hold exactly one value (a command that runs at one setting)."""
    default = None if default is None else tuple(default)
    word = _ITEMS[item][1]

    def callback(ctx, param, value):
        if not value:  # not given and no default
            return default
        name = max(param.opts, key=len)
        items = parse_list(value, name, item)
        if single and len(items) != 1:
            raise EdgebenchError(f"{name} takes one value here (got {','.join(map(str, items))})")
        return items

    if default:  # click would show a tuple as "1, 2", or a string as "(1,2)": show what one types
        help = f"{help}  [default: {','.join(map(str, default))}]"
    return click.option(
        *decls,
        multiple=True,
        type=click.STRING,  # the callback parses (click would infer int from the default and word the error)
        default=default,
        metavar=word if single else f"{word}[,{word}...]",
        callback=callback,
        help=help,
        **kwargs,
    )


def shown(*decls: str, default, help: str, **kwargs):
    """An option whose help shows its default (its type, unless given: the default's)."""
    return click.option(*decls, default=default, show_default=True, help=help, **kwargs)


def path_option(*decls: str, help: str, **kwargs):
    """An option naming a file or folder (a ``Path``; not checked here: the stage says what is missing)."""
    return click.option(*decls, type=click.Path(path_type=Path), help=help, **kwargs)


def group(*options):
    """One decorator for ``options``, which --help lists in this order."""

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def into(name: str, build, *options):
    """A group whose values reach the command as one argument ``name``: ``build(**values)``, keyed by the
    options' parameter names."""

    def decorate(fn):
        @functools.wraps(fn)  # copies the click parameters declared below, and the docstring (the help)
        def command(*args, **kwargs):
            values = {key: kwargs.pop(key) for key in keys}
            return fn(*args, **kwargs, **{name: build(**values)})

        before = len(getattr(command, "__click_params__", ()))
        group(*options)(command)
        keys = [param.name for param in command.__click_params__[before:]]
        return command

    return decorate


def threads_option(default, help: str = "Thread counts to time at.", single: bool = False):
    return list_option("--threads", item=int, default=default, single=single, help=help)


def sweep_options(threads, batch_sizes):
    """``--threads``, ``--batch-sizes``, ``--throughput-threads``: where latency and throughput are timed."""
    return group(
        threads_option(threads, "Thread counts to sweep."),
        list_option("--batch-sizes", item=int, default=batch_sizes, help="Throughput batch sizes."),
        list_option(
            "--throughput-threads",
            item=int,
            help="Thread counts (among --threads) to measure throughput at "
            "[default: the largest of --threads].",
        ),
    )


def timing_options(defaults):
    """``--rounds``, ``--min-samples`` and the two time caps: the argument ``latency``, ``defaults`` (the
    stage's timing settings) with these four replaced."""
    per_round = "per artifact, thread count and round"
    return into(
        "latency",
        functools.partial(dataclasses.replace, defaults),
        shown(
            "--rounds",
            default=defaults.rounds,
            help="Timing passes over all artifacts, order rotated each pass.",
        ),
        shown("--min-samples", default=defaults.min_samples, help=f"Batch-1 samples {per_round}."),
        shown(
            "--latency-time-cap",
            "time_cap_s",
            default=defaults.time_cap_s,
            help=f"Seconds of batch-1 timing {per_round} (stops earlier at --min-samples).",
        ),
        shown(
            "--throughput-time-cap",
            "throughput_time_cap_s",
            default=defaults.throughput_time_cap_s,
            help="Seconds of timing per batch size and round.",
        ),
    )


def reference_options():
    """``--reference`` (a Keras model) or ``--reference-format`` (an fp32 artifact): what accuracy drops are
    measured against."""
    return group(
        path_option(
            "--reference",
            default=None,
            help="fp32 Keras model [default: <export>/../model.keras, else the manifest's source model].",
        ),
        click.option(
            "--reference-format",
            default=None,
            help="An fp32 artifact of the manifest as the reference, for exports without a Keras model "
            "(e.g. onnx).",
        ),
    )


def sample_options(seed: int):
    """``--test-per-class`` and the ``--seed`` of its sample."""
    return group(
        click.option(
            "--test-per-class",
            default=None,
            type=int,
            help="Stratified sample of N test images per class [default: the whole test split].",
        ),
        seed_option(seed, "Seed of --test-per-class sampling."),
    )


def formats_option(help: str):
    return list_option("--formats", "-f", help=help)


def data_option(purpose: str, default: str | None = None, required: bool = False):
    """``--data`` (parameter ``data``): an image source, as ``edgebench.train.data.dataset`` reads it."""
    note = f" [default: {default}]" if default else ""
    return click.option("--data", default=None, required=required, help=f"{purpose} ({DATA_SOURCES}){note}.")


def split_option(default: str, help: str):
    """``--split``: the image folder split read."""
    return shown("--split", default=default, help=help)


def out_option(help: str, required: bool = False):
    """``--out`` (parameter ``out_dir``): where the command writes."""
    return path_option("--out", "out_dir", default=None, required=required, help=help)


def export_option(help: str = "Export folder holding manifest.json.", required: bool = False):
    """``--export`` (parameter ``export_dir``): an export folder (manifest.json)."""
    optional = {} if required else {"default": None}
    return path_option("--export", "export_dir", required=required, help=help, **optional)


def seed_option(default: int, help: str):
    return shown("--seed", default=default, type=int, help=help)


def max_drop_option(default: float, help: str):
    return shown("--max-drop", default=default, type=float, help=help)


def min_accuracy_option():
    """``--min-accuracy``, given in percent, reaches the command as a fraction (None: off)."""
    return click.option(
        "--min-accuracy",
        default=None,
        type=float,
        callback=lambda ctx, param, value: None if value is None else value / 100,
        help="Absolute top-1 floor in percent [default: off].",
    )


def strict_option(when: str):
    """``--strict``: a refusal is a failed check (``StrictFailure``: exit 1 everywhere), not bad input."""
    return click.option("--strict", is_flag=True, help=f"Exit 1 (a failed check) {when}.")


def target_option(default: str | None, help: str):
    """``--target``: the CPU profile an artifact is for (``edgebench.targets``); an unknown one is a one-line
    error (exit 2). ``default`` None: the command's own default, which ``help`` names."""
    from edgebench import targets

    def callback(ctx, param, value):
        return value if value is None else targets.check(value)

    note = f"  [default: {default}]" if default else ""
    return click.option(
        "--target",
        default=default,
        metavar="PROFILE",
        callback=callback,
        help=f"{help} One of: {', '.join(targets.NAMES)}.{note}",
    )


DEVICES = (
    "ssh://[user@]host[:port] (your own ssh: ~/.ssh/config, keys, agents and jump hosts work), local, or "
)
DEVICES += "qemu://FOLDER (an emulated device from edgebench device arm64: accuracy, not speed)"


def device_options(what: str, multiple: bool):
    """``--device`` (one, or ``multiple`` in parallel), ``--device-python``, ``--device-timeout`` and
    ``--ssh-config``: where ``what`` runs instead of here, and how it is reached (``edgebench.devices``)."""
    many = "; repeat for several (in parallel)" if multiple else ""
    return group(
        click.option(
            "--device",
            "devices" if multiple else "device",
            multiple=multiple,
            help=f"{what} on this device instead of here: {DEVICES}{many}.",
        ),
        shown("--device-python", default="python3", help="The Python interpreter there."),
        shown(
            "--device-timeout", default=1800.0, help="Seconds one device command (ship, run, fetch) may take."
        ),
        path_option("--ssh-config", default=None, help="An ssh_config file (ssh -F)."),
    )
