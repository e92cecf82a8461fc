"""Memory of the perception node after it is ready: torch vs ONNX Runtime from the cache vs a bundle without torch.

    unshare --net bash -c 'ip link set lo up; .venv/bin/python bench/memory.py'
    .venv/bin/python bench/memory.py --family config/families/generic_cpu.json --python /path/to/torchfree/python

One run, the same family, one node at a time (so they do not squeeze each other), each started as the real
``perception_node`` console script and measured once it is ready (every level prepared and warmed up) and
has classified a few frames:

* ``torch``: backend torch (static sub-networks);
* ``onnxruntime (cache)``: backend onnxruntime on a warm export cache (filled by an untimed start first);
* ``bundle, no torch``: ``bundle:=DIR`` from ``dynofa-export``, in a process where torch cannot be imported
  (``--python``: an interpreter without torch; default: this one with an import blocker);
* ``bare runtime``: a node that imports what the bundle runtime imports (rclpy, numpy, OpenCV, onnxruntime)
  and loads no model: what every row pays before the first level.

Columns: RSS and PSS (MiB, from /proc), whether libtorch is mapped, the models' bytes (the node's
``model_memory_mb`` diagnostic: ONNX files, or torch parameters and buffers). A last table counts the
initialiser bytes the levels share byte-for-byte, which is all that sharing initialisers between sessions
(onnxruntime ``add_initializer``) could save.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.processes import Proc, find_executable, graph_env, network_is_isolated  # noqa: E402

BLOCKER = ("import sys\nclass _NoTorch:\n    def find_spec(self, name, path=None, target=None):\n"
           "        if name.split('.')[0] in ('torch', 'torchvision', 'ofa'):\n"
           "            raise ImportError(name + ' blocked')\nsys.meta_path.insert(0, _NoTorch())\n")
BARE = ("import rclpy, numpy, cv2, onnxruntime, sys\nrclpy.init()\nn = rclpy.create_node('bare_runtime')\n"
        "print('ready:', flush=True)\nrclpy.spin(n)\n")


def rss_pss_mib(pid: int) -> tuple[float, float]:
    full = psutil.Process(pid).memory_full_info()
    return full.rss / 2**20, getattr(full, "pss", float("nan")) / 2**20


def libtorch_mapped(pid: int) -> bool:
    return any("libtorch" in (m.path or "") for m in psutil.Process(pid).memory_maps())


class Probe:
    """Frames in, diagnostics out, from a private rclpy context (the bench's own node)."""

    def __init__(self, domain: int):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("memory_bench", context=self.ctx)
        self.values: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 10)
        self.images = self.node.create_publisher(Image, "image_raw", qos_profile_sensor_data)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.thread = threading.Thread(target=self.ex.spin, daemon=True)
        self.thread.start()

    def _diag(self, msg: object) -> None:
        for st in msg.status:
            if "perception" in st.name:
                vals = {kv.key: kv.value for kv in st.values}
                if "model_memory_mb" in vals:
                    self.values = vals

    def frames(self, count: int) -> None:
        import numpy as np
        from sensor_msgs.msg import Image

        from dynofa_ros.perception.image_codec import encode_image

        rgb = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        for _ in range(count):
            msg = Image()
            for k, v in encode_image(rgb, "rgb8").items():
                setattr(msg, k, v)
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.images.publish(msg)
            time.sleep(0.05)

    def close(self) -> None:
        import rclpy

        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def measure(label: str, cmd: list[str], env: dict[str, str], log_dir: Path, domain: int, *,
            diag: bool = True) -> dict[str, object]:
    with Proc(label.replace(" ", "_").replace(",", ""), cmd, env, log_dir) as proc:
        if not proc.wait_for_output("ready:", 600):
            raise SystemExit(f"memory bench: {label} did not become ready; see {proc.log_path}")
        values: dict[str, str] = {}
        if diag:
            probe = Probe(domain)
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and int(values.get("processed_frames", "0")) < 1:
                    probe.frames(5)
                    values = dict(probe.values)
            finally:
                probe.close()
        time.sleep(1.0)
        rss, pss = rss_pss_mib(proc.pid)
        return {"label": label, "rss": rss, "pss": pss, "libtorch": libtorch_mapped(proc.pid),
                "model_mb": float(values.get("model_memory_mb", "nan")),
                "torch_loaded": values.get("torch_loaded", "-"), "backend": values.get("backend", "-")}


def torch_and_cache_rows(exe: str, common: list[str], env: dict[str, str], work: Path, domain: int
                         ) -> list[dict[str, object]]:
    rows = [measure("torch", [exe, *common, "-p", "backend:=torch"], env, work, domain)]
    with Proc("warm_cache", [exe, *common, "-p", "backend:=onnxruntime"], env, work) as warm:
        warm.wait_for_output("ready:", 600)  # fills the export cache (untimed); stopped by its PID on exit
    rows.append(measure("onnxruntime (cache)", [exe, *common, "-p", "backend:=onnxruntime"], env, work, domain))
    return rows


