"""Parse a transform written as text, safely: gpuaug transform names and literal arguments only.

The text is parsed with :mod:`ast` and never evaluated: a call must name a gpuaug transform, and
its arguments must be literals (numbers, strings, tuples, lists, ``True``/``False``/``None``), a
dtype name (``float32``, ``torch.bfloat16``) or, inside ``Compose([...])``, other transform calls.
Kornia's augmentation modules are named ``K.Name`` (or ``kornia.augmentation.Name``), with
literal arguments too: ``RandomResizedCrop(200), K.RandomAffine(30), K.RandomErasing(p=0.5)``.

Hostile text is refused in one line before it can exhaust the parser: at most ``MAX_LENGTH``
characters (checked before :func:`ast.parse`, so ``'1+' * 20000`` never reaches it), and at most
``MAX_DEPTH`` levels of nesting (checked on the tree without recursion, before anything walks it
recursively, so 500 unary minus signs fail cleanly); the parser's own ``RecursionError`` and
``MemoryError`` are caught as a last resort.

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
from gpuaug.interop.kornia import as_transform

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "TransformSyntaxError", "parse_transform"]

MAX_LENGTH = 10_000
"""Longest transform text accepted (characters); the seed's default augmentation takes 150."""
MAX_DEPTH = 32
"""Deepest syntax tree accepted; ``Compose([RandomResizedCrop(8, scale=(-0.1, 1))])`` is 9 deep."""

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
            argument, bad argument value, syntax error, text too long or too deeply nested).
    """
    if not isinstance(text, str):
        raise TransformSyntaxError(f"transform text must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise TransformSyntaxError(f"transform text is {len(text)} characters long; the limit is {MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise TransformSyntaxError(f"cannot parse transform {_shorten(text)!r}: {error.msg}") from None
    except (RecursionError, MemoryError):
        raise TransformSyntaxError(f"transform text is nested too deeply (the limit is {MAX_DEPTH} levels)") from None
    except ValueError as error:  # null bytes; an integer literal of more than 4300 digits
        raise TransformSyntaxError(f"cannot parse transform: {error}") from None
    depth = _depth(tree)
    if depth > MAX_DEPTH:
        raise TransformSyntaxError(f"transform text is nested {depth} levels deep; the limit is {MAX_DEPTH}")
    node = tree.body
    if isinstance(node, (ast.Tuple, ast.List)):
        return T.Compose([_transform(element) for element in node.elts])
    return as_transform(_transform(node))


def _depth(tree: ast.AST) -> int:
    """Depth of the syntax tree, walked with an explicit stack (the tree may be too deep to recurse)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for a one-line message."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _source(node: ast.AST) -> str:
    return _shorten(ast.unparse(node))


def _name(node: ast.expr) -> str | None:
    """``Name`` or ``prefix.Name`` (prefix one of ga, gpuaug, torch), else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in MODULE_PREFIXES:
        return node.attr
    return None


def _kornia_class(node: ast.expr) -> type | None:
    """The class ``K.Name`` / ``kornia.augmentation.Name`` names, if it is one of Kornia's augmentations or containers."""
    if not isinstance(node, ast.Attribute):
        return None
    owner = node.value
    if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name):
        owner_name = f"{owner.value.id}.{owner.attr}"
    else:
        owner_name = owner.id if isinstance(owner, ast.Name) else None
    if owner_name not in ("K", "kornia.augmentation"):
        return None
    import kornia.augmentation as K
    from kornia.augmentation.base import _BasicAugmentationBase

    found = getattr(K, node.attr, None) if not node.attr.startswith("_") else None
    if isinstance(found, type) and issubclass(found, (_BasicAugmentationBase, K.ImageSequential)):
        return found
    raise TransformSyntaxError(f"unknown Kornia augmentation {_source(node)!r} (kornia.augmentation has no such module)")


def _transform(node: ast.expr) -> Any:
    """The transform (or, for ``K.Name(...)``, the Kornia module: Compose and parse_transform wrap it) a call builds."""
    if not isinstance(node, ast.Call):
        raise TransformSyntaxError(f"expected a transform call such as RandomHorizontalFlip(), got {_source(node)!r}")
    kornia_class = _kornia_class(node.func)
    name = kornia_class.__name__ if kornia_class is not None else _name(node.func)
    if kornia_class is None and name not in TRANSFORMS:
        known = ", ".join(sorted(TRANSFORMS))
        raise TransformSyntaxError(f"unknown transform {_source(node.func)!r}; known: {known}, and Kornia's as K.Name")
    args = [_argument(arg, name) for arg in node.args]
    kwargs = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise TransformSyntaxError(f"{name}: **kwargs are not allowed")
        kwargs[keyword.arg] = _argument(keyword.value, name)
    if kornia_class is not None:
        _check_kornia_ints(name, [*args, *kwargs.values()])
    # Kornia's constructors check with assertions, RuntimeErrors and more; with literal arguments any error is the text's
    errors = (Exception,) if kornia_class is not None else (TypeError, ValueError, OverflowError)
    try:
        return (kornia_class or TRANSFORMS[name])(*args, **kwargs)
    except errors as error:
        raise TransformSyntaxError(f"{name}: {_shorten(' '.join(str(error).split()), 300)}") from None


def _check_kornia_ints(name: str, values: list[Any]) -> None:
    """Integer arguments of a Kornia module (sizes, kernel sizes) within ``MAX_SIZE``: Kornia does not bound them."""
    while values:
        value = values.pop()
        if isinstance(value, (list, tuple)):
            values.extend(value)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > T.MAX_SIZE:
            raise TransformSyntaxError(f"{name}: integer arguments must be at most {T.MAX_SIZE}, got {_shorten(str(value), 40)}")


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
        raise TransformSyntaxError(f"{owner}: unknown name {_source(node)!r} (only literals and dtype names)")
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_argument(element, owner) for element in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        raise TransformSyntaxError(f"{owner}: argument {_source(node)!r} is not a literal") from None
