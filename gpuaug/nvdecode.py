"""The documented import path ``gpuaug.nvdecode``: the same module as ``gpuaug.io.nvdecode``."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("gpuaug.io.nvdecode")
