"""Command-line option checks: one clear line naming the flag and what it allows."""

from __future__ import annotations


class UsageError(ValueError):
    """A command-line option out of its allowed range (the CLI prints it and exits with 2)."""


def require(ok: bool, flag: str, allowed: str, value: object) -> None:
    """Raise `UsageError("--flag must be ALLOWED, got VALUE")` unless `ok`.

    Args:
        ok: whether the value is allowed.
        flag: the option as typed, e.g. "--seconds".
        allowed: the allowed range in words, e.g. "> 0".
        value: the value given.
    """
    if not ok:
        raise UsageError(f"{flag} must be {allowed}, got {value!r}")


def positive(flag: str, value: float | int | None, optional: bool = False) -> None:
    """`value > 0` (None allowed with `optional`)."""
    if optional and value is None:
        return
    require(value is not None and value > 0, flag, "> 0", value)


def at_least(flag: str, value: float | None, low: float, optional: bool = False) -> None:
    """`value >= low` (None allowed with `optional`)."""
    if optional and value is None:
        return
    require(value is not None and value >= low, flag, f">= {low}", value)


def section_name(value: str | None) -> None:
    """Check `--section` (a BENCHMARKS.md section suffix): None, or lower-case letters,
    digits, '-' or '_'."""
    import re

    ok = value is None or re.fullmatch(r"[a-z0-9_-]+", value) is not None
    require(ok, "--section", "lower-case letters, digits, '-' or '_'", value)
