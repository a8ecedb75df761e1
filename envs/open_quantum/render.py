"""Frames of `MetaSymOpenQuantum-v0`: a Bloch sphere (qubit) or a |ρ_mn| heat map (oscillator)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from metasym_control.envs.open_quantum.physics import compact_observation

# Viewing direction of the Bloch sphere: azimuth from +x in the xy-plane and elevation above
# it (degrees). +x then points down-left towards the viewer, +y right, |e> (z = +1) up.
BLOCH_AZIMUTH = 30.0
BLOCH_ELEVATION = 20.0
TRAIL_LENGTH = 30

_STATE_COLOUR = "#d62728"
_TARGET_COLOUR = "#2ca02c"


def project_bloch(
    points: np.ndarray, azimuth: float = BLOCH_AZIMUTH, elevation: float = BLOCH_ELEVATION
) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic projection of Bloch-sphere points onto the picture plane.

    Args:
        points: (..., 3) Bloch vectors (x, y, z), dimensionless (|r| <= 1 for states).
        azimuth: viewing azimuth from +x in the xy-plane, degrees.
        elevation: viewing elevation above the xy-plane, degrees.

    Returns:
        (..., 2) picture coordinates (right, up) in sphere radii, and (...,) depth towards
        the viewer (> 0: front hemisphere).
    """
    a, e = math.radians(azimuth), math.radians(elevation)
    right = np.array([-math.sin(a), math.cos(a), 0.0])
    up = np.array([-math.cos(a) * math.sin(e), -math.sin(a) * math.sin(e), math.cos(e)])
    toward = np.array([math.cos(a) * math.cos(e), math.sin(a) * math.cos(e), math.sin(e)])
    p = np.asarray(points, dtype=np.float64)
    return np.stack([p @ right, p @ up], axis=-1), p @ toward


def ket_bloch_vector(psi: np.ndarray) -> np.ndarray:
    """(2,) qubit ket (basis |e>, |g>) -> (3,) Bloch vector (<σx>, <σy>, <σz>) of |ψ><ψ|."""
    psi = np.asarray(psi, dtype=np.complex128)
    psi = psi / np.linalg.norm(psi)
    return compact_observation(np.outer(psi, psi.conj()), "qubit")


