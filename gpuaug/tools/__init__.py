"""Tools for people: the bundled sample photos (``samples``), the one-line transform parser
(``parse``) and the preview grid (``preview``) behind ``python -m gpuaug``. They use the library's
public layers (transforms, interop); the library never imports them, except ``samples`` as data.
"""
