"""The `metasym-control` command line: demo, training, adaptation (typed options, --help)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import tyro

from metasym_control.demo import DemoConfig

_DEMO_DEFAULTS = DemoConfig()


def demo(cfg: Annotated[DemoConfig, tyro.conf.OmitArgPrefixes] = _DEMO_DEFAULTS) -> None:
    """Fly a figure-8 on an unseen quadrotor: MPC with nominal physics, MetaSym, oracle."""
    from metasym_control import demo as demo_module

    demo_module.main(cfg)


def _commands() -> dict[str, Callable[..., Any]]:
    return {
        "demo": demo,
    }


def main() -> None:
    """Entry point of `metasym-control` and `python -m metasym_control.cli`."""
    tyro.extras.subcommand_cli_from_dict(_commands())


if __name__ == "__main__":
    main()
