"""Errors that reach the user as one line naming the file and the field."""

from __future__ import annotations

from pathlib import Path


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (a key or value taken
    from a file may hold them; the message stays one line)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class H4DError(Exception):
    """Base class of h4d_fast errors that the CLI reports as one line (exit code 2)."""


class InputError(H4DError):
    """Bad input: names the file (or folder) and the field or condition that is wrong."""

    def __init__(self, path: str | Path | None, problem: str, field: str | None = None):
        self.path = None if path is None else Path(path)
        self.field = field
        self.problem = problem
        where = str(self.path) if self.path is not None else "<input>"
        if field:
            where += f" [{field}]"
        super().__init__(one_line(f"{where}: {problem}"))


class OutputError(H4DError):
    """The output location cannot be written."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


class BackendUnavailable(H4DError, RuntimeError):
    """An explicitly requested compute backend cannot run here."""
