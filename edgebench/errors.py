"""User-facing errors: the CLI prints them as one line and exits with their code, never a traceback."""

import errno


class EdgebenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class GateFailure(EdgebenchError):
    """An artifact failed an accuracy/latency gate (bench, compare)."""

    exit_code = 1


class StrictFailure(EdgebenchError):
    """``--strict`` refused: a failed check, not bad input, so exit 1 in every command (export, bundle)."""

    exit_code = 1


class ArtifactError(EdgebenchError):
    """One artifact could not be built, imported or evaluated; ``reason`` is the short code the manifest,
    the bench report or tune.json records beside the one-line message."""

    def __init__(self, reason: str, message: str):
        super().__init__(" ".join(str(message).split()))
        self.reason = reason


def check_settings(problems) -> None:
    """Raise EdgebenchError with the message of the first ``(is_bad, message)`` pair that is bad."""
    for bad, message in problems:
        if bad:
            raise EdgebenchError(message)


# What a command cannot finish for lack of room or write permission where it writes: bad input (exit 2), not
# a failed check (exit 1) and not a bug (a traceback).
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
}


def storage_error(exc: BaseException) -> str | None:
    """One line for an ``OSError`` of ``STORAGE_ERRNOS`` in ``exc`` or the exceptions it was raised from
    (libraries wrap them: h5py, numpy, TensorFlow), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            # a copy's error names its source first and the file it was writing second (shutil)
            target = getattr(exc, "filename2", None) or exc.filename
            where = f" while writing {target}" if target else ""
            return f"{STORAGE_ERRNOS[exc.errno]}{where} (free some space or write elsewhere)"
        exc = exc.__cause__ or exc.__context__
    return None
