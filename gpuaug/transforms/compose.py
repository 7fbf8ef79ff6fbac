"""``Compose``: members, params, dispatch to the executor its plan names, repr.

Example:
    >>> from gpuaug.transforms import RandomResizedCrop, ToDtype
    >>> Compose([RandomResizedCrop(8), ToDtype(torch.float32)])(torch.rand(2, 3, 30, 40)).shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gpuaug.fusion import torch_executor, triton
from gpuaug.fusion.plan import Plan
from gpuaug.io.packed import PackedBatch
from gpuaug.transforms.base import BatchInfo, Images, Params, Transform, _check_pixels
from gpuaug.transforms.kornia import as_transform

__all__ = ["Compose"]


class Compose(Transform):
    """Apply transforms in order, sampling every transform's per-image params from one generator.

    With ``fuse=True`` (default), runs of transforms execute as one pass on the same params (a
    replay gives the same draws either way). ``Compose.plan`` (a ``gpuaug.fusion.plan.Plan``) says
    which: it is read by every executor.

    * **torch** (the reference; CPU, MPS, float input, no Triton): flips around a
      ``RandomResizedCrop`` join its resampling; a run of ``ColorJitter`` (without HSV hue),
      ``RandomGrayscale`` and flips that ends in ``ToDtype(float)`` and/or ``Normalize`` becomes
      one affine pass from uint8 to the normalised float batch (the op-by-op clamps are skipped:
      see ``functional.fused_color_normalize`` and the measured error in the tests).
    * **triton** (uint8 input on CUDA, when Triton imports): the plan's prefix
      ``[flips] crop|resize|centre-crop [centre-crop] [flips] [colour run]`` as one pass of at
      most 3 kernels, straight from a ragged ``PackedBatch`` to the channels-last output; the rest
      on torch. The tests hold it to the torch executor (float 1e-4, uint8 +-1 on resampling).
    * **DALI** (``gpuaug.dali.DALILoader``) builds its graph from the same prefix.

    ``fuse=False`` runs every transform op by op with torchvision's exact semantics.

    Args:
        transforms: gpuaug transforms (``gpuaug.from_torchvision`` converts torchvision ones);
            Kornia augmentation modules are wrapped (``gpuaug.transforms.kornia``).
        fuse: fuse the runs above.
        backend: ``"auto"`` (Triton for uint8 images on CUDA where it imports, else torch),
            ``"torch"``, or ``"triton"`` (also on CPU tensors under ``TRITON_INTERPRET=1``).

    Shape:
        ``[B, C, H, W]``, a ``PackedBatch``, or, if the first geometric op is the first transform
        (flips may precede it), a list of ``[C, H_i, W_i]`` -> one batch; a list again where the
        sizes still differ at the end (``Resize(int)`` without a crop). Params: a flat dict keyed
        ``"<index>.<name>"`` (e.g. ``"0.boxes"``, ``"2.brightness"``).

    Example:
        >>> from gpuaug.transforms import RandomHorizontalFlip, RandomResizedCrop, Resize, ToDtype
        >>> augment = Compose([RandomResizedCrop(64), RandomHorizontalFlip(), ToDtype(torch.float32)])
        >>> augment([torch.rand(3, 80, 90), torch.rand(3, 100, 70)]).shape
        torch.Size([2, 3, 64, 64])
        >>> [(stage.kind, stage.members) for stage in augment.plan.stages]
        [('resample', (0, 1)), ('color', (2,))]
    """

    def __init__(self, transforms: Sequence[Transform], fuse: bool = True, backend: str = "auto") -> None:
        if isinstance(transforms, Transform) or not isinstance(transforms, Sequence):
            raise ValueError("transforms must be a list of gpuaug transforms")
        transforms = [as_transform(t) for t in transforms]
        bad = [type(t).__name__ for t in transforms if not isinstance(t, Transform)]
        if bad:
            raise ValueError(
                f"transforms must be gpuaug transforms; got {', '.join(bad)} "
                "(convert torchvision pipelines with gpuaug.from_torchvision)"
            )
        if backend not in triton.BACKENDS:
            raise ValueError(f"backend must be one of {triton.BACKENDS}, got {backend!r}")
        if backend == "triton" and not triton.available():
            raise ValueError("backend='triton' needs the triton package (pip install triton); use backend='auto' or 'torch'")
        self.transforms = list(transforms)
        self.fuse = bool(fuse)
        self.backend = backend
        self.plan = Plan.of([t.fusion for t in self.transforms], [t.fixed_output for t in self.transforms], self.fuse)
        self.accepts_list = bool(self.transforms) and self.transforms[0].accepts_list
        self.batch_coupled = any(t.batch_coupled for t in self.transforms)

    def then(self, *more: Transform) -> Compose:
        """These transforms followed by ``more``, with the same settings (``fuse``, ``backend``).

        Example:
            >>> from gpuaug.transforms import Resize, ToDtype
            >>> Compose([Resize(8)], backend="torch").then(ToDtype(torch.float32)).backend
            'torch'
        """
        return Compose([*self.transforms, *more], fuse=self.fuse, backend=self.backend)

    # -- params ------------------------------------------------------------------------------
    def _make_params(self, info: BatchInfo, generator: torch.Generator | None) -> Params:
        params: Params = {}
        for index, transform in enumerate(self.transforms):
            for name, value in transform._make_params(info, generator).items():
                params[f"{index}.{name}"] = value
            info = transform.output_sizes(info)
        return params

    def check_params(self, info: BatchInfo, params: Params) -> None:
        for transform, own in zip(self.transforms, self.split(params)):
            transform.check_params(info, own)
            info = transform.output_sizes(info)

    def output_sizes(self, info: BatchInfo) -> BatchInfo:
        for transform in self.transforms:
            info = transform.output_sizes(info)
        return info

    def params_of(self, params: Params, index: int) -> Params:
        """Transform ``index``'s own params (names without the ``"<index>."`` prefix)."""
        return self.split(params)[index]

    def split(self, params: Params) -> list[Params]:
        """``params`` as one dict per transform, by position (keys of other positions are ignored)."""
        own: list[Params] = [{} for _ in self.transforms]
        for key, value in params.items():
            index, _, name = key.partition(".")
            if index.isdigit() and int(index) < len(own):
                own[int(index)][name] = value
        return own

    # -- execution ---------------------------------------------------------------------------
    def __call__(self, images: Images, params: Params | None = None, generator: torch.Generator | None = None) -> Tensor:
        if isinstance(images, PackedBatch):
            if len(images) == 0:
                raise ValueError("Compose got an empty PackedBatch")
            if params is None:
                params = self.make_params(images, generator)
            else:
                self.check_params(BatchInfo.of(images), params)
            return self.apply(images, params)
        return super().__call__(images, params, generator)

    def apply(self, images: Images, params: Params) -> Tensor | list[Tensor]:
        """Apply given params: the Triton pass where it applies (see the class docstring), else torch."""
        own = self.split(params)
        if self.plan.prefix and triton.accepts(images, self.backend):
            if not isinstance(images, PackedBatch):
                _check_pixels(images, "Compose")
            return triton.run(self.plan, self.transforms, images, own)
        if isinstance(images, PackedBatch):
            images = images.unpack()
        return torch_executor.run(self.plan.stages, self.transforms, images, own)

    def __repr__(self) -> str:
        lines = ",\n".join(f"    {transform!r}" for transform in self.transforms)
        suffix = "" if self.fuse else ", fuse=False"
        if self.backend != "auto":
            suffix += f", backend={self.backend!r}"
        return f"Compose([\n{lines}\n]{suffix})"
