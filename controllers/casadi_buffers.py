"""CasADi functions evaluated in place on preallocated numpy arrays (no per-call conversions)."""

from __future__ import annotations

import logging
from typing import Any, cast

import casadi as ca
import numpy as np

logger = logging.getLogger(__name__)

# Evaluate CasADi functions through Function.buffer() (False: plain calls, e.g. for a CasADi
# whose Python API lacks it; same numbers, slower; a test compares the two). Read when a
# `BufferedFunction` is built.
USE_FUNCTION_BUFFER = True


class BufferedFunction:
    """A CasADi function evaluated in place on preallocated float64 numpy arrays.

    CasADi's `FunctionBuffer` reads the inputs' nonzeros from, and writes the outputs'
    nonzeros to, the bound arrays (column-major order of each sparsity). A plain call instead
    converts every numpy argument to a DM entry by entry: about 35 ns an entry here, 0.2 ms for
    one 17×340 block, which made the conversions of an RTI step cost as much as its QP solve.
    Where `Function.buffer()` is missing (CasADi builds without it) the same arrays go
    through plain calls.

    Attributes:
        fn: the function.
        args: one (nnz_in(i),) array per input; write into them, never rebind them.
        res: one (nnz_out(i),) array per output, overwritten by each call.
    """

    def __init__(self, fn: ca.Function) -> None:
        self.fn = fn
        self.args = [np.zeros(fn.nnz_in(i)) for i in range(fn.n_in())]
        self.res = [np.zeros(fn.nnz_out(i)) for i in range(fn.n_out())]
        # typed Any: the bindings take (index, memoryview) although CasADi's stubs ask for a size
        self._buf: Any = None
        self._evaluate: Any = None
        if USE_FUNCTION_BUFFER and hasattr(fn, "buffer"):
            try:
                self._buf, self._evaluate = fn.buffer()
                for i, a in enumerate(self.args):
                    self._buf.set_arg(i, memoryview(cast(Any, a)))
                for i, r in enumerate(self.res):
                    self._buf.set_res(i, memoryview(cast(Any, r)))
            except (NotImplementedError, TypeError, RuntimeError) as exc:
                logger.info("CasADi Function.buffer unusable (%s): plain calls", exc)
                self._buf = None

    @property
    def uses_buffer(self) -> bool:
        """True where the function runs through `Function.buffer()`, False for plain calls."""
        return self._buf is not None

    def share_args(self, other: BufferedFunction) -> None:
        """Read the inputs from `other`'s arrays (same input sparsities)."""
        for i, a in enumerate(other.args):
            if a.shape != self.args[i].shape:
                raise ValueError(f"{self.fn.name()}: input {i} differs from {other.fn.name()}")
            if self._buf is not None:
                self._buf.set_arg(i, memoryview(cast(Any, a)))
        self.args = other.args

    def __call__(self) -> None:
        """Evaluate; raises RuntimeError if CasADi reports a failed evaluation."""
        if self._buf is None:
            fn = self.fn
            outs = fn.call([ca.DM(fn.sparsity_in(i), a) for i, a in enumerate(self.args)])
            for r, out in zip(self.res, outs):
                r[:] = np.asarray(out.nonzeros(), dtype=np.float64)
            return
        self._evaluate()
        ret = self._buf.ret()
        if ret != 0:
            raise RuntimeError(f"CasADi function {self.fn.name()} failed (return code {ret})")

    def stats(self) -> dict[str, Any]:
        """Statistics of the last evaluation (for a QP function: its conic solver's)."""
        return dict(self._buf.stats() if self._buf is not None else self.fn.stats())
