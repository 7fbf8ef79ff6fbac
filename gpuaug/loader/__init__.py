"""Loaders: files in, augmented batches out.

Owns ``GPULoader`` (``gpu_loader``), the seeds that make its draws independent of timing
(``seeding``), the host batch the workers hand over (``host_batch``), what the workers do
(``worker``), where the first geometric op reads and how its params follow a region decode
(``regions``), the device stage and the producer thread (``device_stage``, ``producer``), and the
optional ``DALILoader`` (``dali``, imported only on request: it needs NVIDIA DALI). It imports
every layer below (io, functional, fusion, transforms, interop); nothing in gpuaug imports it but
the package's top level.
"""

from gpuaug.loader.gpu_loader import GPULoader, LoaderStats

__all__ = ["GPULoader", "LoaderStats"]
