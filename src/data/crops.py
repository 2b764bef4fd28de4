"""Decoding only what the crop needs, and the crops: ``TrainCrop`` (the field's RandomResizedCrop + flip) and
``EvalCrop`` (Resize + CenterCrop), each also ``from_file``: the box drawn from the JPEG header's full size with the
same numbers as on the decoded image, then only the box's region decoded (libjpeg-turbo's ``jpeg_crop_scanline`` and
``jpeg_skip_scanlines``: ``src/data/jpeg_roi.c``), at the largest DCT scale (1/2, 1/4, 1/8) that keeps the box (or
the short side) at least at the size it is resized to, then resized the rest of the way. At full scale the region's
pixels are the full decode's. ``dataset.decode="full"`` decodes every pixel first: the reference (docs/streaming.md:
why this decoder, and the pixel bound). Without the compiled decoder (no C compiler or libjpeg headers at install)
whole images are decoded, at the DCT scale through PIL's ``draft``. Apart from ``src/data/image_files.py`` (reading
files in workers, the dataset, the sampler, batches)."""
import ctypes
import importlib.util
import io
import logging
import math
import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from src.data.image_files import _read_error, read_bytes, read_image

log = logging.getLogger(__name__)
DCT_SCALES = (8, 4, 2)  # libjpeg's fast reductions; its N/8 ones (7/8, 3/4, ...) decode slower than full size here
MARGIN = 4  # columns decoded beyond the region on each side: its edge columns' chroma then has both neighbours
DECODER_VERSION = 2  # jpeg_roi_version() of src/data/jpeg_roi.c: its functions' signatures as called here
_decoder: Optional[object] = None  # the compiled region decoder (ctypes), loaded once per process; False: not built


def region_decoder() -> Optional[ctypes.CDLL]:
    """libjpeg-turbo's region decoding (the extension ``src.data._jpeg_roi``), or None when it was not built."""
    global _decoder
    if _decoder is None:
        _decoder = False
        spec = importlib.util.find_spec("src.data._jpeg_roi")
        try:
            lib = ctypes.CDLL(spec.origin) if spec is not None and spec.origin else None
        except OSError as e:
            log.warning("the region JPEG decoder does not load (%s): decoding whole images", e)
            lib = None
        if lib is not None and (not hasattr(lib, "jpeg_roi_version") or lib.jpeg_roi_version() != DECODER_VERSION):
            log.warning("the region JPEG decoder in %s is an older build: decoding whole images until it is "
                        "rebuilt (pip install -e .)", spec.origin)
            lib = None
        if lib is not None:
            lib.jpeg_roi_decode.restype = ctypes.c_int
            lib.jpeg_roi_decode.argtypes = [ctypes.c_void_p, ctypes.c_ulong, *[ctypes.c_int] * 7, ctypes.c_void_p,
                                            ctypes.c_char_p, ctypes.c_int]
            _decoder = lib
    return _decoder or None


