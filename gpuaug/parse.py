"""Parse a transform written as text, safely: gpuaug transform names and literal arguments only.

The text is parsed with :mod:`ast` and never evaluated: a call must name a gpuaug transform, and
its arguments must be literals (numbers, strings, tuples, lists, ``True``/``False``/``None``), a
dtype name (``float32``, ``torch.bfloat16``) or, inside ``Compose([...])``, other transform calls.

Example:
    >>> parse_transform("RandomResizedCrop(200, scale=(0.1, 1), ratio=(0.5, 2))")
    RandomResizedCrop(size=(200, 200), scale=(0.1, 1.0), ratio=(0.5, 2.0), antialias=True)
    >>> len(parse_transform("RandomHorizontalFlip(), ColorJitter(0.5)").transforms)
    2
"""

from __future__ import annotations

import ast
from typing import Any

import torch

from gpuaug import transforms as T

__all__ = ["TransformSyntaxError", "parse_transform"]

TRANSFORMS = {
    name: getattr(T, name)
    for name in T.__all__
    if isinstance(getattr(T, name), type) and issubclass(getattr(T, name), T.Transform) and name != "Transform"
}
DTYPES = {name: getattr(torch, name) for name in ("uint8", "float16", "bfloat16", "float32", "float64", "half", "float")}
CONSTANTS = {"IMAGENET_MEAN": T.IMAGENET_MEAN, "IMAGENET_STD": T.IMAGENET_STD}
MODULE_PREFIXES = ("ga", "gpuaug", "torch")


class TransformSyntaxError(ValueError):
    """The transform text is not a valid gpuaug transform expression (message: one line)."""


def parse_transform(text: str) -> T.Transform:
    """Build the transform that ``text`` describes.

    A single call gives that transform; several calls separated by commas, or a list of calls,
    give a ``Compose``.

    Raises:
        TransformSyntaxError: one line saying what is wrong (unknown name, non-literal
            argument, bad argument value, syntax error).
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise TransformSyntaxError(f"cannot parse transform {text!r}: {error.msg}") from None
    node = tree.body
    if isinstance(node, (ast.Tuple, ast.List)):
        return T.Compose([_transform(element) for element in node.elts])
    return _transform(node)


def _name(node: ast.expr) -> str | None:
    """``Name`` or ``prefix.Name`` (prefix one of ga, gpuaug, torch), else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in MODULE_PREFIXES:
        return node.attr
    return None


def _transform(node: ast.expr) -> T.Transform:
    if not isinstance(node, ast.Call):
        raise TransformSyntaxError(f"expected a transform call such as RandomHorizontalFlip(), got {ast.unparse(node)!r}")
    name = _name(node.func)
    if name not in TRANSFORMS:
        known = ", ".join(sorted(TRANSFORMS))
        raise TransformSyntaxError(f"unknown transform {ast.unparse(node.func)!r}; known: {known}")
    args = [_argument(arg, name) for arg in node.args]
    kwargs = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise TransformSyntaxError(f"{name}: **kwargs are not allowed")
        kwargs[keyword.arg] = _argument(keyword.value, name)
    try:
        return TRANSFORMS[name](*args, **kwargs)
    except TypeError as error:
        raise TransformSyntaxError(f"{name}: {error}") from None
    except ValueError as error:
        raise TransformSyntaxError(f"{name}: {error}") from None


def _argument(node: ast.expr, owner: str) -> Any:
    if isinstance(node, ast.Call):
        return _transform(node)
    name = _name(node)
    if name is not None:
        if name in DTYPES:
            return DTYPES[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in ("True", "False", "None"):  # pragma: no cover - parsed as constants
            return ast.literal_eval(node)
        raise TransformSyntaxError(f"{owner}: unknown name {ast.unparse(node)!r} (only literals and dtype names)")
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_argument(element, owner) for element in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        raise TransformSyntaxError(f"{owner}: argument {ast.unparse(node)!r} is not a literal") from None
