"""What wrapping the model in a ROS node costs, measured side by side in one run, printed as ratios.

    unshare --net bash -c 'ip link set lo up; .venv/bin/python bench/node_overhead.py'

For the smallest and largest level of the family, at 640×480 bgr8:

1. bare: ``DynamicOFA.infer`` on the same frame (RGB array already in memory), in a plain process of
   its own (no rclpy), in blocks of 10 frames interleaved with the node's so both see the same load;
2. node: a real ``perception_node`` process over real DDS; frames published one at a time (closed loop,
   so no frame waits behind another) and timed from the frame's stamp to the result's arrival here.

The goal (issue 3): node − bare < 10 % of bare, or < 2 ms. ros_deep_learning #134/#137 measured 2–5×
for comparable wrappers. Then the node's own per-stage table (p50/p90 over the same frames) from
/diagnostics. Both use the same thread count and backend. Run inside a loopback-only network namespace
(scripts/isolated.sh): DDS traffic must not leave the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

STAGE_ORDER = ("transport", "wait", "conversion", "preprocess", "inference", "postprocess", "publish", "age")


def tiny_family(path: Path, source: Path, levels: tuple[int, int]) -> Path:
    raw = json.loads(source.read_text(encoding="utf-8"))
    raw["name"] = "bench_smallest_largest"
    raw["levels"] = [raw["levels"][i] for i in levels]
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def bare_ms(model, rgb: np.ndarray, level: int, warmup: int, frames: int) -> list[float]:
    model.switch(level)
    for _ in range(warmup):
        model.infer(rgb)
    out = []
    for _ in range(frames):
        t0 = time.perf_counter()
        model.infer(rgb)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bare_worker(family_path: str, threads: int, backend: str) -> int:
    """A plain process (no rclpy, no executor thread) running the model on request: the fair reference.

    Reads "level count" lines on stdin, answers one line of JSON milliseconds per request.
    """
    import cv2

    from dynofa_ros.inference import family as fm
    from dynofa_ros.inference.model import DynamicOFA

    model = DynamicOFA(fm.load(family_path), threads=threads, backend=backend)
    rgb = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    print(json.dumps({"ready": model.backend_label()}), flush=True)
    for line in sys.stdin:
        level, count = map(int, line.split())
        print(json.dumps(bare_ms(model, rgb, level, 0, count)), flush=True)
    return 0


class BareProcess:
    def __init__(self, family_path: Path, threads: int, backend: str):
        import subprocess

        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        self.proc = subprocess.Popen([sys.executable, __file__, "--bare-worker", str(family_path), "--threads",
                                      str(threads), "--backend", backend], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.label = json.loads(self.proc.stdout.readline())["ready"]

    def run(self, level: int, count: int) -> list[float]:
        self.proc.stdin.write(f"{level} {count}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def node_ms(probe, pubs, level: int, bgr_fields: dict, warmup: int, frames: int) -> list[float]:
    from sensor_msgs.msg import Image
    from std_msgs.msg import UInt8

    images, cmd, results = pubs
    cmd.publish(UInt8(data=level))
    out = []
    for i in range(warmup + frames):
        msg = Image(**bgr_fields)
        msg.header.frame_id = f"L{level}_{i}"
        results.clear()
        deadline = time.monotonic() + 30
        while True:
            msg.header.stamp = probe.node.get_clock().now().to_msg()
            t_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            images.publish(msg)
            if results.wait_until(lambda ms, fid=msg.header.frame_id: any(
                    json.loads(m.data)["frame_id"] == fid for m in ms), 2.0):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no result for {msg.header.frame_id}")
        fid = msg.header.frame_id
        got = next(json.loads(m.data) for m in results.snapshot() if json.loads(m.data)["frame_id"] == fid)
        if got["level"] != level:
            continue  # the command had not arrived yet: not this level's frame
        t_recv = results.stamps[-1] + (probe.node.get_clock().now().nanoseconds / 1e9 - time.monotonic())
        if i >= warmup:
            out.append((t_recv - t_stamp) * 1e3)
    return out


def stage_table(diagnostics) -> dict[str, tuple[float, float]]:
    from ros_harness import diagnostic_values

    values = diagnostic_values(diagnostics.snapshot()[-1], "dynofa")
    return {s: (float(values[f"{s}_ms_p50"]), float(values[f"{s}_ms_p90"])) for s in STAGE_ORDER
            if f"{s}_ms_p50" in values}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default=str(REPO / "config/families/xavier_nx_six_levels.json"))
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--domain", type=int, default=77)
    ap.add_argument("--bare-worker", metavar="FAMILY", help=argparse.SUPPRESS)
    ap.add_argument("--no-rmw-profile", dest="rmw_profile", action="store_false",
                    help="keep Fast DDS' default transports (large best-effort frames are then mostly lost)")
    args = ap.parse_args()
    if args.bare_worker:
        return bare_worker(args.bare_worker, args.threads, args.backend)

    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from ros_harness import NodeProcess, RosProbe, ros_env
    from sensor_msgs.msg import Image
    from std_msgs.msg import String, UInt8

    from devtools.processes import network_is_isolated, use_large_frame_transport
    from dynofa_ros.inference import family as fm
    from dynofa_ros.perception.image_codec import encode_image
    if not network_is_isolated():
        print("refusing to run: not in a loopback-only network namespace (see the docstring)", file=sys.stderr)
        return 2
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    source = Path(args.family)
    n_levels = len(fm.load(source))
    tmp = Path(tempfile.mkdtemp(prefix="node_overhead-"))
    if args.rmw_profile:
        # Best-effort 900 KB frames need bigger SHM segments / socket buffers than Fast DDS' defaults;
        # without them most 640x480 bgr8 frames are lost in transport (docs/perception.md, "Large frames").
        use_large_frame_transport(tmp)
    family_path = tiny_family(tmp / "family.json", source, (0, n_levels - 1))
    import cv2

    rgb = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    bgr_fields = encode_image(rgb, "bgr8")
    bare_proc = BareProcess(family_path, args.threads, args.backend)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    ros_args = ["-p", f"family_file:={family_path}", "-p", f"threads:={args.threads}", "-p",
                f"backend:={args.backend}", "-p", f"timing_window:={args.frames}", "-p", "diagnostics_period_s:=0.2"]
    rows = []
    tables = {}
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(NodeProcess("perception_node", ros_args, env=ros_env(args.domain)))
        probe = stack.enter_context(RosProbe(args.domain, "bench"))
        images = probe.publisher("image_raw", Image, qos_profile_sensor_data)
        cmd = probe.publisher("dynofa/subnet_cmd", UInt8, latched)
        results = probe.collect("dynofa/classification", String)
        diagnostics = probe.collect("/diagnostics", DiagnosticArray)
        levels = probe.collect("dynofa/active_level", UInt8, latched)
        if not (probe.wait_for_subscribers(images, timeout=60) and levels.wait_for(1, 120)):
            print(node.output(), file=sys.stderr)
            return 1
        for level, label in ((0, "smallest"), (1, "largest")):
            # Interleaved blocks of 10 frames, so both see the same machine load (shared 2-core hosts drift).
            bare_proc.run(level, args.warmup)
            node_ms(probe, (images, cmd, results), level, bgr_fields, args.warmup, 0)
            bare, through = [], []
            for _ in range(max(1, args.frames // 10)):
                bare += bare_proc.run(level, 10)
                through += node_ms(probe, (images, cmd, results), level, bgr_fields, 0, 10)
            b = float(np.median(bare))
            n = float(np.median(through))
            rows.append((label, b, n, n - b, n / b))
            diagnostics.clear()
            diagnostics.wait_for(1, 10)
            tables[label] = stage_table(diagnostics)
    backend = bare_proc.label
    bare_proc.close()
    print(f"node overhead at 640x480 bgr8, threads={args.threads}, backend {backend}, {args.frames} frames per level "
          "(p50 ms)")
    print(f"{'level':<9} {'bare infer':>10} {'through node':>13} {'overhead':>9} {'ratio':>6} {'goal met':>9}")
    for label, b, n, o, r in rows:
        ok = o < 0.10 * b or o < 2.0
        print(f"{label:<9} {b:10.2f} {n:13.2f} {o:9.2f} {r:6.3f} {'yes' if ok else 'no':>9}")
    for label, table in tables.items():
        own = sum(table[s][0] for s in ("transport", "wait", "conversion", "publish") if s in table)
        model_p50 = sum(table[s][0] for s in ("preprocess", "inference", "postprocess") if s in table)
        print(f"{label}: node's own stages (transport + wait + conversion + publish) p50 {own:.2f} ms = "
              f"{100 * own / model_p50:.1f} % of the model stages' p50 ({model_p50:.2f} ms)")
    print("\nper-stage timing in the node (ms, p50 / p90 over the same frames; age = stamp -> published)")
    print(f"{'stage':<12} " + " ".join(f"{label + ' p50':>13} {label + ' p90':>13}" for label in tables))
    for stage in STAGE_ORDER:
        cells = []
        for label in tables:
            p50, p90 = tables[label].get(stage, (float("nan"), float("nan")))
            cells.append(f"{p50:13.2f} {p90:13.2f}")
        print(f"{stage:<12} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
