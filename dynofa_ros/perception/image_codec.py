"""sensor_msgs Image / CompressedImage fields → HxWx3 RGB uint8, with the same rules as cv_bridge.

Why not cv_bridge: it is not installable where ROS comes from PyPI, and its PyPI port breaks on
NumPy 2. The output is what ``cv_bridge.imgmsg_to_cv2(msg, "rgb8")`` gives (vision_opencv, ROS 2
branch), so a robot that switches to cv_bridge sees the same pixels:

- colour and mono encodings, YUV 4:2:2 and the eight ``bayer_*`` encodings are converted with the
  OpenCV colour code cv_bridge uses (Bayer: ``bayer_rggb`` → ``COLOR_BayerBG2RGB`` and so on, the
  OpenCV names being offset by one pixel);
- 16-bit encodings are converted first and then scaled as cv_bridge's ``convertTo(CV_8U, 255/65535)``,
  i.e. ``round(v / 257)`` (not the high byte, which differs on about a quarter of the values);
- non-colour encodings (``8UC1``, ``16UC1``, ``32FC1`` … depth and measurement images) are refused,
  as cv_bridge refuses to turn them into ``rgb8``: classifying a depth map as a grey picture is wrong;
- compressed frames are decoded like ``cv::imdecode(…, IMREAD_UNCHANGED)``: EXIF orientation is
  ignored (the frame is not rotated), grey and alpha are converted afterwards.

Decoding at the size the network needs (``min_side``): the network sees a centre square of 160-224 px,
while cameras send 1280x720 or 1920x1080 JPEGs whose full-size decode is the dearest step of a frame
on an embedded CPU. libjpeg can scale the inverse DCT and decode at 1/2, 1/4 or 1/8 of the size: each
8x8 block becomes 4x4, 2x2 or 1x1 pixels from its low-frequency coefficients, an area-like low-pass
downsample done inside the decoder at a fraction of the work. With ``min_side``, an 8-bit DCT JPEG
(told from its frame header, not from the ``format`` text) is decoded with the largest factor whose
output, ``ceil(h/f) x ceil(w/f)``, still has a centre crop (``preprocess.CROP_FRACTION``) of at least
``min_side`` pixels, so the resize in ``preprocess`` stays a downscale, never an upscale, and the tensor
differs from the full decode's only by the two low-pass filters. PNG, 12-bit or lossless JPEG, and
``min_side=None`` decode at full size exactly as above; EXIF orientation is still ignored. The frame
returned is then smaller than the header's size: use it for the network, not for geometry. Measured
(``bench/decode_size.py``, one x86 core, decode + preprocess): 0.42x the full-size time at 1920x1080 (1/4),
0.58x at 1280x720 and 0.66x at 640x480 for 160 px (1/2); entropy decoding, which no scaling avoids,
and the resize in preprocess remain.

Why views: rclpy hands ``data`` over as a buffer; ``np.frombuffer`` over it and a strided view that
skips row padding cost nothing, and a single ``cv2.cvtColor`` does any colour conversion
(rclpy#763: per-element Python costs ~30× more). ``rgb8`` without padding is returned as a view of
the message buffer, so the caller must keep the message alive while it uses the frame.

Decompression bombs: a compressed frame is decoded only when its width and height were read from its
own header (JPEG: every segment up to the frame header is walked; PNG: IHDR) and fit ``max_pixels``.
The decoders allocate from those same header fields, so decode memory is bounded by ``max_pixels``;
a frame whose header cannot be read (another format, a malformed segment, no frame header before the
scan) is refused without decoding.

Every malformed input raises :class:`ImageError` with a one-line message that says what is wrong and
with which numbers, so a node can log it once and drop the frame. Nothing here imports rclpy: the
functions take the message's fields (or any object that has them), so they are tested directly.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..inference.preprocess import CROP_FRACTION

#: Default pixel limit: 8K UHD (7680×4320 = 33.2 Mpx) passes, a 8000×8000 (64 Mpx) frame does not.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An image message that cannot become a network input; the message is one clear line."""


