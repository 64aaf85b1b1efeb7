"""User-facing errors: the CLI prints them as one line and exits with their code, never a traceback."""


class EdgebenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class GateFailure(EdgebenchError):
    """An artifact failed an accuracy/latency gate (bench, compare)."""

    exit_code = 1


def check_settings(problems) -> None:
    """Raise EdgebenchError with the message of the first ``(is_bad, message)`` pair that is bad."""
    for bad, message in problems:
        if bad:
            raise EdgebenchError(message)
