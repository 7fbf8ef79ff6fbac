"""The plan of a pipeline: which transforms run together in one pass, read by every executor.

A ``Compose`` builds one :class:`Plan` from its members' fusion roles (``Transform.fusion``, see
``gpuaug.fusion.ROLES``) when it is made. The torch executor runs ``plan.stages``; a one-pass
executor (Triton, DALI) runs the first ``plan.prefix`` transforms at once, then
``plan.after_prefix`` on torch; the loader reads ``plan.first_geometric`` to decode only what that
op reads. A new op joins a fused pass by declaring a role and contributing to ``FusedOps``: the
planner reads roles, never classes.

The grammar, over roles:

* ``resample`` stage: ``[flip]* crop [flip]*`` (flips around a crop join its resampling);
* ``color`` stage: ``[jitter (one) | gray | flip]* [cast | normalize (one)]+`` (one affine pass);
* ``single`` stage: any other transform, on its own.

The one-pass prefix: ``[flip]* (crop | resize | window) [window]* [flip]* [colour run]`` where the
geometry ends in one size for all images (``fixed_output``), or, without geometry, a colour run.

Example:
    >>> plan = Plan.of(["crop", "flip", "jitter", "normalize"], [True, False, False, False])
    >>> [(stage.kind, stage.members) for stage in plan.stages], plan.prefix, plan.first_geometric
    ([('resample', (0, 1)), ('color', (2, 3))], 4, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GEOMETRIC", "Plan", "Stage"]

GEOMETRIC = ("crop", "resize", "window")
"""The roles that change image sizes (the first of them makes a ragged batch one size)."""


@dataclass(frozen=True)
class Stage:
    """One step of the torch executor: ``kind`` (``"resample"``, ``"color"`` or ``"single"``) over
    the transforms at positions ``members``."""

    kind: str
    members: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """What runs fused and what runs op by op, for a pipeline's roles.

    Attributes:
        roles: each transform's fusion role (``None``: it runs on its own).
        stages: the torch executor's stages over the whole pipeline.
        prefix: how many leading transforms one fused pass (Triton, DALI) covers; 0 for none.
        after_prefix: the torch stages of the transforms after the prefix.
        first_geometric: position of the first geometric op when only flips come before it
            (where the loader's region decoding applies), else ``None``.
    """

    roles: tuple[str | None, ...]
    stages: tuple[Stage, ...]
    prefix: int
    after_prefix: tuple[Stage, ...]
    first_geometric: int | None

    @staticmethod
    def of(roles: Sequence[str | None], fixed_output: Sequence[bool], fuse: bool = True) -> Plan:
        """The plan for transforms with these ``roles`` (``fixed_output``: a geometric op gives every
        image one size); ``fuse=False`` runs every transform on its own and fuses nothing."""
        roles = tuple(roles)
        if fuse:
            stages, prefix = _stages(roles, 0), _prefix(roles, tuple(fixed_output))
        else:
            stages, prefix = tuple(Stage("single", (index,)) for index in range(len(roles))), 0
        return Plan(roles, stages, prefix, _stages(roles, prefix) if fuse else stages[prefix:], _first_geometric(roles))

    def prefix_geometric(self) -> bool:
        """Whether the fused prefix resamples or crops (so it makes a ragged batch one size)."""
        return any(role in GEOMETRIC for role in self.roles[: self.prefix])


def _role(roles: tuple[str | None, ...], index: int) -> str | None:
    return roles[index] if index < len(roles) else None


def _skip(roles: tuple[str | None, ...], index: int, role: str) -> int:
    while _role(roles, index) == role:
        index += 1
    return index


def _color_run(roles: tuple[str | None, ...], index: int) -> tuple[int, int]:
    """``(end, tail)`` of ``[jitter (one) | gray | flip]* [cast | normalize (one)]+`` from ``index``."""
    end, jitters = index, 0
    while _role(roles, end) in ("gray", "flip") or (_role(roles, end) == "jitter" and jitters == 0):
        jitters += _role(roles, end) == "jitter"
        end += 1
    tail, normalizes = end, 0
    while _role(roles, tail) == "cast" or (_role(roles, tail) == "normalize" and normalizes == 0):
        normalizes += _role(roles, tail) == "normalize"
        tail += 1
    return end, tail


def _stages(roles: tuple[str | None, ...], start: int) -> tuple[Stage, ...]:
    stages, index = [], start
    while index < len(roles):
        end = _skip(roles, index, "flip")
        if _role(roles, end) == "crop":
            end = _skip(roles, end + 1, "flip")
            stages.append(Stage("resample", tuple(range(index, end))))
            index = end
            continue
        end, tail = _color_run(roles, index)
        if tail > end:
            stages.append(Stage("color", tuple(range(index, tail))))
            index = tail
        else:
            stages.append(Stage("single", (index,)))
            index += 1
    return tuple(stages)


def _prefix(roles: tuple[str | None, ...], fixed_output: tuple[bool, ...]) -> int:
    index = _skip(roles, 0, "flip")
    geometric = _role(roles, index) in GEOMETRIC
    if geometric:
        end = _skip(roles, index + 1, "window")
        if not fixed_output[end - 1]:
            return 0
        index = _skip(roles, end, "flip")
    end, tail = _color_run(roles, index)
    if tail > end:
        return tail
    return index if geometric else 0


def _first_geometric(roles: tuple[str | None, ...]) -> int | None:
    index = _skip(roles, 0, "flip")
    return index if _role(roles, index) in GEOMETRIC else None
