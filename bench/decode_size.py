"""JPEG decode + preprocess per frame, full-size decode vs decode at the network's size, side by side in one run.

    .venv/bin/python bench/decode_size.py [--rounds 20] [--block 5] [--threads 1]

Why it matters: the network sees a centre square of 160-224 px, but the perception worker used to decode every
JPEG at the camera's size; at 1280x720 and 1920x1080 the decode is the dearest step of a frame on an embedded CPU.
``decode_compressed(..., min_side=r)`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (scaled inverse DCT) when
the centre crop of the smaller frame still has ``r`` pixels. This measures what the worker pays before the
network, ``decode_compressed`` + ``preprocess(frame, r)``, both ways, for 640x480, 1280x720 and 1920x1080
frames (JPEG quality 90 of a natural-looking synthetic scene: 1/f value noise, edges, sensor noise) at the
smallest and largest resolution of the shipped families (160, 224).

Blocks of ``--block`` frames alternate between the two ways (and the first way alternates between rounds), so
both see the same machine load; p50/p90 of the per-frame wall time and the ratio reduced/full of the p50s are
printed, with the mean absolute difference of the two tensors as a check that the network gets the same input.
OpenCV runs ``--threads`` threads (default 1: per-core cost, and light on a shared machine). Times are wall-clock
on this machine: compare the ratios, not the ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynofa_ros.inference.preprocess import preprocess  # noqa: E402
from dynofa_ros.perception.image_codec import decode_compressed, reduction_factor  # noqa: E402

SIZES = ((480, 640), (720, 1280), (1080, 1920))
RESOLUTIONS = (160, 224)


def natural_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """HxWx3 RGB uint8 with a roughly 1/f spectrum (value noise over six octaves), edges and sensor noise.

    Entropy decoding cost depends on the detail in the frame: a smooth gradient would flatter both ways. The
    scene is defined relative to the frame, so every size shows the same picture.
    """
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 110.0, np.float32)
    for cells, amp in ((3, 50.0), (6, 35.0), (12, 25.0), (24, 16.0), (48, 10.0), (96, 6.0)):
        grid = rng.normal(0.0, 1.0, (max(2, cells * h // w), cells, 3)).astype(np.float32)
        img += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(25):  # objects: filled shapes with hard edges
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        x0, y0 = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        size = int(rng.uniform(0.02, 0.15) * w)
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + size, y0 + size // 2), colour, -1)
        else:
            cv2.circle(img, (x0, y0), size // 2, colour, -1, lineType=cv2.LINE_AA)
    img += rng.normal(0.0, 2.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return enc.tobytes()


def frame_ms(data: bytes, resolution: int, min_side: int | None) -> float:
    t0 = time.perf_counter()
    preprocess(decode_compressed("jpeg", data, min_side=min_side), resolution)
    return (time.perf_counter() - t0) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--block", type=int, default=5, help="frames per block of one way")
    p.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    args = p.parse_args(argv)
    cv2.setNumThreads(args.threads)
    frames = {size: jpeg(natural_scene(*size)) for size in SIZES}
    cases = [(size, r) for size in SIZES for r in RESOLUTIONS]
    times: dict[tuple, dict[bool, list[float]]] = {c: {False: [], True: []} for c in cases}
    for (size, r) in cases:  # warm-up, and the tensors both ways
        for reduced in (False, True):
            frame_ms(frames[size], r, r if reduced else None)
    t_start = time.perf_counter()
    for rnd in range(args.rounds):
        for case in cases:
            size, r = case
            for reduced in ((False, True) if rnd % 2 == 0 else (True, False)):
                times[case][reduced] += [frame_ms(frames[size], r, r if reduced else None) for _ in range(args.block)]
    wall = time.perf_counter() - t_start
    print(f"decode_compressed + preprocess per frame, JPEG q90, {args.rounds * args.block} frames per cell, "
          f"blocks of {args.block} interleaved, cv2 threads {args.threads}, {wall:.1f} s")
    print(f"{'frame':<10}{'r':>5}{'1/f':>5}{'decoded':>10}  {'full p50':>9}{'p90':>7}  {'reduced p50':>12}{'p90':>7}"
          f"  {'ratio p50':>9}{'ratio p90':>10}  {'tensor MAD':>10}")
    for case in cases:
        (h, w), r = case
        f = reduction_factor(h, w, r)
        full = np.percentile(times[case][False], [50, 90])
        red = np.percentile(times[case][True], [50, 90])
        a = decode_compressed("jpeg", frames[(h, w)])
        b = decode_compressed("jpeg", frames[(h, w)], min_side=r)
        mad = float(np.abs(preprocess(a, r) - preprocess(b, r)).mean())
        print(f"{w}x{h:<5}{r:>5}{f:>5}{f'{b.shape[1]}x{b.shape[0]}':>10}  {full[0]:9.2f}{full[1]:7.2f}  "
              f"{red[0]:12.2f}{red[1]:7.2f}  {red[0] / full[0]:9.2f}{red[1] / full[1]:10.2f}  {mad:10.4f}")
    print("ratio = reduced / full (lower is better); tensor MAD: mean |difference| of the normalised network inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
