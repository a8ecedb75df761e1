"""The README's Python snippets run as written (the GPU one with its device set to the CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_its_snippets() -> None:
    assert len(_snippets()) >= 3


@pytest.mark.slow
def test_readme_snippets_run_in_order() -> None:
    namespace: dict[str, object] = {}
    for code in _snippets():
        if '"cuda"' in code:
            import torch

            if not torch.cuda.is_available():
                # the same calls on the CPU; CUDA graphs and compilation need the GPU
                code = code.replace('"cuda"', '"cpu"').replace(
                    "cuda_graph=True", "cuda_graph=False"
                )
                code = code.replace("compile=True", "compile=False")
        exec(compile(code, str(README), "exec"), namespace)
    assert "mppi" in namespace and "result" in namespace