def shared_initialisers(bundle: Path) -> tuple[int, int, int]:
    """(all initialiser bytes, bytes of distinct initialisers, levels) over the bundle's fp32 models."""
    import onnx
    from onnx import numpy_helper

    total = 0
    seen: dict[str, int] = {}
    files = sorted((bundle / "levels").glob("*.fp32.onnx"))
    for f in files:
        for init in onnx.load(str(f)).graph.initializer:
            raw = numpy_helper.to_array(init).tobytes()
            total += len(raw)
            seen.setdefault(hashlib.sha256(raw).hexdigest(), len(raw))
    return total, sum(seen.values()), len(files)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default=str(REPO / "config/families/generic_cpu.json"))
    p.add_argument("--bundle", default=None, help="existing bundle (default: exported now into a temp dir)")
    p.add_argument("--python", default=None, help="an interpreter without torch for the bundle row")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only-bundle", action="store_true", help="skip the torch and cache rows (quick check)")
    args = p.parse_args()
    if not network_is_isolated():
        raise SystemExit("memory bench: run inside a loopback-only network namespace (see the module docstring)")
    work = Path(tempfile.mkdtemp(prefix="dynofa_memory_"))
    bundle = Path(args.bundle) if args.bundle else None
    if bundle is None:
        from dynofa_ros.tools.export import export_bundle

        bundle = export_bundle(args.family, work / "bundle")
    domain = 1 + os.getpid() % 100
    env = graph_env(domain)
    env["OMP_NUM_THREADS"] = str(args.threads)
    exe = find_executable("perception_node")
    common = ["--ros-args", "-p", f"family_file:={Path(args.family).resolve()}", "-p", f"threads:={args.threads}",
              "-p", "device:=cpu", "-p", "diagnostics_period_s:=0.5", "-p", "compressed:=false"]
    rows = []
    if not args.only_bundle:
        rows += torch_and_cache_rows(exe, common, env, work, domain)
    else:
        rows += [{"label": "(skipped)", "rss": float("nan"), "pss": float("nan"), "libtorch": False,
                  "model_mb": float("nan"), "torch_loaded": "-", "backend": "-"}] * 2
    free_env = dict(env)
    if args.python:
        bundle_cmd = [args.python, "-m", "dynofa_ros.nodes.perception_node"]
        how = f"interpreter without torch: {args.python}"
    else:
        site = work / "no_torch_site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(BLOCKER)
        free_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        bundle_cmd = [exe]
        how = "this interpreter with torch imports blocked"
    rows.append(measure("bundle, no torch", [*bundle_cmd, *common, "-p", f"bundle:={bundle}"], free_env, work,
                        domain))
    rows.append(measure("bare runtime", [args.python or sys.executable, "-c", BARE], free_env, work, domain,
                        diag=False))
    files = collections.Counter()
    for f in (bundle / "levels").glob("*.onnx"):
        files[f.name.split(".")[1]] += f.stat().st_size
    print(f"\nperception_node after ready, family {Path(args.family).name}, {args.threads} thread(s); "
          f"bundle row: {how}")
    print(f"{'':22} {'RSS MiB':>8} {'PSS MiB':>8} {'models MiB':>10} {'libtorch':>9} {'torch_loaded':>13}  backend")
    for r in rows:
        print(f"{r['label']:22} {r['rss']:8.0f} {r['pss']:8.0f} {r['model_mb']:10.1f} "
              f"{'mapped' if r['libtorch'] else 'no':>9} {r['torch_loaded']:>13}  {r['backend']}")
    base = rows[-1]["rss"]
    b = rows[2]
    print(f"\nbundle files: fp32 {files['fp32'] / 2**20:.1f} MiB, fp16 {files['fp16'] / 2**20:.1f} MiB (GPU only)")
    rest = b["rss"] - base - b["model_mb"]
    print(f"bundle row = bare runtime {base:.0f} + models {b['model_mb']:.0f} + rest {rest:.0f} MiB "
          "(fused/optimised graph copies, activations, heap, worker thread, DDS buffers)")
    print(f"ratios: torch / bundle {rows[0]['rss'] / b['rss']:.2f}x, cache / bundle {rows[1]['rss'] / b['rss']:.2f}x")
    total, distinct, levels = shared_initialisers(bundle)
    print(f"initialisers over {levels} levels: {total / 2**20:.1f} MiB, byte-identical across levels: "
          f"{(total - distinct) / 2**20:.1f} MiB (the most that sharing initialisers between sessions could save)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