@dataclass(frozen=True)
class _Encoding:
    channels: int          # values per pixel in the buffer (YUV 4:2:2 packs 2 bytes per pixel)
    bytes_per_value: int   # 1 or 2
    to_rgb: int | None     # cv2 conversion code, None when already RGB
    even_width: bool = False
    min_size: int = 1      # Bayer demosaicing needs at least 2x2 pixels


def _bayer(code: int, bytes_per_value: int) -> _Encoding:
    return _Encoding(1, bytes_per_value, code, min_size=2)


_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, 1, None),
    "bgr8": _Encoding(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": _Encoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    # sensor_msgs/image_encodings.hpp: "yuv422" is UYVY byte order, "yuv422_yuy2" is YUYV.
    "yuv422": _Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, even_width=True),
    "uyvy": _Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, even_width=True),
    "yuv422_yuy2": _Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, even_width=True),
    "yuyv": _Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, even_width=True),
    # 16-bit: converted, then scaled to 8 bits as cv_bridge does (round(v * 255 / 65535)).
    "mono16": _Encoding(1, 2, cv2.COLOR_GRAY2RGB),
    "rgb16": _Encoding(3, 2, None),
    "bgr16": _Encoding(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": _Encoding(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": _Encoding(4, 2, cv2.COLOR_BGRA2RGB),
    # Bayer: cv_bridge's codes (sensor_msgs' first two pixels name the pattern; OpenCV's name the 2nd row).
    "bayer_rggb8": _bayer(cv2.COLOR_BayerBG2RGB, 1),
    "bayer_bggr8": _bayer(cv2.COLOR_BayerRG2RGB, 1),
    "bayer_gbrg8": _bayer(cv2.COLOR_BayerGR2RGB, 1),
    "bayer_grbg8": _bayer(cv2.COLOR_BayerGB2RGB, 1),
    "bayer_rggb16": _bayer(cv2.COLOR_BayerBG2RGB, 2),
    "bayer_bggr16": _bayer(cv2.COLOR_BayerRG2RGB, 2),
    "bayer_gbrg16": _bayer(cv2.COLOR_BayerGR2RGB, 2),
    "bayer_grbg16": _bayer(cv2.COLOR_BayerGB2RGB, 2),
}

#: Encodings accepted by :func:`decode_image`, for messages and documentation.
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)

#: sensor_msgs' generic OpenCV types (8UC1, 16UC1, 32FC1, 64FC3, ...): no colour meaning, refused.
_NON_COLOUR = re.compile(r"(8U|8S|16U|16S|32S|32F|64F)C[1-4]?")

#: Longest encoding string quoted in an error (a malformed message may carry a huge one).
_MAX_QUOTED = 40


def _buffer(data: Any) -> np.ndarray:
    """A uint8 view over ``data`` (bytes, bytearray, array.array('B'), memoryview, ndarray), no copy."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        # rclpy may hand a list of ints for very old message types; one vectorised copy.
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image: {width}x{height} pixels")
    if height * width > max_pixels:
        raise ImageError(f"image too large: {width}x{height} = {height * width} pixels > max_image_pixels "
                         f"{max_pixels}")


def _quote(text: str) -> str:
    return repr(text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "…")


def _unknown_encoding(encoding: str) -> ImageError:
    if _NON_COLOUR.fullmatch(encoding):
        return ImageError(f"encoding {_quote(encoding)} is not a colour format (a depth or measurement image); "
                          "refused, as cv_bridge refuses converting it to rgb8")
    return ImageError(f"unknown encoding {_quote(encoding)}; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit → 8-bit exactly as cv_bridge scales (``convertTo(CV_8U, 255.0 / 65535.0)``): round(v / 257)."""
    return cv2.convertScaleAbs(values, alpha=255.0 / 65535.0)


