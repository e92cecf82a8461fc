"""image_codec: every encoding against an independent reference, padded rows, and each malformed case."""

from __future__ import annotations

import array
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dynofa_ros.inference.preprocess import CROP_FRACTION, IMAGENET_STD, preprocess
from dynofa_ros.perception.image_codec import (
    ImageError,
    compressed_size,
    decode_compressed,
    decode_image,
    decode_message,
    encode_image,
    reduction_factor,
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


def _cv_bridge_8bit(values: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 → 8 bit rule, computed independently in float64: round(v * 255 / 65535)."""
    return np.round(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


def test_16bit_scaling_is_cv_bridge_not_high_byte() -> None:
    # Values where cv_bridge's rounding and the high byte disagree (and the ends).
    cases = {0: 0, 128: 0, 129: 1, 32767: 127, 32896: 128, 65406: 254, 65407: 255, 65535: 255}
    values = np.array([list(cases)], np.uint16)
    out = decode_image(1, len(cases), "mono16", 2 * len(cases), 0, values.astype("<u2").tobytes())
    assert out[0, :, 0].tolist() == list(cases.values())
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = decode_image(256, 256, "mono16", 512, 0, every.astype("<u2").tobytes())
    np.testing.assert_array_equal(out[:, :, 1], _cv_bridge_8bit(every))
    assert np.mean(out[:, :, 1] != (every >> 8)) > 0.2  # the old high-byte rule was off on ~1/4 of values


@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("padding", [0, 6])
def test_mono16_either_endianness(bigendian: int, padding: int) -> None:
    values = np.random.default_rng(0).integers(0, 65536, (9, 11), dtype=np.uint16)
    raw = values.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(9, 22)
    data, step = _padded(raw, padding)
    out = decode_image(9, 11, "mono16", step, bigendian, data)
    np.testing.assert_array_equal(out, np.repeat(_cv_bridge_8bit(values)[:, :, None], 3, axis=2))


@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "rgba16", "bgra16"])
def test_colour16_decodes_to_rgb(encoding: str) -> None:
    rgb16 = np.random.default_rng(1).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    buf = rgb16[:, :, ::-1] if encoding.startswith("bgr") else rgb16
    if encoding.endswith("a16"):
        buf = np.concatenate([buf, np.full((5, 7, 1), 7, np.uint16)], axis=2)
    data = np.ascontiguousarray(buf).astype("<u2").tobytes()
    out = decode_image(5, 7, encoding, 7 * 2 * buf.shape[2], 0, data)
    np.testing.assert_array_equal(out, _cv_bridge_8bit(rgb16))


# Bayer: sensor_msgs names the 2x2 cell by its first row then second row (rggb = R G / G B).
BAYER_CELLS = {"rggb": ((0, 1), (1, 2)), "bggr": ((2, 1), (1, 0)), "gbrg": ((1, 2), (0, 1)),
               "grbg": ((1, 0), (2, 1))}


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The raw sensor image of an RGB frame: each pixel keeps the one channel its filter passes."""
    h, w, _ = rgb.shape
    cell = BAYER_CELLS[pattern]
    channel = np.array(cell)[np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2]
    return np.take_along_axis(rgb, channel[:, :, None], axis=2)[:, :, 0]


@pytest.mark.parametrize("pattern", sorted(BAYER_CELLS))
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_demosaics_each_pattern(pattern: str, bits: int) -> None:
    # A flat colour demosaics back to itself only when the pattern is read the right way round:
    # a swapped pattern gives R and B exchanged or green mixed in.
    colour = np.array([200, 90, 30], np.uint16)
    if bits == 16:
        colour = colour * 257 + 100
    rgb = np.broadcast_to(colour, (12, 16, 3)).astype(np.uint16 if bits == 16 else np.uint8)
    raw = _mosaic(rgb, pattern)
    data, step = _padded(raw.astype("<u2").view(np.uint8) if bits == 16 else raw, 4)
    out = decode_image(12, 16, f"bayer_{pattern}{bits}", step, 0, data)
    expect = _cv_bridge_8bit(colour) if bits == 16 else colour.astype(np.uint8)
    inner = out[2:-2, 2:-2].reshape(-1, 3)
    assert (np.abs(inner.astype(int) - expect.astype(int)) <= 1).all(), (pattern, inner[:3], expect)


def test_bayer_matches_cv_bridge_codes_on_a_textured_frame() -> None:
    raw = np.random.default_rng(5).integers(0, 256, (10, 14), dtype=np.uint8)
    codes = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB, "gbrg": cv2.COLOR_BayerGR2RGB,
             "grbg": cv2.COLOR_BayerGB2RGB}
    for pattern, code in codes.items():
        out = decode_image(10, 14, f"bayer_{pattern}8", 14, 0, raw.tobytes())
        np.testing.assert_array_equal(out, cv2.cvtColor(raw, code))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "8UC1", "8UC3", "16SC1", "64FC1"])
