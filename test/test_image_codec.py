"""image_codec: every encoding against an independent reference, padded rows, and each malformed case."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dynofa_ros.image_codec import (
    ImageError,
    compressed_size,
    decode_compressed,
    decode_image,
    decode_message,
    encode_image,
)


def _rgb(h: int = 37, w: int = 50, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _padded(pixels: np.ndarray, padding: int) -> tuple[bytes, int]:
    h = pixels.shape[0]
    row = pixels.reshape(h, -1)
    row = np.concatenate([row, np.full((h, padding), 0xAB, np.uint8)], axis=1)
    return row.tobytes(), row.shape[1]


# Reference: the RGB frame each encoding should decode to, built with cv2 from the buffer's own layout.
EIGHT_BIT = {
    "rgb8": (lambda rgb: rgb, lambda rgb: rgb),
    "bgr8": (lambda rgb: rgb[:, :, ::-1], lambda rgb: rgb),
    "rgba8": (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA), lambda rgb: rgb),
    "bgra8": (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), lambda rgb: rgb),
    "mono8": (lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
              lambda rgb: np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)),
}


@pytest.mark.parametrize("encoding", sorted(EIGHT_BIT))
@pytest.mark.parametrize("padding", [0, 13])
def test_eight_bit_encodings_match_reference(encoding: str, padding: int) -> None:
    rgb = _rgb()
    make, expect = EIGHT_BIT[encoding]
    data, step = _padded(np.ascontiguousarray(make(rgb)), padding)
    out = decode_image(rgb.shape[0], rgb.shape[1], encoding, step, 0, array.array("B", data))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expect(rgb))


def test_rgb8_without_padding_is_a_view_of_the_buffer() -> None:
    rgb = _rgb()
    buf = bytearray(rgb.tobytes())
    out = decode_image(rgb.shape[0], rgb.shape[1], "rgb8", rgb.shape[1] * 3, 0, buf)
    assert np.shares_memory(out, np.frombuffer(buf, np.uint8))


def _yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Pack RGB into 4:2:2 with BT.601 studio swing (what cameras send), in plain numpy."""
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    h, w = y.shape
    out = np.empty((h, w // 2, 4))
    if order == "uyvy":
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = u2, y[:, 0::2], v2, y[:, 1::2]
    else:
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = y[:, 0::2], u2, y[:, 1::2], v2
    return np.clip(np.round(out), 0, 255).astype(np.uint8).reshape(h, w, 2)


@pytest.mark.parametrize("encoding,order", [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"),
                                            ("yuyv", "yuyv")])
@pytest.mark.parametrize("padding", [0, 8])
def test_yuv422_encodings_match_bt601_reference(encoding: str, order: str, padding: int) -> None:
    # Chroma is shared by two pixels, so use a frame that is constant over pixel pairs to compare exactly.
    rgb = np.repeat(_rgb(24, 20), 2, axis=1)
    data, step = _padded(_yuv422(rgb, order), padding)
    out = decode_image(rgb.shape[0], rgb.shape[1], encoding, step, 0, data)
    assert out.shape == rgb.shape
    # Round trip through 4:2:2 studio swing loses a little precision; swapped channels would be far off.
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 6


@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("padding", [0, 6])
def test_mono16_keeps_high_byte_with_either_endianness(bigendian: int, padding: int) -> None:
    values = np.random.default_rng(0).integers(0, 65536, (9, 11), dtype=np.uint16)
    raw = values.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(9, 22)
    data, step = _padded(raw, padding)
    out = decode_image(9, 11, "mono16", step, bigendian, data)
    np.testing.assert_array_equal(out, np.repeat((values >> 8).astype(np.uint8)[:, :, None], 3, axis=2))


def test_bgr16_decodes_to_rgb() -> None:
    rgb16 = np.random.default_rng(1).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    data = np.ascontiguousarray(rgb16[:, :, ::-1]).astype("<u2").tobytes()
    out = decode_image(5, 7, "bgr16", 7 * 6, 0, data)
    np.testing.assert_array_equal(out, (rgb16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_matches_cv2_decode(ext: str) -> None:
    rgb = _rgb(48, 64)
    ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    assert compressed_size(enc.tobytes()) == (48, 64)
    out = decode_compressed(ext[1:], array.array("B", enc.tobytes()))
    expect = cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out, expect)
    if ext == ".png":
        np.testing.assert_array_equal(out, rgb)


def test_decode_message_dispatches_on_fields() -> None:
    rgb = _rgb(4, 6)
    image = SimpleNamespace(**encode_image(rgb, "bgr8", padding=2))
    np.testing.assert_array_equal(decode_message(image), rgb)
    _, enc = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_message(SimpleNamespace(format="png", data=enc.tobytes())), rgb)


def test_one_pixel_image_is_valid() -> None:
    out = decode_image(1, 1, "bgr8", 3, 0, bytes([1, 2, 3]))
    np.testing.assert_array_equal(out, [[[3, 2, 1]]])


# ---------------------------------------------------------------------- malformed input: one ImageError each
@pytest.mark.parametrize("fields,words", [
    (dict(height=0, width=0, encoding="rgb8", step=0, data=b""), "empty"),
    (dict(height=4, width=0, encoding="rgb8", step=0, data=b""), "empty"),
    (dict(height=4, width=4, encoding="rgb8", step=11, data=bytes(48)), "step 11 < width*channels"),
    (dict(height=4, width=4, encoding="rgb8", step=12, data=bytes(47)), "data too short: 47 bytes"),
    (dict(height=4, width=4, encoding="weird9", step=12, data=bytes(48)), "unknown encoding 'weird9'"),
    (dict(height=8000, width=8000, encoding="mono8", step=8000, data=bytes(10)), "too large"),
    (dict(height=2, width=3, encoding="yuv422", step=6, data=bytes(12)), "odd"),
    (dict(height=2, width=2, encoding="mono16", step=5, data=bytes(10)), "odd"),
])
def test_malformed_image_raises_one_clear_error(fields: dict, words: str) -> None:
    with pytest.raises(ImageError) as err:
        decode_image(is_bigendian=0, **fields)
    message = str(err.value)
    assert words in message and "\n" not in message


def test_max_pixels_is_configurable() -> None:
    decode_image(10, 10, "mono8", 10, 0, bytes(100), max_pixels=100)
    with pytest.raises(ImageError, match="max_image_pixels 99"):
        decode_image(10, 10, "mono8", 10, 0, bytes(100), max_pixels=99)


def test_corrupted_and_empty_compressed_raise() -> None:
    _, enc = cv2.imencode(".jpg", _rgb(32, 32))
    corrupted = bytearray(enc.tobytes())
    corrupted[2:] = bytes(len(corrupted) - 2)  # keep the SOI marker, destroy the rest
    with pytest.raises(ImageError, match="cannot decode"):
        decode_compressed("jpeg", bytes(corrupted))
    with pytest.raises(ImageError, match="cannot decode"):
        decode_compressed("jpeg", b"not an image at all")
    with pytest.raises(ImageError, match="empty"):
        decode_compressed("jpeg", b"")


def test_huge_compressed_refused_from_header_before_decoding() -> None:
    _, enc = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    data = bytearray(enc.tobytes())
    data[16:24] = (8000).to_bytes(4, "big") + (8000).to_bytes(4, "big")  # IHDR claims 8000x8000
    with pytest.raises(ImageError, match="too large"):
        decode_compressed("png", bytes(data))
