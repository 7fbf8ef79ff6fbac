"""Every ```python block of README.md runs as written, alone (issue 18 #26).

Each block is executed by itself in a fresh namespace (so a block that uses ``ga``, ``augment`` or
``dataset`` must define them: nothing leaks from an earlier block), with ``tempfile``'s folder
pointed at the test's ``tmp_path`` so the stand-in data the snippets write is cleaned up.

A block that cannot run on every machine says so in a comment line the test recognises:

    # readme-test: requires cuda        (skipped without a CUDA GPU)
    # readme-test: requires dali        (skipped without the dali extra; runs DALI's CPU pipeline)
    # readme-test: requires dali-gpu    (skipped without both: DALI's GPU pipeline)

Any other ``# readme-test:`` comment fails the test, so a typo cannot silently skip a block.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_MARK = re.compile(r"^\s*#\s*readme-test:\s*(.*?)\s*$", re.M)


def _has_dali() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:
        return False


REQUIREMENTS = {
    "requires cuda": (torch.cuda.is_available, "needs a CUDA GPU"),
    "requires dali": (_has_dali, "needs the dali extra"),
    "requires dali-gpu": (lambda: _has_dali() and torch.cuda.is_available(), "needs DALI and a CUDA GPU"),
}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number of the opening fence, code)`` for every ```python block of ``text``."""
    return [(text[: match.start()].count("\n") + 1, match.group(1)) for match in _BLOCK.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_its_snippets():
    assert len(BLOCKS) >= 4  # transforms, Kornia, the loader, DALI


def test_block_extraction():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\n# readme-test: requires cuda\ny = 2\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (8, "# readme-test: requires cuda\ny = 2\n")]


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_block_runs_alone(line, code, tmp_path, monkeypatch):
    for mark in _MARK.findall(code):
        assert mark in REQUIREMENTS, f"README.md:{line}: unknown '# readme-test: {mark}' (known: {sorted(REQUIREMENTS)})"
        available, reason = REQUIREMENTS[mark]
        if not available():
            pytest.skip(f"README.md:{line} {reason}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # stand-in data lands in tmp_path
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})  # noqa: S102 - our own README
