"""Batched decoding with NVIDIA nvImageCodec: hardware JPEG engines, then nvJPEG (hybrid/CUDA),
then nvImageCodec's CPU codecs, then gpuaug's own CPU decoder, per image.

``pip install -e ".[gpu]"`` brings ``nvidia-nvimgcodec-cu13`` (and ``nvidia-nvjpeg``). Its CPU
backend (libjpeg-turbo, OpenCV, libtiff, ...) runs without a GPU, so the same code path is tested
on machines without one (``NvImageCodecDecoder(torch.device("cpu"))``).

Every image comes out as PIL's ``Image.open(...).convert("RGB")`` gives it, as
:func:`gpuaug.io.decode.decode_cpu` does; what nvImageCodec does differently goes to ``decode_cpu``:

* measured equal to PIL on nvImageCodec's CPU backend (0 levels, ``tests/test_nvdecode.py``):
  baseline, progressive, 4:4:4/4:2:2/4:2:0, restart-marker, grayscale and CMYK JPEGs; RGB, RGBA,
  grayscale, gray+alpha, palette (with transparency) and 1-bit PNGs; WebP; BMP; TIFF; PNM;
  JPEG 2000; and region decodes of all of them equal the full decode cropped;
* sent to ``decode_cpu`` instead: GIF, ICO, TGA and other formats nvImageCodec does not read;
  images of more than 8 bits per sample (nvImageCodec scales 16-bit to 8 bits, PIL clips);
  truncated JPEGs (nvJPEG fills the missing rows with grey; libjpeg-turbo reports them); any image
  nvImageCodec returns None for;
* refused before any decoder runs (:func:`gpuaug.io.decode.read_header`): unreadable headers,
  images over ``max_pixels``, JPEGs whose markers libjpeg-turbo refuses (garbled data).

On a GPU only JPEGs with 1 or 3 components go to the GPU stages (hardware engines, then nvJPEG
hybrid/CUDA); CMYK JPEGs and other formats go to nvImageCodec's CPU codecs, which run in its own
thread pool (``num_threads``) and match PIL exactly. The GPU JPEG decoders differ from
libjpeg-turbo's integer IDCT and chroma upsampling by a few levels (``tests/test_nvdecode.py``
bounds them). Regions: the CPU codecs decode only the
region (exact); the GPU stages decode the whole image and return the region as a view (exact,
and faster: asked for regions, the engines and nvJPEG passed most images on to the CPU).

The backends' decode rates on a GPU are measured by ``python -m benchmarks loader`` (its
decode-only rows) and recorded in ``benchmarks/results/``.

EXIF orientation is ignored by default (nvImageCodec applies it by default; it is turned off), and
``exif_orientation=True`` applies it with :func:`gpuaug.io.decode.apply_orientation`, as every other
gpuaug decoder does.

What cannot be detected: corrupt compressed data that holds no invalid marker decodes to wrong
pixels silently on every decoder (libjpeg-turbo only warns, nvJPEG and the hardware engines do not
check); :func:`gpuaug.io.decode.read_header` refuses only what libjpeg-turbo always refuses.

Example:
    >>> import io, torch; from PIL import Image
    >>> buffer = io.BytesIO(); Image.new("RGB", (6, 4), (200, 10, 10)).save(buffer, "PNG")
    >>> decoder = NvImageCodecDecoder(torch.device("cpu"))                 # doctest: +SKIP
    >>> decoder.decode([buffer.getvalue()], ["red.png"])[0].shape          # doctest: +SKIP
    torch.Size([3, 4, 6])
"""

from __future__ import annotations

import io
import os
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gpuaug.io.decode import (
    DEFAULT_MAX_PIXELS,
    DecodeError,
    ImageHeader,
    _check_pixels,
    apply_orientation,
    decode_cpu,
    read_header,
)

__all__ = ["BACKENDS", "NvImageCodecDecoder", "nvimgcodec_available"]

BACKENDS = ("auto", "hw", "hybrid", "cuda", "cpu")

