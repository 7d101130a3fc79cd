"""The MuJoCo twin of the arm. Every MuJoCo import of the package is under this package.

MuJoCo picks its OpenGL platform when it is first imported, so the offscreen default
(``MUJOCO_GL=egl``, no display needed) is set here, before any module of the package imports
mujoco; an explicit ``MUJOCO_GL`` (e.g. ``osmesa``) wins. Setting it only in ``render.py`` was
too late whenever an env module had imported mujoco first (the demo's report: GLFW, no
filmstrip).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
