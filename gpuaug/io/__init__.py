"""Input: what a batch is made of before any transform touches it.

Owns the packed ragged batch (``PackedBatch``), the file sources (``FileList``, ``ImageFolder``,
positioned reads with size limits), image headers and the CPU decoder (``decode``), nvImageCodec
(``nvdecode``) and the ``Decoder`` protocol that the loader chooses once (``decoders``). It may
import torch, torchvision.io, PIL, numpy and nvImageCodec; it never imports transforms, fusion or
the loaders.
"""
