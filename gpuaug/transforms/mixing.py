"""MixUp, CutMix and the switch between them (``RandomMix``), on ``(images, labels)`` -> ``(images, soft targets)``.

timm's ``Mixup`` semantics (``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``, ``prob``,
``switch_prob``, ``correct_lam``, ``label_smoothing``, ``num_classes``) with three modes:

- ``"batch"``: one draw for the batch, every image mixed with the rolled batch (image ``b`` with
  ``b - 1``), as torchvision v2's ``MixUp``/``CutMix``;
- ``"pair"``: one draw per pair ``(b, B - 1 - b)``, both images of a pair mixed with each other (timm);
- ``"elem"``: one draw per image, each mixed with image ``B - 1 - b`` (timm).

The draws use a ``torch.Generator`` (Beta variates from its uniforms: no NumPy, no global state), so
a seeded generator replays them; ``t(images, labels, params=p)`` replays a draw exactly. They are not
``Transform`` s (they need the labels): call them on a batch in the training loop, or hand one to the
loader as ``batch_transform``, which calls ``batch_transform(images, labels, generator=generator)``.

Example:
    >>> mix = RandomMix(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", num_classes=10)
    >>> images, targets = mix(torch.rand(8, 3, 32, 32), torch.arange(8), generator=torch.Generator().manual_seed(0))
    >>> images.shape, targets.shape, bool(torch.allclose(targets.sum(1), torch.ones(8)))
    (torch.Size([8, 3, 32, 32]), torch.Size([8, 10]), True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gpuaug import functional as F
from gpuaug.functional import mixing as M
from gpuaug.transforms.base import BatchInfo, Params, _check_finite, _check_probability, _uniform

__all__ = ["CutMix", "MixUp", "RandomMix", "sample_beta"]

MODES = ("batch", "pair", "elem")
_PROPOSALS = 16  # Marsaglia-Tsang proposals per variate; all rejected has probability < 1e-20


def _log_gamma_variates(info: BatchInfo, generator: torch.Generator | None, shape: float) -> Tensor:
    """``log`` of ``[n]`` Gamma(shape, 1) variates (Marsaglia-Tsang with a fixed number of proposals; boosted below 1)."""
    boost = shape < 1.0
    k = shape + 1.0 if boost else shape
    d = k - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    u1, u2, u3 = (_uniform(info, generator, _PROPOSALS, dtype=torch.float64) for _ in range(3))
    normal = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos((2.0 * math.pi) * u2)  # Box-Muller
    v = (1.0 + c * normal) ** 3
    accept = (v > 0) & (torch.log1p(-u3) < 0.5 * normal**2 + d - d * v + d * torch.log(v.clamp(min=1e-300)))
    first = accept.to(torch.int8).argmax(dim=1, keepdim=True)
    log_value = torch.log(d * v.clamp(min=1e-300)).gather(1, first).squeeze(1)
    log_value = torch.where(accept.any(dim=1), log_value, torch.full_like(log_value, math.log(d)))
    if boost:
        log_value = log_value + torch.log1p(-_uniform(info, generator, dtype=torch.float64)) / shape
    return log_value


def sample_beta(count: int, alpha: float, generator: torch.Generator | None = None, device: Any = "cpu") -> Tensor:
    """``[count]`` float64 Beta(alpha, alpha) variates drawn from ``generator`` (on its device, then ``device``).

    Example:
        >>> lam = sample_beta(4000, 0.4, torch.Generator().manual_seed(0))
        >>> bool(0 <= lam.min() and lam.max() <= 1 and abs(lam.mean() - 0.5) < 0.02)
        True
    """
    info = BatchInfo(count, torch.device(device), ())
    return _beta(info, generator, alpha)


def _beta(info: BatchInfo, generator: torch.Generator | None, alpha: float) -> Tensor:
    first, second = _log_gamma_variates(info, generator, alpha), _log_gamma_variates(info, generator, alpha)
    return torch.sigmoid(first - second)


class RandomMix:
    """MixUp or CutMix per batch, pair or image, with soft targets (timm's ``Mixup``).

    Per draw: with probability ``prob`` the images are mixed, by CutMix with probability
    ``switch_prob`` when both alphas are set (else by the one that is set); MixUp's lambda is
    Beta(``mixup_alpha``, ``mixup_alpha``); CutMix draws lambda from Beta(``cutmix_alpha``,
    ``cutmix_alpha``), a box of side ``int(H * sqrt(1 - lambda))`` by ``int(W * sqrt(1 - lambda))``
    centred uniformly and clipped (or, with ``cutmix_minmax``, a box whose sides are uniform fractions
    of the image), and with ``correct_lam`` (or ``cutmix_minmax``) lambda becomes the area the image keeps.
    Targets are ``lam * y + (1 - lam) * y[partner]`` with one-hot rows smoothed by ``label_smoothing``.

    Args:
        mixup_alpha, cutmix_alpha: Beta parameters (>= 0; 0 disables; one of them must be set).
        cutmix_minmax: ``None`` or ``(min, max)`` box side fractions, ``0 < min < max <= 1`` (sets ``cutmix_alpha``
            to 1, as timm).
        prob: probability of mixing a draw. switch_prob: probability of CutMix when both are set.
        mode: ``"batch"``, ``"pair"`` or ``"elem"`` (see the module).
        correct_lam: use the box's area for CutMix's lambda.
        label_smoothing: in [0, 1).
        num_classes: number of classes (the targets' width).

    Call:
        ``mix(images, labels, params=None, generator=None) -> (images, targets)``: images ``[B, C, H, W]``
        uint8 or float (a new tensor, same dtype), labels ``[B]`` int (or ``[B, K]`` soft rows), targets
        ``[B, num_classes]`` float32. Params ``lam`` ``[B]`` float64 (the corrected lambda), ``cutmix`` ``[B]``
        bool, ``box`` ``[B, 4]`` int64 ``(top, left, height, width)``, ``partner`` ``[B]`` int64.

    Example:
        >>> images, targets = RandomMix(num_classes=3)(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
        >>> targets.shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
    ) -> None:
        self.mixup_alpha = self._check_alpha(mixup_alpha, "mixup_alpha")
        self.cutmix_alpha = self._check_alpha(cutmix_alpha, "cutmix_alpha")
        self.cutmix_minmax = None
        if cutmix_minmax is not None:
            if (
                not isinstance(cutmix_minmax, Sequence)
                or len(cutmix_minmax) != 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in cutmix_minmax)
                or not 0.0
                < _check_finite(cutmix_minmax[0], "cutmix_minmax")
                < _check_finite(cutmix_minmax[1], "cutmix_minmax")
                <= 1.0
            ):
                raise ValueError(
                    f"cutmix_minmax must be None or a (min, max) pair with 0 < min < max <= 1, got {cutmix_minmax!r}"
                )
            self.cutmix_minmax = (float(cutmix_minmax[0]), float(cutmix_minmax[1]))
            self.cutmix_alpha = 1.0  # as timm: the box comes from minmax, lambda from its area
        if self.mixup_alpha == 0.0 and self.cutmix_alpha == 0.0:
            raise ValueError("mixup_alpha or cutmix_alpha must be > 0 (both are 0: nothing to mix)")
        self.prob = _check_probability(prob, "prob")
        self.switch_prob = _check_probability(switch_prob, "switch_prob")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        if not isinstance(correct_lam, bool):
            raise ValueError(f"correct_lam must be a bool, got {correct_lam!r}")
        self.correct_lam = correct_lam
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = int(num_classes)

    @staticmethod
    def _check_alpha(alpha: Any, name: str) -> float:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or _check_finite(alpha, name) < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {alpha!r}")
        return float(alpha)

    # -- draws ------------------------------------------------------------------------------------
    def _draw(self, info: BatchInfo, generator: torch.Generator | None, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
        """``[n]`` lambdas (corrected), CutMix flags and boxes for ``info.batch`` independent draws."""
        mixup = _beta(info, generator, self.mixup_alpha) if self.mixup_alpha > 0 else None
        cutmix_lam = _beta(info, generator, self.cutmix_alpha) if self.cutmix_alpha > 0 else None
        if mixup is not None and cutmix_lam is not None:
            use_cutmix = _uniform(info, generator, dtype=torch.float64) < self.switch_prob
            lam = torch.where(use_cutmix, cutmix_lam, mixup)
        elif mixup is not None:
            use_cutmix, lam = torch.zeros(info.batch, dtype=torch.bool, device=info.device), mixup
        else:
            use_cutmix, lam = torch.ones(info.batch, dtype=torch.bool, device=info.device), cutmix_lam
        mixed = _uniform(info, generator, dtype=torch.float64) < self.prob
        lam = torch.where(mixed, lam, torch.ones_like(lam))
        use_cutmix = use_cutmix & mixed
        box, box_lam = self._boxes(info, generator, lam, height, width)
        if self.correct_lam or self.cutmix_minmax is not None:
            lam = torch.where(use_cutmix, box_lam, lam)
        return lam, use_cutmix, box

    def _boxes(
        self, info: BatchInfo, generator: torch.Generator | None, lam: Tensor, height: int, width: int
    ) -> tuple[Tensor, Tensor]:
        """timm's ``rand_bbox`` (or ``rand_bbox_minmax``) per draw: ``[n, 4]`` boxes and ``1 - area / (H W)``."""
        u = _uniform(info, generator, 4, dtype=torch.float64)
        if self.cutmix_minmax is None:
            ratio = torch.sqrt((1.0 - lam).clamp(min=0.0))
            cut_h, cut_w = torch.floor(height * ratio), torch.floor(width * ratio)
            cy, cx = torch.floor(u[:, 0] * height), torch.floor(u[:, 1] * width)
            top = (cy - torch.div(cut_h, 2, rounding_mode="floor")).clamp(0, height)
            bottom = (cy + torch.div(cut_h, 2, rounding_mode="floor")).clamp(0, height)
            left = (cx - torch.div(cut_w, 2, rounding_mode="floor")).clamp(0, width)
            right = (cx + torch.div(cut_w, 2, rounding_mode="floor")).clamp(0, width)
        else:
            low, high = self.cutmix_minmax
            h_low, h_high = int(height * low), int(height * high)
            w_low, w_high = int(width * low), int(width * high)
            cut_h = h_low + torch.floor(u[:, 0] * max(h_high - h_low, 0))
            cut_w = w_low + torch.floor(u[:, 1] * max(w_high - w_low, 0))
            top, left = torch.floor(u[:, 2] * (height - cut_h)), torch.floor(u[:, 3] * (width - cut_w))
            bottom, right = top + cut_h, left + cut_w
        box = torch.stack([top, left, bottom - top, right - left], dim=1).to(torch.int64)
        return box, 1.0 - (bottom - top) * (right - left) / float(height * width)

    def make_params(self, images: Tensor, generator: torch.Generator | None = None) -> Params:
        """The draws for a ``[B, C, H, W]`` batch (see the class), on the images' device."""
        batch, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        device = images.device
        index = torch.arange(batch, device=device)
        if self.mode == "batch":
            lam, cutmix, box = self._draw(BatchInfo(1, device, ()), generator, height, width)
            lam, cutmix, box = lam.expand(batch), cutmix.expand(batch), box.expand(batch, 4)
            partner = (index - 1) % batch  # torchvision: the batch rolled by one
        elif self.mode == "elem":
            lam, cutmix, box = self._draw(BatchInfo(batch, device, ()), generator, height, width)
            partner = batch - 1 - index
        else:
            half = batch // 2
            lam, cutmix, box = self._draw(BatchInfo(half, device, ()), generator, height, width)
            middle = batch - 2 * half  # an odd batch's middle image pairs with itself: not mixed
            lam = torch.cat([lam, torch.ones(middle, dtype=lam.dtype, device=device), lam.flip(0)])
            cutmix = torch.cat([cutmix, torch.zeros(middle, dtype=torch.bool, device=device), cutmix.flip(0)])
            box = torch.cat([box, torch.zeros(middle, 4, dtype=box.dtype, device=device), box.flip(0)])
            partner = batch - 1 - index
        return {"lam": lam.contiguous(), "cutmix": cutmix.contiguous(), "box": box.contiguous(), "partner": partner}

    def apply(self, images: Tensor, labels: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        mixed = M.mix(images, params["partner"], params["lam"], params["cutmix"], params["box"])
        targets = M.soft_targets(
            labels.to(images.device, non_blocking=True), self.num_classes, params["partner"], params["lam"], self.label_smoothing
        )
        return mixed, targets

    def __call__(
        self, images: Tensor, labels: Tensor, params: Params | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        name = type(self).__name__
        F.check_images(images, name)
        if not isinstance(labels, Tensor) or labels.shape[:1] != images.shape[:1] or labels.ndim not in (1, 2):
            raise ValueError(f"{name}: labels must be a [B] or [B, num_classes] tensor for images of shape {tuple(images.shape)}")
        if labels.ndim == 2 and labels.shape[1] != self.num_classes:
            raise ValueError(f"{name}: labels have {labels.shape[1]} columns, num_classes is {self.num_classes}")
        if labels.ndim == 1 and labels.is_floating_point():
            raise ValueError(f"{name}: [B] labels must be class indices (an integer tensor), got {labels.dtype}")
        if params is None:
            params = self.make_params(images, generator)
        return self.apply(images, labels, params)

    def __repr__(self) -> str:
        fields = {
            "mixup_alpha": self.mixup_alpha,
            "cutmix_alpha": self.cutmix_alpha,
            "cutmix_minmax": self.cutmix_minmax,
            "prob": self.prob,
            "switch_prob": self.switch_prob,
            "mode": self.mode,
            "correct_lam": self.correct_lam,
            "label_smoothing": self.label_smoothing,
            "num_classes": self.num_classes,
        }
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in fields.items())})"


class MixUp(RandomMix):
    """MixUp alone (torchvision's name): ``RandomMix(mixup_alpha=alpha, cutmix_alpha=0, ...)``; one lambda
    per batch with the rolled batch by default, as torchvision v2.

    Example:
        >>> MixUp(alpha=0.2, num_classes=5)(torch.rand(4, 3, 8, 8), torch.arange(4))[1].shape
        torch.Size([4, 5])
    """

    def __init__(
        self, alpha: float = 1.0, num_classes: int = 1000, mode: str = "batch", prob: float = 1.0, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(
            mixup_alpha=self._check_positive(alpha),
            cutmix_alpha=0.0,
            prob=prob,
            mode=mode,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )

    @staticmethod
    def _check_positive(alpha: Any) -> float:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not _check_finite(alpha, "alpha") > 0:
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        return float(alpha)


class CutMix(RandomMix):
    """CutMix alone (torchvision's name): ``RandomMix(mixup_alpha=0, cutmix_alpha=alpha, ...)``.

    Example:
        >>> CutMix(alpha=1.0, num_classes=5, mode="elem")(torch.rand(4, 3, 8, 8), torch.arange(4))[0].shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        alpha: float = 1.0,
        num_classes: int = 1000,
        mode: str = "batch",
        prob: float = 1.0,
        label_smoothing: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        correct_lam: bool = True,
    ) -> None:
        super().__init__(
            mixup_alpha=0.0,
            cutmix_alpha=MixUp._check_positive(alpha),
            cutmix_minmax=cutmix_minmax,
            prob=prob,
            mode=mode,
            correct_lam=correct_lam,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )
