"""User-facing errors: the CLI prints them as one line and exits with their code, never a traceback."""


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
