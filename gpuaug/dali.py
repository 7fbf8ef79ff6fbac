"""The documented import path ``gpuaug.dali``: the same module as ``gpuaug.loader.dali``."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("gpuaug.loader.dali")
