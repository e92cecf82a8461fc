"""sensor_msgs Image / CompressedImage fields → HxWx3 RGB uint8, with numpy views and no per-pixel Python.

Why not cv_bridge: it is not installable where ROS comes from PyPI, and its PyPI port breaks on
NumPy 2. Why views: rclpy hands ``data`` over as a buffer; ``np.frombuffer`` over it and a strided
view that skips row padding cost nothing, and a single ``cv2.cvtColor`` does any colour conversion
(rclpy#763: per-element Python costs ~30× more). ``rgb8`` without padding is returned as a view of
the message buffer, so the caller must keep the message alive while it uses the frame.

Every malformed input raises :class:`ImageError` with a one-line message that says what is wrong and
with which numbers, so a node can log it once and drop the frame. Nothing here imports rclpy: the
functions take the message's fields (or any object that has them), so they are tested directly.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

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


_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, 1, None),
    "bgr8": _Encoding(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": _Encoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    # sensor_msgs/image_encodings.hpp: "yuv422" is UYVY byte order, "yuv422_yuy2" is YUYV.
    "yuv422": _Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, even_width=True),
    "uyvy": _Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY, even_width=True),
    "yuv422_yuy2": _Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, even_width=True),
    "yuyv": _Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2, even_width=True),
    # 16-bit: scaled to 8 bits by keeping the high byte (cv_bridge's mono16 → mono8 scaling).
    "mono16": _Encoding(1, 2, cv2.COLOR_GRAY2RGB),
    "16UC1": _Encoding(1, 2, cv2.COLOR_GRAY2RGB),
    "rgb16": _Encoding(3, 2, None),
    "bgr16": _Encoding(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": _Encoding(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": _Encoding(4, 2, cv2.COLOR_BGRA2RGB),
}

#: Encodings accepted by :func:`decode_image`, for messages and documentation.
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


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


def decode_image(height: int, width: int, encoding: str, step: int, is_bigendian: int | bool, data: Any,
                 *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The fields of a sensor_msgs/Image → HxWx3 RGB uint8 (a view when the data already is RGB8)."""
    height, width, step = int(height), int(width), int(step)
    _check_pixels(height, width, max_pixels)
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ImageError(f"unknown encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
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
        pixels = (values >> 8).astype(np.uint8).reshape(height, width, spec.channels)
    else:
        pixels = rows.reshape(height, width, spec.channels)
    if spec.to_rgb is None:
        return pixels
    if spec.channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(pixels, spec.to_rgb)


def _png_size(buf: bytes) -> tuple[int, int] | None:
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and len(buf) >= 24 and buf[12:16] == b"IHDR":
        width, height = struct.unpack(">II", buf[16:24])
        return height, width
    return None


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(buf: bytes) -> tuple[int, int] | None:
    """Height and width from a JPEG's start-of-frame segment (walks segment headers, a few dozen at most)."""
    if buf[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", buf[i + 2:i + 4])[0]
        if marker in _SOF_MARKERS and i + 9 <= len(buf):
            height, width = struct.unpack(">HH", buf[i + 5:i + 9])
            return height, width
        i += 2 + length
    return None


def compressed_size(data: Any) -> tuple[int, int] | None:
    """(height, width) read from a PNG or JPEG header without decoding; None when not found."""
    head = bytes(_buffer(data)[:65536])
    return _png_size(head) or _jpeg_size(head)


def decode_compressed(fmt: str, data: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The fields of a sensor_msgs/CompressedImage (JPEG or PNG) → HxWx3 RGB uint8.

    The size is read from the header first, so a huge image is refused before it is decoded.
    """
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageError(f"empty compressed image (format {fmt!r})")
    size = compressed_size(buf)
    if size is not None:
        _check_pixels(size[0], size[1], max_pixels)
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None or decoded.size == 0:
        raise ImageError(f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes): corrupted or "
                         "not JPEG/PNG")
    _check_pixels(decoded.shape[0], decoded.shape[1], max_pixels)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def decode_message(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An Image or CompressedImage message (anything with their fields) → HxWx3 RGB uint8."""
    if hasattr(msg, "encoding"):
        return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data,
                            max_pixels=max_pixels)
    return decode_compressed(msg.format, msg.data, max_pixels=max_pixels)


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