def test_non_colour_encodings_refused_with_reason(encoding: str) -> None:
    with pytest.raises(ImageError) as err:
        decode_image(4, 4, encoding, 64, 0, bytes(256))
    assert "not a colour format" in str(err.value) and encoding in str(err.value) and "\n" not in str(err.value)


def test_huge_encoding_string_is_not_quoted_whole() -> None:
    with pytest.raises(ImageError) as err:
        decode_image(2, 2, "x" * 100_000, 6, 0, bytes(12))
    assert len(str(err.value)) < 1000


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
    (dict(height=1, width=4, encoding="bayer_rggb8", step=4, data=bytes(4)), "at least 2x2"),
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
    with pytest.raises(ImageError, match="where a marker must be"):
        decode_compressed("jpeg", bytes(corrupted))
    _, enc = cv2.imencode(".png", _rgb(32, 32))
    corrupted = bytearray(enc.tobytes())
    corrupted[40:] = bytes(len(corrupted) - 40)  # keep signature and IHDR, destroy the pixel data
    with pytest.raises(ImageError, match="cannot decode"):
        decode_compressed("png", bytes(corrupted))
    with pytest.raises(ImageError, match="not JPEG or PNG"):
        decode_compressed("jpeg", b"not an image at all")
    with pytest.raises(ImageError, match="empty"):
        decode_compressed("jpeg", b"")


def test_huge_compressed_refused_from_header_before_decoding() -> None:
    _, enc = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    data = bytearray(enc.tobytes())
    data[16:24] = (8000).to_bytes(4, "big") + (8000).to_bytes(4, "big")  # IHDR claims 8000x8000
    with pytest.raises(ImageError, match="too large"):
        decode_compressed("png", bytes(data))