def jpeg_size(data: torch.Tensor) -> Optional[tuple[int, int]]:
    """(height, width) from a JPEG's frame header if libjpeg can decode it to RGB at a reduced scale (1 or 3
    components), else None (not a JPEG, CMYK, or a header cut short: the full decode decides, and says why)."""
    b = data.numpy()
    if len(b) < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return None
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        marker = int(b[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = int(b[i + 5]) << 8 | int(b[i + 6]), int(b[i + 7]) << 8 | int(b[i + 8])
            components = int(b[i + 9])
            return (height, width) if components in (1, 3) and height and width else None
        i += 2 + (int(b[i + 2]) << 8 | int(b[i + 3]))
    return None


def reduction(size: tuple[int, int], needed: tuple[int, int]) -> int:
    """The largest DCT reduction d (8, 4, 2; else 1) keeping both sides of ``size`` / d >= ``needed``."""
    return next((d for d in DCT_SCALES if size[0] / d >= needed[0] and size[1] / d >= needed[1]), 1)


def scaled_region(box: tuple[int, int, int, int], size: tuple[int, int], d: int) -> tuple[int, int, int, int]:
    """The box (top, left, h, w) of an image of ``size`` (height, width) on that image decoded at 1/d, whose size is
    libjpeg's (each side rounded up): corners rounded to the reduced grid, the far ones kept inside it."""
    if d == 1:
        return box
    top, left, h, w = box
    sh, sw = -(-size[0] // d), -(-size[1] // d)
    sy, sx = sh / size[0], sw / size[1]
    top, left = int(round(top * sy)), int(round(left * sx))
    return top, left, min(int(round(h * sy)), sh - top), min(int(round(w * sx)), sw - left)


def decode_region(data: torch.Tensor, d: int, region: tuple[int, int, int, int], path: str, flip: bool = False,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rows and columns ``region`` (top, left, h, w) of the JPEG ``data`` decoded at 1/d in the DCT domain, uint8
    (3, h, w), channels-last in memory, mirrored left to right if ``flip``; into ``out`` (uint8, at least h·w·3
    elements) if given. The compiled decoder decodes no more than the region needs; without it the whole image is
    decoded (at full scale with torchvision.io, as decode="full"; reduced through PIL's ``draft``)."""
    top, left, h, w = region
    lib = region_decoder()
    if lib is None:
        image = read_image(path, data) if d == 1 else _pil_reduced(data, d, path)
        image = image[:, top:top + h, left:left + w]
        return image.flip(-1) if flip else image
    out = torch.empty(h * w * 3, dtype=torch.uint8) if out is None else out[:h * w * 3]
    message = ctypes.create_string_buffer(200)
    if lib.jpeg_roi_decode(data.data_ptr(), data.numel(), d, top, left, h, w, MARGIN, int(flip), out.data_ptr(),
                           message, len(message)) != 0:
        raise _read_error(path, ValueError(message.value.decode(errors="replace")))
    return out.view(h, w, 3).permute(2, 0, 1)


def _pil_reduced(data: torch.Tensor, d: int, path: str) -> torch.Tensor:
    """The JPEG ``data`` decoded whole at 1/d through PIL's ``draft`` (libjpeg-turbo), uint8 (3, h, w)."""
    try:
        with Image.open(io.BytesIO(data.numpy())) as image:
            width, height = image.size
            image.draft("RGB", (width // d, height // d))
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _read_error(path, e) from None
    with warnings.catch_warnings():  # read-only pixels: the crop only reads them
        warnings.simplefilter("ignore", UserWarning)
        # (3, h, w) as a view of the (h, w, 3) pixels: channels-last memory, torch's fast uint8 antialiased resize.
        return torch.from_numpy(pixels).permute(2, 0, 1)


def resized_crop(image: torch.Tensor, top: int, left: int, h: int, w: int, size: int) -> torch.Tensor:
    """``TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)``, the same pixels; on the CPU the box
    of a uint8 image is first copied out as a channels-last block and the result stays channels-last.

    Why: a decoded JPEG is channels-last in memory, but the box is a strided view of it, so torch's uint8
    antialiased kernel (which works on interleaved pixels) takes its generic path and re-packs its output to
    planar (C, H, W); on the copied box it takes the fast one. 0.36 against 0.58 ms per image (minimum of 5 rounds,
    bench.stream's 500 × 375 JPEGs, 2-core Xeon VM under load, 2026-12-06). ``collate_images`` keeps the layout."""
    if image.device.type != "cpu" or image.dtype != torch.uint8 or image.ndim != 3:
        return TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    box = image[:, top:top + h, left:left + w]
    if (h, w) == (size, size):
        return box
    # (1, 3, h, w) channels-last with the batch stride of a real batch (h·w·3): a region decoded alone is already
    # interleaved, and unsqueezing it as it is gives the batch stride 3, which sends the kernel to its planar output.
    box = box.permute(1, 2, 0).contiguous().unsqueeze(0).permute(0, 3, 1, 2)
    return F.interpolate(box, size=[size, size], mode="bilinear", align_corners=False, antialias=True)[0]


class TrainCrop:
    """The field's training augmentation: ``transforms.v2.RandomResizedCrop(image_size, scale=(min_scale, 1),
    ratio=(3/4, 4/3))`` then ``RandomHorizontalFlip()``, with RandomResizedCrop's own choice of the box (ten tries
    of an area fraction and a log-uniform aspect ratio, then the central crop of the clamped ratio) applied with
    ``transforms.v2.functional.resized_crop`` (antialiased).

    The draws come from a numpy generator handed in per image, ``sample_rng(seed, epoch, index)``: the same crop
    in any worker and after a resume, and no reseeding of torch's 5 KB Mersenne state per image (0.4 ms, a fifth of
    a 500 × 375 JPEG's decoding time here)."""

    RATIO = (3 / 4, 4 / 3)

    def __init__(self, image_size: int, min_scale: float = 0.08, flip: bool = True) -> None:
        self.image_size, self.min_scale, self.flip = image_size, min_scale, flip
        self._buffer: Optional[torch.Tensor] = None  # from_file's decode buffer, kept from one image to the next

    def __getstate__(self) -> dict:  # the decode buffer stays in the process that filled it
        return {**self.__dict__, "_buffer": None}

    def box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, h, w), as ``v2.RandomResizedCrop`` draws it."""
        area = height * width
        log_ratio = (math.log(self.RATIO[0]), math.log(self.RATIO[1]))
        for _ in range(10):
            target = area * rng.uniform(self.min_scale, 1.0)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        ratio = width / height
        if ratio < self.RATIO[0]:
            w, h = width, int(round(width / self.RATIO[0]))
        elif ratio > self.RATIO[1]:
            h, w = height, int(round(height * self.RATIO[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return self.crop(image, self.box(*image.shape[-2:], rng), rng)

    def crop(self, image: torch.Tensor, box: tuple[int, int, int, int], rng: np.random.Generator) -> torch.Tensor:
        """The box (top, left, h, w) of ``image``, resized, flipped or not."""
        out = resized_crop(image, *box, self.image_size)
        return TF.horizontal_flip(out) if self.flip and rng.random() < 0.5 else out

    def from_file(self, path: str, rng: np.random.Generator) -> torch.Tensor:
        """As ``self(read_image(path), rng)``, the same box and flip from the same draws, decoding only the box, at
        the DCT scale that keeps it at least ``image_size`` on both sides. The region is decoded mirrored when the
        crop flips (the antialiased resize commutes with the mirror: the same pixels, tested), into a buffer this
        crop keeps from one image to the next (the resize copies out of it)."""
        data = read_bytes(path, local=True)
        size = jpeg_size(data)
        if size is None:
            return self(read_image(path, data), rng)
        box = self.box(*size, rng)
        flip = self.flip and rng.random() < 0.5
        d = reduction(box[2:], (self.image_size, self.image_size))
        region = scaled_region(box, size, d)
        if self._buffer is None or self._buffer.numel() < region[2] * region[3] * 3:
            self._buffer = torch.empty(region[2] * region[3] * 3, dtype=torch.uint8)
        decoded = decode_region(data, d, region, path, flip, self._buffer)
        out = resized_crop(decoded, 0, 0, *region[2:], self.image_size)
        return out.clone() if out.data_ptr() == decoded.data_ptr() else out  # a box of the output size: not resized


class EvalCrop:
    """Resize the short side to ``resize_size`` (256), then the centre ``image_size`` (224) square (v2's
    ``Resize`` + ``CenterCrop``)."""

    def __init__(self, image_size: int, resize_size: int) -> None:
        self.image_size, self.resize_size = image_size, resize_size
        self.transform = v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size)])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(image)

    def from_file(self, path: str) -> torch.Tensor:
        """As ``self(read_image(path))``, decoding at the DCT scale that keeps the short side >= resize_size."""
        data = read_bytes(path, local=True)
        size = jpeg_size(data)
        d = 1 if size is None else reduction((min(size),) * 2, (self.resize_size,) * 2)
        if d == 1:
            return self(read_image(path, data))
        return self(decode_region(data, d, scaled_region((0, 0, *size), size, d), path))


def eval_transform(image_size: int, resize_size: int) -> EvalCrop:
    return EvalCrop(image_size, resize_size)
