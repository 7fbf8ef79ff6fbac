"""Interop: other libraries' pipelines as gpuaug ones.

Owns ``from_torchvision`` (torchvision v1/v2 pipelines, converted op by op, refusing what cannot be
converted exactly), ``from_kornia`` (a Kornia pipeline whose first op crops or resizes) and
``from_timm`` (timm's RandAugment strings, refusing what cannot be reproduced exactly). It
imports the transforms and the libraries it converts from; nothing below it imports it, and it
never imports the loaders.
"""