# ---------------------------------------------------------------------- compressed: cv_bridge parity
def _exif_orientation_segment(orientation: int) -> bytes:
    """An APP1 Exif segment (little-endian TIFF) with one IFD entry: Orientation (0x0112) = ``orientation``."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHII", 0x0112, 3, 1, orientation) + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def test_exif_orientation_is_ignored_like_cv_bridge() -> None:
    rgb = _rgb(32, 48)
    _, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    plain = enc.tobytes()
    rotated = plain[:2] + _exif_orientation_segment(6) + plain[2:]  # 6 = "rotate 90° clockwise to display"
    assert cv2.imdecode(np.frombuffer(rotated, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (48, 32)  # cv2 rotates
    out = decode_compressed("jpeg", rotated)
    assert out.shape == (32, 48, 3)
    np.testing.assert_array_equal(out, decode_compressed("jpeg", plain))


def test_png_grey_alpha_and_16bit_follow_cv_bridge() -> None:
    rgb = _rgb(6, 5)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    _, enc = cv2.imencode(".png", grey)
    np.testing.assert_array_equal(decode_compressed("png", enc.tobytes()), np.repeat(grey[:, :, None], 3, axis=2))
    _, enc = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    np.testing.assert_array_equal(decode_compressed("png", enc.tobytes()), rgb)
    deep = np.random.default_rng(2).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    _, enc = cv2.imencode(".png", deep[:, :, ::-1])
    np.testing.assert_array_equal(decode_compressed("png", enc.tobytes()), _cv_bridge_8bit(deep))


# ---------------------------------------------------------------------- compressed: decompression bombs
BOMB_SIDE = 20000  # 400 Mpx: under OpenCV's own 2^30 cap, 1.2 GB once decoded


def _small_jpeg() -> bytes:
    _, enc = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    return enc.tobytes()


def _sof_offset(jpeg: bytes) -> int:
    return next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] == 0xC0)


def _claim(jpeg: bytes, side: int) -> bytes:
    """The same JPEG with its frame header claiming side x side pixels."""
    i = _sof_offset(jpeg)
    return jpeg[:i + 5] + struct.pack(">HH", side, side) + jpeg[i + 9:]


def bomb_ff01(side: int = BOMB_SIDE) -> bytes:
    """A ~600-byte JPEG: a standalone TEM marker (FF01) before a frame header that claims side² pixels."""
    jpeg = _claim(_small_jpeg(), side)
    i = _sof_offset(jpeg)
    return jpeg[:i] + b"\xff\x01" + jpeg[i:]


def bomb_app1(side: int = BOMB_SIDE) -> bytes:
    """A JPEG whose frame header comes after 128 KB of APP1 segments (two of the 64 KB maximum)."""
    app1 = b"\xff\xe1\xff\xff" + bytes(65533)
    jpeg = _claim(_small_jpeg(), side)
    return jpeg[:2] + app1 + app1 + jpeg[2:]


@pytest.mark.parametrize("make", [bomb_ff01, bomb_app1])
def test_bomb_header_is_read_and_refused_with_one_line(make: Callable[..., bytes]) -> None:
    data = make()
    assert compressed_size(data) == (BOMB_SIDE, BOMB_SIDE)
    with pytest.raises(ImageError) as err:
        decode_compressed("jpeg", data)
    assert "too large" in str(err.value) and "\n" not in str(err.value)
    # The same layouts at a real size decode: the walk reads past FF01 and past 128 KB of APP1.
    assert decode_compressed("jpeg", make(8)).shape == (8, 8, 3)


def test_bombs_refused_without_allocating_the_image() -> None:
    """Decoding the bombs in a fresh process leaves its peak memory where it was (the old code: +1.2 GB)."""
    code = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_image_codec import bomb_app1, bomb_ff01
        from dynofa_ros.perception.image_codec import ImageError, decode_compressed
        decode_compressed("jpeg", bomb_ff01(8))  # warm the decoder up, so only the bombs can add to the peak
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for data in (bomb_ff01(), bomb_app1()):
            try:
                decode_compressed("jpeg", data)
                print("decoded")
            except ImageError:
                pass
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert "decoded" not in lines and int(lines[-1]) < 100, proc.stdout  # MB added to the peak


@pytest.mark.parametrize("data, words", [
    (b"\xff\xd8\xff\xd9", "without a frame header"),                 # SOI EOI
    (b"\xff\xd8\xff\xda\x00\x02" + bytes(50), "without a frame header"),   # scan before any SOF
    (b"\xff\xd8\x00\x00\xff\xc0", "where a marker must be"),
    (b"\xff\xd8\xff\xe0\x40\x00" + bytes(10), "length"),              # segment longer than the data
    (b"\xff\xd8" + b"\xff\x01" * 20_000, "more than"),                # endless standalone markers
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "not JPEG or PNG"),
    (b"BM" + bytes(60), "not JPEG or PNG"),
    (b"\x89PNG\r\n\x1a\n" + bytes(16), "IHDR"),
])
def test_unreadable_header_refused_before_decoding(data: bytes, words: str) -> None:
    with pytest.raises(ImageError) as err:
        decode_compressed("jpeg", data)
    assert words in str(err.value) and "not decoded" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------- compressed: decoded at the network's size
def _smooth(h: int, w: int) -> np.ndarray:
    """A camera-like RGB frame without fine detail: ramps plus a few sine periods across the frame.

    The pattern is defined on the unit square, so the gradient (intensity levels per pixel) falls as the frame
    grows: about 1-2 levels per pixel at 640x480, used by the tolerance below.
    """
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = x / w, y / h
    r = 40 + 150 * u + 40 * np.sin(2 * np.pi * (1.5 * u + 0.5 * v))
    g = 60 + 120 * v + 40 * np.cos(2 * np.pi * 2 * u) * np.sin(2 * np.pi * v)
    b = 200 - 100 * u * v + 30 * np.sin(2 * np.pi * 3 * v)
    return np.clip(np.dstack([r, g, b]) + 0.5, 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return enc.tobytes()


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@pytest.mark.parametrize("h, w, min_side, factor", [
    (480, 640, 160, 2),    # 240*0.875 = 210 >= 160; 120*0.875 = 105 < 160
    (480, 640, 210, 2),    # exactly 210: still fits
    (480, 640, 224, 1),    # 240*0.875 = 210 < 224: full size
    (720, 1280, 160, 2),   # 180*0.875 = 157.5 → 158 < 160: not 1/4
    (720, 1280, 224, 2),
    (1080, 1920, 224, 4),  # 270*0.875 = 236
    (1080, 1920, 100, 8),  # 135*0.875 = 118
    (721, 1283, 100, 4),   # odd sizes: libjpeg rounds up, 181x321 (91*0.875 = 80 < 100 at 1/8)
    (7, 9, 1, 8),          # a frame smaller than one block: 1x2 at 1/8
])
def test_jpeg_is_decoded_at_the_largest_reduction_that_keeps_the_crop(h: int, w: int, min_side: int,
                                                                     factor: int) -> None:
    """libjpeg's reduced output is ceil(h/f) x ceil(w/f), checked on real decodes including odd sizes."""
    assert reduction_factor(h, w, min_side) == factor
    data = _jpeg(_smooth(h, w))
    out = decode_compressed("jpeg", data, min_side=min_side)
    assert out.shape == (_ceil_div(h, factor), _ceil_div(w, factor), 3) and out.dtype == np.uint8
    assert round(min(out.shape[:2]) * CROP_FRACTION) >= min_side or factor == 1
    if factor == 1:
        np.testing.assert_array_equal(out, decode_compressed("jpeg", data))