def _fit_figure(width: int, height: int) -> Any:
    """A figure of exactly width × height pixels on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100.0
    # Agg truncates width·dpi to an integer: pad by a hair so 0.29 · 100 still gives 29 px
    fig = Figure(figsize=((width + 1e-3) / dpi, (height + 1e-3) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    return fig


class OpenQuantumRenderer:
    """Draws frames of the env on one reused matplotlib figure (Agg, made at the first frame).

    Qubit: the Bloch sphere (outline, equator, axes with |e>, |g>, +x, +y), the state's Bloch
    vector as an arrow with a dot (faded when it lies behind the sphere), the target's Bloch
    vector as a green ring, a fading trail of the last states, and the time and fidelity.
    Oscillator: |ρ_mn| as an N × N heat map (square-root colour scale over [0, 1]) above the
    populations ρ_nn as bars, with the target's |<n|ψ>|² as markers.

    Args:
        system: "qubit" or "oscillator".
        target_ket: (N,) the task's target ket.
        width: image width, pixels.
        height: image height, pixels.
    """

    def __init__(self, system: str, target_ket: np.ndarray, width: int, height: int) -> None:
        self.system = system
        self.target_ket = np.asarray(target_ket, dtype=np.complex128).ravel()
        self.target_ket = self.target_ket / np.linalg.norm(self.target_ket)
        self.n = self.target_ket.size
        self.width, self.height = int(width), int(height)
        self._fig: Any = None
        self._artists: dict[str, Any] = {}
        # text scaled with the image: 9 pt on the default 480 px frame, readable down to ~100 px
        self._font = max(3.0, 9.0 * min(self.width, self.height) / 480.0)

    # ----- public
    def qubit_frame(
        self, bloch: np.ndarray, trail: np.ndarray, time: float, fidelity: float
    ) -> np.ndarray:
        """(height, width, 3) uint8 Bloch-sphere frame.

        Args:
            bloch: (3,) the state's Bloch vector, dimensionless.
            trail: (T, 3) the last T Bloch vectors, oldest first (T may be 0).
            time: time since reset, μs.
            fidelity: fidelity to the target, in [0, 1].
        """
        if self._fig is None:
            self._setup_qubit()
        art = self._artists
        (sx, sy), depth = project_bloch(np.asarray(bloch, dtype=np.float64))
        art["arrow"].set_data([0.0, sx], [0.0, sy])
        art["dot"].set_data([sx], [sy])
        # well behind the sphere's centre: fainter, as seen through it (the poles stay solid)
        art["dot"].set_alpha(1.0 if depth >= -0.5 else 0.45)
        tr = np.asarray(trail, dtype=np.float64).reshape(-1, 3)
        if len(tr) >= 2:
            xy, _ = project_bloch(tr)
            segs = np.stack([xy[:-1], xy[1:]], axis=1)
            rgba = np.tile(art["trail_rgb"], (len(segs), 1))
            rgba[:, 3] = np.linspace(0.05, 0.7, len(segs))  # older segments fade out
            art["trail"].set_segments(segs)
            art["trail"].set_color(rgba)
        else:
            art["trail"].set_segments([])
        art["text"].set_text(f"t = {time:.2f} μs\nF = {fidelity:.3f}")
        return self._draw()

    def density_frame(self, rho: np.ndarray, time: float, fidelity: float) -> np.ndarray:
        """(height, width, 3) uint8 frame of |ρ_mn| and the populations.

        Args:
            rho: (N, N) complex density matrix.
            time: time since reset, μs.
            fidelity: fidelity to the target, in [0, 1].
        """
        if self._fig is None:
            self._setup_density()
        art = self._artists
        r = np.asarray(rho)
        art["image"].set_data(np.abs(r))
        for bar, p in zip(art["bars"], np.clip(np.diag(r).real, 0.0, 1.0), strict=True):
            bar.set_height(p)
        art["text"].set_text(f"t = {time:.2f} μs   F = {fidelity:.3f}")
        return self._draw()

    def close(self) -> None:
        """Drop the figure (made again at the next frame)."""
        self._fig = None
        self._artists = {}

    # ----- drawing
    def _draw(self) -> np.ndarray:
        self._fig.canvas.draw()
        buf = np.asarray(self._fig.canvas.buffer_rgba())
        return np.ascontiguousarray(buf[: self.height, : self.width, :3])

    def _setup_qubit(self) -> None:
        from matplotlib.collections import LineCollection
        from matplotlib.colors import to_rgba

        fig = _fit_figure(self.width, self.height)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.set_aspect("equal")
        ax.axis("off")
        lw = max(0.5, self._font / 9.0)
        fs = self._font
        th = np.linspace(0.0, 2.0 * math.pi, 121)
        ax.plot(np.cos(th), np.sin(th), color="0.3", lw=1.2 * lw)
        # equator: front half solid, back half dashed
        eq, d = project_bloch(np.stack([np.cos(th), np.sin(th), np.zeros_like(th)], axis=-1))
        front = np.where(d >= 0, 1.0, np.nan)
        back = np.where(d < 0, 1.0, np.nan)
        ax.plot(eq[:, 0] * front, eq[:, 1] * front, color="0.55", lw=lw)
        ax.plot(eq[:, 0] * back, eq[:, 1] * back, color="0.7", lw=lw, ls="--")
        axes_3d = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
        tips, _ = project_bloch(axes_3d)
        for tip in tips:
            ax.plot([-tip[0], tip[0]], [-tip[1], tip[1]], color="0.75", lw=0.8 * lw)
        labels = [(axes_3d[0], "+x"), (axes_3d[1], "+y"), (axes_3d[2], "|e⟩"), (-axes_3d[2], "|g⟩")]
        for v, s in labels:
            (lx, ly), _ = project_bloch((1.14 if v[2] else 1.24) * v)
            ax.text(lx, ly, s, fontsize=fs, ha="center", va="center", color="0.25")
        (tx, ty), _ = project_bloch(ket_bloch_vector(self.target_ket))
        ax.plot(
            [tx], [ty], "o", ms=2.2 * fs, mfc="none", mec=_TARGET_COLOUR, mew=1.6 * lw, zorder=4
        )
        trail = LineCollection([], lw=1.5 * lw, zorder=3)
        ax.add_collection(trail)
        (arrow,) = ax.plot([], [], color=_STATE_COLOUR, lw=2.0 * lw, zorder=5)
        (dot,) = ax.plot([], [], "o", color=_STATE_COLOUR, ms=1.3 * fs, zorder=6)
        text = ax.text(
            0.02, 0.98, "", transform=ax.transAxes, fontsize=fs, va="top", family="monospace"
        )
        for row, (s, c) in enumerate([("● state", _STATE_COLOUR), ("○ target", _TARGET_COLOUR)]):
            ax.text(
                0.98,
                0.02 + 0.045 * (1 - row),
                s,
                transform=ax.transAxes,
                fontsize=0.85 * fs,
                ha="right",
                va="bottom",
                color=c,
            )
        self._fig = fig
        self._artists = {
            "arrow": arrow,
            "dot": dot,
            "trail": trail,
            "trail_rgb": np.array(to_rgba(_STATE_COLOUR)),
            "text": text,
        }

    def _setup_density(self) -> None:
        from matplotlib.colors import PowerNorm
        from matplotlib.ticker import MaxNLocator

        fig = _fit_figure(self.width, self.height)
        fs = self._font
        n = self.n
        ax = fig.add_axes((0.1, 0.36, 0.86, 0.56))
        # square-root scale: small coherences stay visible; fixed [0, 1] so frames compare
        image = ax.imshow(
            np.zeros((n, n)),
            cmap="viridis",
            norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
            interpolation="nearest",
            aspect="equal",
        )
        ax.set_xlabel("n", fontsize=fs, labelpad=1)
        ax.set_ylabel("m", fontsize=fs, labelpad=1)
        ax.xaxis.set_label_position("top")
        ax.xaxis.tick_top()
        for a in (ax.xaxis, ax.yaxis):
            a.set_major_locator(MaxNLocator(6, integer=True))
        ax.tick_params(labelsize=0.8 * fs, length=2, pad=1)
        text = fig.text(0.02, 0.005, "", fontsize=fs, va="bottom", family="monospace")
        fig.text(0.98, 0.005, "|ρ_mn|, √ scale", fontsize=0.8 * fs, ha="right", va="bottom")
        bx = fig.add_axes((0.1, 0.1, 0.86, 0.2))
        levels = np.arange(n)
        bars = bx.bar(levels, np.zeros(n), width=0.8, color="#1f77b4", label="ρ_nn")
        bx.plot(
            levels,
            np.abs(self.target_ket) ** 2,
            "_",
            ms=max(2.0, 300.0 / n * fs / 9.0),
            mew=1.5,
            color=_TARGET_COLOUR,
            label="target",
        )
        bx.set_xlim(-0.5, n - 0.5)
        bx.set_ylim(0.0, 1.0)
        bx.xaxis.set_major_locator(MaxNLocator(6, integer=True))
        bx.set_yticks([0.0, 1.0])
        bx.tick_params(labelsize=0.8 * fs, length=2, pad=1)
        bx.legend(fontsize=0.7 * fs, loc="upper right", frameon=False, ncol=2)
        self._fig = fig
        self._artists = {"image": image, "bars": list(bars), "text": text}