_nvimgcodec: Any = None
_import_lock = threading.Lock()


def _module():
    """nvImageCodec, imported once (None when it is not installed or cannot load)."""
    global _nvimgcodec
    with _import_lock:
        if _nvimgcodec is None:
            # our fallback reports every failure (a DecodeError naming the file); nvImageCodec's own
            # log would print one line per image it hands back. PYNVIMGCODEC_VERBOSITY=2 shows it.
            os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "0")
            try:
                from nvidia import nvimgcodec

                nvimgcodec.Decoder  # noqa: B018 - a broken install fails here, not at first use
                _nvimgcodec = nvimgcodec
            except (ImportError, OSError, AttributeError):
                _nvimgcodec = False
        return _nvimgcodec or None


def nvimgcodec_available() -> bool:
    """Whether nvImageCodec (``nvidia-nvimgcodec-cu13``) imports here.

    Example:
        >>> isinstance(nvimgcodec_available(), bool)
        True
    """
    return _module() is not None


def _as_array(data: Any) -> np.ndarray:
    """Encoded bytes as a 1-D uint8 array, without a copy where the input allows it."""
    if isinstance(data, torch.Tensor):
        if data.device.type != "cpu" or data.dtype != torch.uint8:
            raise TypeError(f"encoded images must be uint8 CPU tensors, got {data.dtype} on {data.device}")
        return data.reshape(-1).numpy()
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"encoded images must be uint8 arrays, got {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    raise TypeError(f"encoded images must be bytes, memoryview, a uint8 array or tensor; got {type(data).__name__}")


