"""Fusion: what a run of transforms asks of one pass, the plan, and the executors that run it.

Owns ``FusedOps`` (what transforms contribute, ``ops``), the typed ``Plan`` every executor reads
(``plan``), the torch reference executor (``torch_executor``), the Triton executor and its kernels
(``triton``, ``triton_kernels``, imported only when Triton is there) and the DALI graph builder
(``dali_graph``, imported only with DALI). It imports the kernels (``gpuaug.functional``) and the
packed batch (``gpuaug.io.packed``); never the transforms themselves (it reads their descriptions),
never the loaders.
"""

from gpuaug.fusion.ops import ROLES, FusedOps

__all__ = ["ROLES", "FusedOps"]