# Tolerance for the tensors of a reduced and a full decode of the same smooth JPEG, derived rather than tuned.
# Both are area-like low-pass downsamples of the same decoded signal (libjpeg's scaled IDCT averages each f x f
# block from its low-frequency coefficients; INTER_AREA averages the crop into the output grid), so for a smooth
# image they differ mainly where their sample grids do not coincide. The reduced grid is offset from the full one
# by at most 2f full-resolution pixels per axis: the crop box rounded on the reduced frame (top, left and side
# each within f/2 + 1/2 of f times the full box's after integer division and round()), ceil(h/f)*f - h <= f - 1,
# and reduced pixel centres at f*k + (f-1)/2; they add to about 1.7f. A smooth image changes by |dI/dx| + |dI/dy|
# per pixel of diagonal shift, so each output value moves by at most 2f * (|dI/dx| + |dI/dy|) levels; averaged over
# the output (the gradient of this image varies slowly, so its mean over the frame stands for the crop's), the
# mean absolute difference is at most 2f * mean(|dI/dx| + |dI/dy|) levels. JPEG quantisation noise (quality 90: a
# couple of levels per pixel) is averaged over >= 2x2 pixels by both and is mostly common to both (same
# coefficients): 1 level covers it. The tensor is (level / 255 - mean) / std, so a level is at most
# 1 / (255 * min(std)) in tensor units. Measured here: mean differences of 0.002-0.008 against bounds of
# 0.045-0.064, while red and blue swapped give about 0.8 and the frame shifted by a tenth of the crop about 0.4.
def _mean_abs_bound(rgb: np.ndarray, factor: int) -> float:
    img = rgb.astype(np.float32)
    slope = np.abs(np.diff(img, axis=1))[:-1].mean() + np.abs(np.diff(img, axis=0))[:, :-1].mean()
    return float((2 * factor * slope + 1.0) / (255.0 * IMAGENET_STD.min()))