def _probe_jpeg() -> bytes:
    """A 64x64 baseline 4:2:0 JPEG: what the hardware engines decode if the GPU has them."""
    from PIL import Image

    buffer = io.BytesIO()
    gradient = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8)
    Image.fromarray(np.stack([gradient, gradient.T, 255 - gradient], -1)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class NvImageCodecDecoder:
    """Decode a batch of encoded images with nvImageCodec, falling back per image.

    Stages, each given only the images the ones before could not decode:

    ========  ==================================================================================
    ``hw``    nvImageCodec ``HW_GPU_ONLY``: the GPU's hardware JPEG engines (A100, H100, H200, ...)
    ``gpu``   nvImageCodec ``HYBRID_CPU_GPU``: nvJPEG, Huffman on the CPU (``hybrid``) or the GPU (``cuda``)
    ``cpu``   nvImageCodec ``CPU_ONLY``: libjpeg-turbo, OpenCV, libtiff, ... in its thread pool
    ``pil``   :func:`gpuaug.io.decode.decode_cpu` (libjpeg-turbo through torchvision, PIL)
    ========  ==================================================================================

    ``backend`` picks the nvImageCodec stages: ``"auto"`` all three (``hw`` only where a probe
    JPEG decodes on the engines), ``"hw"``, ``"hybrid"`` or ``"cuda"`` that one stage then ``cpu``,
    ``"cpu"`` only ``cpu``. A CPU ``device`` always gets ``cpu`` alone
    (``Decoder(device_id=NVIMGCODEC_DEVICE_CPU_ONLY, backends=[Backend(BackendKind.CPU_ONLY)])``).
    ``pil`` always comes last: an image nothing decodes is a :class:`~gpuaug.io.decode.DecodeError`
    naming its path, in its place in the result list.

    Args:
        device: where the decoded images go (``cuda`` or ``cpu``).
        backend: one of :data:`BACKENDS`.
        exif_orientation: apply the EXIF orientation (default False, like every gpuaug decoder).
        max_pixels: refuse images with more pixels than this (the header is read first); None: no limit.
        num_threads: nvImageCodec's CPU threads (0: one per core).

    Attributes:
        backends_in_use: the stages this decoder runs, in order.
        stats: ``Counter`` of images decoded per stage (``hw``, ``gpu``, ``cpu``, ``pil``), plus
            ``failed`` and ``region`` (images the CPU codecs decoded as their region only).

    Shape:
        ``decode`` returns one uint8 ``[3, H, W]`` tensor per image on ``device`` (a permuted view
        of nvImageCodec's HWC buffer, which the tensor keeps alive; read it on ``stream``), or
        ``[3, h, w]`` for a region ``(top, left, h, w)``.

    Not thread-safe: one decoder per thread (the loader's producer thread owns one).

    Example:
        >>> decoder = NvImageCodecDecoder(torch.device("cpu"))            # doctest: +SKIP
        >>> images = decoder.decode([jpeg_bytes], ["a.jpg"])                # doctest: +SKIP
    """

    def __init__(
        self,
        device: torch.device | str,
        backend: str = "auto",
        *,
        exif_orientation: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        num_threads: int = 0,
    ) -> None:
        nvimgcodec = _module()
        if nvimgcodec is None:
            raise ImportError('NvImageCodecDecoder needs nvImageCodec: pip install -e ".[gpu]" (nvidia-nvimgcodec-cu13)')
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels < 1):
            raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
        if not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(f"num_threads must be an int >= 0, got {num_threads!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError(f"device must be cuda or cpu, got {self.device}")
        self.backend = backend
        self.exif_orientation = exif_orientation
        self.max_pixels = max_pixels
        self.stats: Counter[str] = Counter()
        self._device_buffer = nvimgcodec.ImageBufferKind.STRIDED_DEVICE
        self._params = nvimgcodec.DecodeParams(
            apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB, allow_any_depth=False
        )
        kind = nvimgcodec.BackendKind
        self._stages: list[tuple[str, Any]] = []
        if self.device.type == "cpu":
            cpu = nvimgcodec.Decoder(
                device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                max_num_cpu_threads=num_threads,
                backends=[nvimgcodec.Backend(kind.CPU_ONLY)],
            )
            self._stages.append(("cpu", cpu))
        else:
            device_id = self.device.index

            def make(kind, options=""):
                return nvimgcodec.Decoder(
                    device_id=device_id, max_num_cpu_threads=num_threads, backends=[nvimgcodec.Backend(kind)], options=options
                )

            with torch.cuda.device(self.device):
                if backend in ("auto", "hw"):
                    hardware = make(kind.HW_GPU_ONLY)
                    if backend == "hw" or self._decodes_probe(hardware):
                        self._stages.append(("hw", hardware))
                if backend in ("auto", "hybrid"):
                    # nvJPEG's decoder is nvImageCodec's HYBRID_CPU_GPU kind (GPU_ONLY decoded no JPEG on
                    # an H200): Huffman on the CPU below 1 M pixels, on the GPU above
                    self._stages.append(("gpu", make(kind.HYBRID_CPU_GPU)))
                elif backend == "cuda":  # the same decoder with Huffman decoding on the GPU for every size
                    self._stages.append(("gpu", make(kind.HYBRID_CPU_GPU, "nvjpeg_cuda_decoder:hybrid_huffman_threshold=0")))
                self._stages.append(("cpu", make(kind.CPU_ONLY)))
        self.backends_in_use: tuple[str, ...] = (*(name for name, _ in self._stages), "pil")

    def _decodes_probe(self, decoder: Any) -> bool:
        """Whether ``decoder`` decodes a small baseline JPEG (hardware engines: only where the GPU has them)."""
        nvimgcodec = _module()
        try:
            image = decoder.decode(nvimgcodec.CodeStream(_probe_jpeg()), params=self._params)
        except RuntimeError:
            return False
        if image is None:
            return False
        torch.cuda.current_stream(self.device).synchronize()
        return True

    # -- decoding ------------------------------------------------------------------------------
    def decode(
        self,
        datas: Sequence[Any],
        paths: Sequence[str],
        regions: torch.Tensor | None = None,
        stream: torch.cuda.Stream | None = None,
        *,
        headers: Sequence[ImageHeader | None] | None = None,
    ) -> list[torch.Tensor | DecodeError]:
        """Decode a batch in one nvImageCodec call per stage.

        Args:
            datas: encoded files (bytes, memoryview, uint8 numpy arrays or uint8 CPU tensors).
            paths: one per file, named in errors.
            regions: optional int64 ``[B, 4]`` CPU tensor of ``(top, left, height, width)`` boxes in
                the (oriented) image: only that region is decoded, equal to the full decode cropped.
            stream: the CUDA stream to decode on (default: the current stream); read the results
                on it, or make the reading stream wait on it.
            headers: each file's ``read_header(data, path, exif_orientation, max_pixels=...)``, if
                the caller already has them (otherwise they are read here).

        Returns:
            One entry per file, in order: an RGB uint8 ``[3, H, W]`` tensor on ``device``, or a
            :class:`~gpuaug.io.decode.DecodeError` naming the file.

        Raises:
            ValueError: when the lengths disagree or a region lies outside its image.
        """
        count = len(datas)
        if len(paths) != count or (headers is not None and len(headers) != count):
            raise ValueError(f"datas, paths (and headers) must have the same length, got {count}, {len(paths)}")
        boxes = self._check_regions(regions, count)
        results: list[torch.Tensor | DecodeError | None] = [None] * count
        arrays: list[np.ndarray | None] = [None] * count
        infos: list[ImageHeader | None] = [None] * count
        pending: list[int] = []
        for index in range(count):
            try:
                array = _as_array(datas[index])
                header = headers[index] if headers is not None else None
                if header is None:
                    header = read_header(array.data, paths[index], self.exif_orientation, max_pixels=self.max_pixels)
                else:
                    _check_pixels(header.height, header.width, paths[index], self.max_pixels)
                if boxes is not None:
                    self._check_box(boxes[index], header, paths[index])
            except DecodeError as error:
                results[index] = error
                continue
            arrays[index], infos[index] = array, header
            pending.append(index)

        if self.device.type == "cuda":
            stream = stream if stream is not None else torch.cuda.current_stream(self.device)
            with torch.cuda.device(self.device), torch.cuda.stream(stream):
                self._run_stages(pending, arrays, infos, boxes, paths, results, stream)
        else:
            self._run_stages(pending, arrays, infos, boxes, paths, results, None)
        self.stats["failed"] += sum(isinstance(result, DecodeError) for result in results)
        return results  # type: ignore[return-value]

    def _run_stages(self, pending, arrays, infos, boxes, paths, results, stream) -> None:
        nvimgcodec = _module()
        code_streams: dict[int, Any] = {}  # whole images
        region_streams: dict[int, Any] = {}  # their regions, for the CPU codecs
        for index in list(pending):
            try:  # the header is parsed lazily, at the first property read
                code_stream = nvimgcodec.CodeStream(arrays[index])
                deep = code_stream.precision > 8 or code_stream.dtype != np.uint8
            except RuntimeError:  # a format nvImageCodec does not read (GIF, ICO, ...)
                continue
            if deep:
                continue  # nvImageCodec scales 16-bit samples; PIL's convert("RGB") clips them
            header = infos[index]
            if header.format == "jpeg" and not header.complete:
                continue  # nvJPEG would fill the missing rows with grey: libjpeg-turbo reports it
            code_streams[index] = code_stream
            if boxes is not None and header.orientation == 1:
                top, left, height, width = boxes[index]
                region = nvimgcodec.Region(top, left, top + height, left + width)
                region_streams[index] = code_stream.get_sub_code_stream(region=region)
        cuda_stream = stream.cuda_stream if stream is not None else 0
        for name, decoder in self._stages:
            batch = [index for index in pending if index in code_streams and self._stage_takes(name, infos[index])]
            if not batch:
                continue
            # Regions only for the CPU codecs: the hardware engines and nvJPEG hand most region
            # requests on to the CPU, while a GPU decode of the whole image and a crop (a view) costs
            # nothing more; libjpeg-turbo's region decode is faster than its whole decode, and exact.
            streams = region_streams if name == "cpu" else {}
            sources = [streams.get(index, code_streams[index]) for index in batch]
            try:
                images = decoder.decode(sources, params=self._params, cuda_stream=cuda_stream)
            except RuntimeError:  # the whole call failed: each image alone, so one file cannot fail the rest
                images = [self._decode_one(decoder, source, cuda_stream) for source in sources]
            for index, image in zip(batch, images):
                tensor = self._to_tensor(image, stream) if image is not None else None
                if tensor is None:
                    continue
                results[index] = self._finish(tensor, index, infos[index], boxes, cropped=index in streams)
                self.stats[name] += 1
            pending = [index for index in pending if results[index] is None]
        for index in pending:  # what nvImageCodec did not decode: gpuaug's CPU decoder, or its error
            try:
                image = decode_cpu(
                    arrays[index].tobytes(),
                    paths[index],
                    exif_orientation=False,
                    header=infos[index],
                    max_pixels=self.max_pixels,
                )
            except DecodeError as error:
                results[index] = error
                continue
            self.stats["pil"] += 1
            results[index] = self._finish(image.to(self.device, non_blocking=False), index, infos[index], boxes, cropped=False)

    def _decode_one(self, decoder: Any, code_stream: Any, cuda_stream: int) -> Any:
        try:
            return decoder.decode(code_stream, params=self._params, cuda_stream=cuda_stream)
        except RuntimeError:
            return None

    @staticmethod
    def _stage_takes(name: str, header: ImageHeader) -> bool:
        """GPU stages take JPEGs with 1 or 3 components; CMYK and other formats go to the CPU codecs."""
        if name in ("hw", "gpu"):
            return header.format == "jpeg" and header.components in (1, 3)
        return True

    def _to_tensor(self, image: Any, stream: torch.cuda.Stream | None) -> torch.Tensor | None:
        """nvImageCodec's HWC image as a ``[3, H, W]`` view that keeps the image alive (None if unusable)."""
        if image.buffer_kind == self._device_buffer:
            tensor = torch.from_dlpack(image)  # on the current (= decode) stream: no extra synchronisation
        else:
            tensor = torch.from_numpy(np.asarray(image))  # the array's base is the image: kept alive
            if self.device.type == "cuda":
                tensor = tensor.to(self.device)
        if tensor.dim() != 3 or tensor.shape[-1] != 3 or tensor.dtype != torch.uint8:
            return None
        return tensor.permute(2, 0, 1)

    def _finish(self, image: torch.Tensor, index: int, header: ImageHeader, boxes, *, cropped: bool) -> torch.Tensor:
        """Orientation (EXIF) and the region crop for images decoded whole."""
        if self.exif_orientation and header.orientation != 1:
            image = apply_orientation(image, header.orientation)
        if boxes is not None and not cropped:
            top, left, height, width = boxes[index]
            image = image[:, top : top + height, left : left + width]
        elif boxes is not None:
            self.stats["region"] += 1
        return image

    # -- regions -------------------------------------------------------------------------------
    @staticmethod
    def _check_regions(regions: torch.Tensor | None, count: int) -> list[tuple[int, int, int, int]] | None:
        if regions is None:
            return None
        if not isinstance(regions, torch.Tensor) or regions.shape != (count, 4) or regions.is_floating_point():
            raise ValueError(f"regions must be an integer [B, 4] tensor (top, left, height, width) with B={count}")
        return [tuple(int(value) for value in row) for row in regions.cpu().tolist()]

    @staticmethod
    def _check_box(box: tuple[int, int, int, int], header: ImageHeader, path: str) -> None:
        top, left, height, width = box
        full_height, full_width = header.oriented_size
        if height < 1 or width < 1 or top < 0 or left < 0 or top + height > full_height or left + width > full_width:
            raise ValueError(f"region {box} (top, left, height, width) lies outside {path} ({full_height}x{full_width})")

    def __repr__(self) -> str:
        return f"NvImageCodecDecoder(device={self.device}, backend={self.backend!r}, stages={list(self.backends_in_use)})"
