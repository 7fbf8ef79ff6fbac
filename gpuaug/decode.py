"""The documented import path ``gpuaug.decode``: the same module as ``gpuaug.io.decode``."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("gpuaug.io.decode")
