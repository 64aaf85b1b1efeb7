"""The CLI vocabulary every command shares: one name, one meaning and one parser per option.

Each factory takes its default from the caller (the stage's settings dataclass), so a value is written
once and the core imports no stage. Every list option takes a comma list, repeats, or both:
``--threads 1,2`` is ``--threads 1 --threads 2``. A bad item is an ``EdgebenchError`` (the CLI's one
``error:`` line, exit 2), not click's usage block, like every other bad input.
"""

from __future__ import annotations

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


def threads_option(default, help: str = "Thread counts to time at.", single: bool = False):
    return list_option("--threads", item=int, default=default, single=single, help=help)


def formats_option(help: str):
    return list_option("--formats", "-f", help=help)


def data_option(purpose: str, default: str | None = None, required: bool = False):
    """``--data`` (parameter ``data_source``): an image source, as ``edgebench.train.data.dataset``
    reads it."""
    note = f" [default: {default}]" if default else ""
    return click.option(
        "--data", "data_source", default=None, required=required, help=f"{purpose} ({DATA_SOURCES}){note}."
    )


def out_option(help: str, required: bool = False):
    """``--out`` (parameter ``out_dir``): where the command writes."""
    return click.option(
        "--out", "out_dir", default=None, required=required, type=click.Path(path_type=Path), help=help
    )


def seed_option(default: int, help: str):
    return click.option("--seed", default=default, show_default=True, type=int, help=help)


def max_drop_option(default: float, help: str):
    return click.option("--max-drop", default=default, show_default=True, type=float, help=help)


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
