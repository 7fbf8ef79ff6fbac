"""The documented import path ``gpuaug.packed``: the same module as ``gpuaug.io.packed``."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("gpuaug.io.packed")
