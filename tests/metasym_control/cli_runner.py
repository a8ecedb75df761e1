"""Run `metasym-control` in the test process (tyro reads sys.argv)."""

from __future__ import annotations

import sys

import pytest

from metasym_control import cli


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """Run `metasym-control ARGS` in this process."""
    monkeypatch.setattr(sys, "argv", ["metasym-control", *args])
    cli.main()
