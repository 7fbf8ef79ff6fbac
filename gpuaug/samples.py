"""The documented import path ``gpuaug.samples``: the same module as ``gpuaug.tools.samples``."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("gpuaug.tools.samples")
