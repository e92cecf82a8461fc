"""Frame → network input, shared by every backend so all of them see identical tensors.

OFA evaluates ImageNet with "resize the shorter side to r/0.875, centre-crop r". Cropping the
equivalent box in the source first and resizing once gives the same geometry with one resize of
fewer pixels. Normalisation is one fused multiply-add per channel in numpy; no Python loops.
"""

from __future__ import annotations

import cv2
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CROP_FRACTION = 0.875
_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_BIAS = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)


class FrameError(ValueError):
    """A frame that cannot be a network input (wrong shape, dtype or size)."""


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise FrameError(f"frame must be a uint8 numpy array, got {getattr(frame, 'dtype', type(frame))}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise FrameError(f"frame must be HxWx3 RGB, got shape {frame.shape}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise FrameError(f"frame is empty: shape {frame.shape}")


def center_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, size, size) of the centred square that OFA's resize+crop keeps."""
    side = max(1, round(min(height, width) * CROP_FRACTION))
    top = (height - side) // 2
    left = (width - side) // 2
    return top, left, side, side


def preprocess(frame: np.ndarray, resolution: int) -> np.ndarray:
    """HxWx3 uint8 RGB → (1, 3, r, r) float32, contiguous, ImageNet-normalised."""
    check_frame(frame)
    top, left, h, w = center_crop_box(frame.shape[0], frame.shape[1])
    crop = frame[top:top + h, left:left + w]
    interp = cv2.INTER_AREA if h > resolution else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (resolution, resolution), interpolation=interp)
    x = resized.astype(np.float32)
    x *= _SCALE
    x += _BIAS
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
