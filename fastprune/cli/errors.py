"""Errors a user causes (bad spec, missing file, wrong model for a file): one line, exit code 2."""
from __future__ import annotations


MAX_MESSAGE = 600


class UsageError(Exception):
    """A mistake in what the user asked for; the CLI prints the message alone and exits with 2."""


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, without the library's 'fastprune: ' prefix."""
    text = str(exc) if str(exc) else type(exc).__name__
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"missing key {exc.args[0]!r}"
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:  # a message quoting a whole file or tensor list is no help
        text = text[:MAX_MESSAGE] + " ..."
    if text.startswith("fastprune: "):
        text = text[len("fastprune: "):]
    return text