def decode_image(height: int, width: int, encoding: str, step: int, is_bigendian: int | bool, data: Any,
                 *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The fields of a sensor_msgs/Image → HxWx3 RGB uint8 (a view when the data already is RGB8)."""
    height, width, step = int(height), int(width), int(step)
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise _unknown_encoding(str(encoding))
    _check_pixels(height, width, max_pixels)
    if min(height, width) < spec.min_size:
        raise ImageError(f"{encoding} needs at least {spec.min_size}x{spec.min_size} pixels, got {width}x{height}")
    row_bytes = width * spec.channels * spec.bytes_per_value
    if step < row_bytes:
        raise ImageError(f"step {step} < width*channels*bytes ({width}*{spec.channels}*{spec.bytes_per_value}"
                         f" = {row_bytes}) for {encoding}")
    if spec.bytes_per_value == 2 and step % 2:
        raise ImageError(f"step {step} is odd for 16-bit encoding {encoding}")
    if spec.even_width and width % 2:
        raise ImageError(f"width {width} is odd; {encoding} packs two pixels per 4 bytes")
    buf = _buffer(data)
    needed = step * height
    if buf.size < needed:
        raise ImageError(f"data too short: {buf.size} bytes < step*height ({step}*{height} = {needed})")
    # Row-padded view: rows of `step` bytes, keep the first `row_bytes` of each. No copy.
    rows = buf[:needed].reshape(height, step)[:, :row_bytes]
    if spec.bytes_per_value == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        values = rows.view(dtype) if rows.flags.c_contiguous else np.ascontiguousarray(rows).view(dtype)
        pixels = values.astype(np.uint16, copy=False).reshape(height, width, spec.channels)
    else:
        pixels = rows.reshape(height, width, spec.channels)
    if spec.to_rgb is not None:
        if spec.channels == 1:
            pixels = pixels[:, :, 0]
        pixels = cv2.cvtColor(np.ascontiguousarray(pixels) if spec.min_size > 1 else pixels, spec.to_rgb)
    # As cv_bridge: colour conversion first, in the source depth, then one scaling to 8 bits.
    return to_8bit(pixels) if spec.bytes_per_value == 2 else pixels


# ---------------------------------------------------------------------- compressed: size from the header
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); not DHT/JPG/DAC.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: Markers without a length field: TEM, RST0-7, SOI (ITU T.81 B.1.1.3).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
#: Real JPEGs have a few dozen segments before the frame header; walking more is refused (CPU bound).
MAX_JPEG_SEGMENTS = 10_000


#: DCT-based start-of-frame markers that libjpeg decodes with a scaled IDCT (baseline, extended,
#: progressive; Huffman or arithmetic). Lossless (C3, CB) has no DCT; hierarchical ones it does not decode.
_DCT_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})
#: Reduced-size decodes, largest reduction first: (factor, cv2 flag). IGNORE_ORIENTATION: the REDUCED
#: flags alone would apply EXIF rotation, which ``IMREAD_UNCHANGED`` (cv_bridge's flag) does not.
_REDUCED_FLAGS: dict[int, int] = {
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
}


class HeaderError(ImageError):
    """The dimensions of a compressed frame cannot be read from its header: it is not decoded."""


@dataclass(frozen=True)
class _Header:
    height: int
    width: int
    scalable: bool  # an 8-bit DCT JPEG: libjpeg can decode it at 1/2, 1/4, 1/8 of the size


def _png_header(buf: np.ndarray) -> _Header:
    head = bytes(buf[:24])
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise HeaderError("PNG without an IHDR chunk first: dimensions unreadable, not decoded")
    width, height = struct.unpack(">II", head[16:24])
    return _Header(height, width, scalable=False)


def _jpeg_header(buf: np.ndarray) -> _Header:
    """Size (and whether libjpeg can scale it) from the first start-of-frame segment, walking every segment
    before it.

    The walk follows ITU T.81: fill bytes, standalone markers (TEM, RSTn) and length-prefixed segments of
    any size, through the whole buffer (APP segments may add up to far more than 64 KB). It stops with
    :class:`HeaderError` at anything else: no SOF before the scan (SOS) or the end (EOI), a byte where a
    marker must be, a segment running past the data, or more than ``MAX_JPEG_SEGMENTS`` steps.
    """
    size = buf.size
    i = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        if i + 2 > size:
            raise HeaderError(f"JPEG ends at byte {size} before its frame header: dimensions unreadable, not decoded")
        if buf[i] != 0xFF:
            raise HeaderError(f"JPEG byte {i} is 0x{int(buf[i]):02X} where a marker must be: dimensions "
                              "unreadable, not decoded")
        marker = int(buf[i + 1])
        if marker == 0xFF:      # fill byte before a marker
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            raise HeaderError(f"JPEG reaches its {'end' if marker == 0xD9 else 'scan'} at byte {i} without a frame "
                              "header: dimensions unreadable, not decoded")
        if i + 4 > size:
            raise HeaderError(f"JPEG segment at byte {i} is cut: dimensions unreadable, not decoded")
        length = (int(buf[i + 2]) << 8) | int(buf[i + 3])
        if length < 2 or i + 2 + length > size:
            raise HeaderError(f"JPEG segment 0xFF{marker:02X} at byte {i} has length {length} for {size - i - 2} "
                              "bytes left: dimensions unreadable, not decoded")
        if marker in _SOF_MARKERS:
            if length < 8:
                raise HeaderError(f"JPEG frame header at byte {i} is too short ({length} bytes), not decoded")
            precision = int(buf[i + 4])
            height = (int(buf[i + 5]) << 8) | int(buf[i + 6])
            width = (int(buf[i + 7]) << 8) | int(buf[i + 8])
            return _Header(height, width, scalable=marker in _DCT_SOF_MARKERS and precision == 8)
        i += 2 + length
    raise HeaderError(f"JPEG has more than {MAX_JPEG_SEGMENTS} segments before its frame header, not decoded")


def _header(buf: np.ndarray) -> _Header:
    if bytes(buf[:8]) == _PNG_SIGNATURE:
        return _png_header(buf)
    if bytes(buf[:2]) == b"\xff\xd8":
        return _jpeg_header(buf)
    raise HeaderError(f"not JPEG or PNG (starts with {bytes(buf[:8]).hex()}): dimensions unreadable, not decoded")


def compressed_size(data: Any) -> tuple[int, int]:
    """(height, width) read from a PNG or JPEG header without decoding; HeaderError when unreadable."""
    header = _header(_buffer(data))
    return header.height, header.width


def _scaled_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """libjpeg's output size at 1/``factor`` (``jpeg_calc_output_dimensions`` rounds up)."""
    return -(-height // factor), -(-width // factor)


def reduction_factor(height: int, width: int, min_side: int) -> int:
    """The largest libjpeg scale-down (8, 4, 2; 1 when none fits) that still leaves ``min_side`` pixels.

    libjpeg's output at 1/f is ``ceil(h/f) x ceil(w/f)`` (``jpeg_calc_output_dimensions``); the factor is
    kept only when the centre crop that ``preprocess`` takes of that output is at least ``min_side``, so
    the network input is still made by shrinking, never by enlarging.
    """
    for f in _REDUCED_FLAGS:
        if round(min(_scaled_size(height, width, f)) * CROP_FRACTION) >= min_side:
            return f
    return 1


def decode_compressed(fmt: str, data: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      min_side: int | None = None) -> np.ndarray:
    """The fields of a sensor_msgs/CompressedImage (JPEG or PNG) → HxWx3 RGB uint8.

    The size is read from the header first and checked against ``max_pixels``; a frame whose size
    cannot be read is refused, so nothing larger than ``max_pixels`` is ever allocated by the decoder.
    Decoding follows cv_bridge (``IMREAD_UNCHANGED``: no EXIF rotation), then grey / BGR / BGRA → RGB
    and 16-bit PNG scaled to 8 bits like raw 16-bit frames.

    ``min_side``: the side of the square the consumer will resize the centre crop to (the network's
    resolution). An 8-bit DCT JPEG is then decoded by libjpeg at 1/2, 1/4 or 1/8 of its size when the
    centre crop of the smaller frame still has ``min_side`` pixels (:func:`reduction_factor`): entropy
    decoding still reads every coefficient, but the inverse DCT, chroma upsampling and colour conversion
    run on 1/f² of the pixels, and the frame returned is smaller than its header says. Anything else, or
    no factor that fits, decodes at full size exactly as without ``min_side``.
    """
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageError(f"empty compressed image (format {_quote(str(fmt))})")
    try:
        header = _header(buf)
    except HeaderError as exc:
        raise HeaderError(f"compressed image (format {_quote(str(fmt))}, {buf.size} bytes): {exc}") from None
    height, width = header.height, header.width
    _check_pixels(height, width, max_pixels)
    factor = reduction_factor(height, width, min_side) if min_side is not None and header.scalable else 1
    flag = _REDUCED_FLAGS.get(factor, cv2.IMREAD_UNCHANGED)
    expected = _scaled_size(height, width, factor)  # (height, width) at 1
    try:
        decoded = cv2.imdecode(buf, flag)
    except cv2.error as exc:
        decoded = None
        detail = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else "cv2.error"
    else:
        detail = "corrupted or not JPEG/PNG"
    if decoded is None or decoded.size == 0:
        raise ImageError(f"cannot decode compressed image (format {_quote(str(fmt))}, {buf.size} bytes): {detail}")
    if decoded.shape[:2] != expected:
        scaled = f" (at 1/{factor}: {expected[1]}x{expected[0]})" if factor > 1 else ""
        raise ImageError(f"compressed image decoded to {decoded.shape[1]}x{decoded.shape[0]}, its header says "
                         f"{width}x{height}{scaled}: refused")
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels)
    if code is None:
        raise ImageError(f"compressed image has {channels} channels; expected 1, 3 or 4")
    rgb = cv2.cvtColor(decoded, code)
    if rgb.dtype == np.uint16:
        return to_8bit(rgb)
    if rgb.dtype != np.uint8:
        raise ImageError(f"compressed image decoded to {rgb.dtype} values; expected 8 or 16 bits")
    return rgb


def decode_message(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None) -> np.ndarray:
    """An Image or CompressedImage message (anything with their fields) → HxWx3 RGB uint8.

    ``min_side`` is passed to :func:`decode_compressed` (raw frames cost no decode and are returned whole).
    """
    if hasattr(msg, "encoding"):
        return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data,
                            max_pixels=max_pixels)
    return decode_compressed(msg.format, msg.data, max_pixels=max_pixels, min_side=min_side)


# ---------------------------------------------------------------------- encoding (tests, benchmarks, tools)
_FROM_RGB: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rgb8": lambda rgb: rgb,
    "bgr8": lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
    "rgba8": lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
    "bgra8": lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA),
    "mono8": lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
}


def encode_image(rgb: np.ndarray, encoding: str = "bgr8", *, padding: int = 0) -> dict[str, Any]:
    """HxWx3 RGB uint8 → the fields of a sensor_msgs/Image (``data`` as bytes), rows padded by ``padding``."""
    if encoding not in _FROM_RGB:
        raise ImageError(f"encode_image supports {sorted(_FROM_RGB)}, not {encoding!r}")
    pixels = _FROM_RGB[encoding](rgb)
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    if padding:
        row = np.concatenate([row, np.zeros((h, padding), np.uint8)], axis=1)
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0, "step": row.shape[1],
            "data": np.ascontiguousarray(row).tobytes()}
