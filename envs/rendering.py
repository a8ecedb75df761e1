"""Off-screen MuJoCo rendering shared by the MuJoCo environments: one renderer made on use."""

from __future__ import annotations

from typing import Any

import numpy as np


class OffscreenRenderer:
    """A `mujoco.Renderer` created at the first frame and released by `close`.

    Args:
        owner: the environment's name, for error messages.
        width: image width, pixels.
        height: image height, pixels.
    """

    def __init__(self, owner: str, width: int, height: int) -> None:
        self.owner = owner
        self.width, self.height = int(width), int(height)
        self._renderer: Any = None

    def frame(self, model: Any, data: Any, camera: str) -> np.ndarray:
        """(height, width, 3) uint8 image of `data` from the named `camera` of `model`.

        Raises:
            RuntimeError: no OpenGL context could be made (headless without MUJOCO_GL=egl).
        """
        if self._renderer is None:
            import mujoco

            try:
                self._renderer = mujoco.Renderer(model, self.height, self.width)
            except Exception as e:  # mujoco.FatalError and friends: no GL context
                raise RuntimeError(
                    f"{self.owner}: cannot create an OpenGL context for rendering ({e}); "
                    "headless machines need MUJOCO_GL=egl set before mujoco is first imported"
                ) from e
        self._renderer.update_scene(data, camera=camera)
        return np.asarray(self._renderer.render())

    def close(self) -> None:
        """Release the renderer (a later `frame` makes a new one, e.g. for a new model)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
