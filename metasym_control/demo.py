"""The main closed-loop demo (placeholder until the quadrotor and controllers land)."""

from __future__ import annotations


def main() -> None:
    """Run the main closed-loop demo."""
    raise SystemExit("demo not built yet")