@pytest.mark.parametrize("h, w", [(480, 640), (720, 1280)])
@pytest.mark.parametrize("resolution", [160, 224])
def test_reduced_decode_gives_the_network_nearly_the_same_tensor(h: int, w: int, resolution: int) -> None:
    rgb = _smooth(h, w)
    data = _jpeg(rgb)
    factor = reduction_factor(h, w, resolution)
    full = preprocess(decode_compressed("jpeg", data), resolution)
    reduced = preprocess(decode_compressed("jpeg", data, min_side=resolution), resolution)
    bound = _mean_abs_bound(rgb, factor)
    assert bound < 0.1, "the bound must be able to catch a real error (see the comment above)"
    diff = np.abs(full - reduced)
    assert float(diff.mean()) < bound, (float(diff.mean()), bound)
    if factor == 1:
        np.testing.assert_array_equal(full, reduced)
    # the check is not vacuous: the same tensor from red and blue swapped is far outside it
    swapped = preprocess(decode_compressed("jpeg", data, min_side=resolution)[:, :, ::-1].copy(), resolution)
    assert float(np.abs(full - swapped).mean()) > 2 * bound


def test_png_and_no_min_side_decode_exactly_as_before() -> None:
    """Only an 8-bit DCT JPEG, told from its bytes, is reduced; PNG (8 and 16 bits) and ``min_side=None`` are not."""
    rgb = _smooth(480, 640)
    _, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_compressed("png", png.tobytes(), min_side=16), rgb)
    np.testing.assert_array_equal(decode_compressed("jpeg", png.tobytes(), min_side=16), rgb)  # format text lies
    deep = (rgb.astype(np.uint16) * 257)[:, :, ::-1]
    _, png16 = cv2.imencode(".png", deep)
    np.testing.assert_array_equal(decode_compressed("png", png16.tobytes(), min_side=16), rgb)
    data = _jpeg(rgb)
    before = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decode_compressed("jpeg", data), before)
    np.testing.assert_array_equal(decode_compressed("jpeg", data, min_side=None), before)
    msg = SimpleNamespace(format="png", data=data)  # a JPEG behind a wrong format string is still a JPEG
    assert decode_message(msg, min_side=160).shape == (240, 320, 3)
    assert decode_message(msg).shape == (480, 640, 3)
    raw = SimpleNamespace(**encode_image(rgb, "bgr8"))
    np.testing.assert_array_equal(decode_message(raw, min_side=160), rgb)  # raw frames are never resized


def test_reduced_grey_jpeg_comes_back_rgb() -> None:
    grey = cv2.cvtColor(_smooth(480, 640), cv2.COLOR_RGB2GRAY)
    _, enc = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 90])
    out = decode_compressed("jpeg", enc.tobytes(), min_side=160)
    assert out.shape == (240, 320, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    full = decode_compressed("jpeg", enc.tobytes())
    assert full.shape == (480, 640, 3)
    halved = cv2.resize(full, (320, 240), interpolation=cv2.INTER_AREA)
    assert float(np.abs(halved.astype(np.float32) - out).mean()) < 2.0  # the same picture, 2x2-averaged


def test_reduced_decode_still_ignores_exif_orientation() -> None:
    plain = _jpeg(_smooth(480, 640))
    rotated = plain[:2] + _exif_orientation_segment(6) + plain[2:]
    out = decode_compressed("jpeg", rotated, min_side=160)
    assert out.shape == (240, 320, 3)
    np.testing.assert_array_equal(out, decode_compressed("jpeg", plain, min_side=160))


def test_corrupt_or_huge_jpeg_with_min_side_fails_with_the_same_line() -> None:
    data = _jpeg(_smooth(480, 640))
    scan = data.index(b"\xff\xda")
    cases = [data[:len(data) // 2], data[:-2], data[:scan + 14] + bytes(range(256)) * 20, bomb_ff01(),
             bytes(data[:2]) + bytes(100)]
    for bad in cases:
        messages = []
        for min_side in (None, 160):
            with pytest.raises(ImageError) as err:
                decode_compressed("jpeg", bad, min_side=min_side)
            messages.append(str(err.value))
        assert messages[0] == messages[1] and "\n" not in messages[0], messages
