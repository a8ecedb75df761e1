"""The `metasym-control` command line: demo, training, adaptation (typed options, --help)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tyro


def _commands() -> dict[str, Callable[..., Any]]:
    from metasym_control import demo

    return {
        "demo": demo.main,
    }


def main() -> None:
    """Entry point of `metasym-control` and `python -m metasym_control.cli`."""
    tyro.extras.subcommand_cli_from_dict(_commands())


if __name__ == "__main__":
    main()
