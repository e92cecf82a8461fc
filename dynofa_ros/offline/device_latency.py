"""Latency measured on this device: whole sub-networks (interleaved medians) and per-layer lookup tables.

Measurement here has to survive a shared, noisy machine (several engineers' tests on 2 cores, or a
robot's other nodes). So every figure is a median of many runs, candidates are measured round-robin
(an untimed then a timed forward pass per candidate per round, as ``profiler.py`` does) so that a load
burst hits all of them alike, and the thread count is set explicitly.

``profile_layers`` builds a lookup table for this device in OFA's key format by timing each distinct
layer of the search space once, taking the layers from real static sub-networks of the supernet so
their shapes are exactly what the networks run.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..inference import supernet as sn
from ..inference.backends import BACKENDS
from ..inference.family import EXPAND_CHOICES, KERNEL_CHOICES, NUM_BLOCKS, NUM_STAGES, Level
from .latency_model import Arch

#: Backends a latency can be measured on (``auto`` is resolved by the caller first).
MEASURED_BACKENDS = tuple(b for b in BACKENDS if b != "auto")


class MeasureError(RuntimeError):
    """A backend or device that cannot measure here."""


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p90_ms: float
    runs: int
    min_ms: float = 0.0


def level_of(arch: Arch) -> Level:
    return Level(tuple(arch["ks"]), tuple(arch["e"]), tuple(arch["d"]), int(arch["r"]))


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's thread count is process-wide: set it for one measurement and put it back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def onnxruntime_offered() -> bool:
    """Whether onnxruntime imports here (the backend layer says so without raising)."""
    from ..inference.backends import BackendError
    from ..inference.backends.onnxruntime_backend import import_onnxruntime

    try:
        import_onnxruntime()
    except BackendError:
        return False
    return True


def _torch_runner(module: nn.Module, resolution: int) -> Callable[[], None]:
    x = torch.randn(1, 3, resolution, resolution)

    def run() -> None:
        with torch.inference_mode():
            module(x)

    return run


def _onnx_runner(module: nn.Module, resolution: int, threads: int) -> Callable[[], None]:
    """The static sub-network exported and run exactly as the package's ONNX Runtime backend runs a level."""
    import numpy as np

    from ..inference.backends.onnx_cache import export_static
    from ..inference.backends.onnxruntime_backend import CPU, import_onnxruntime, session_options

    ort = import_onnxruntime()
    session = ort.InferenceSession(export_static(module, resolution), sess_options=session_options(ort, threads),
                                   providers=[CPU])
    name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution)).astype(np.float32)
    return lambda: session.run(None, {name: batch})


def time_interleaved(runners: Sequence[Callable[[], Any]], *, warmup: int = 3, runs: int = 15,
                     untimed: bool = True) -> list[Timing]:
    """Median and p90 per runner, measured round-robin (untimed + timed call per runner per round)."""
    for run in runners:
        for _ in range(warmup):
            run()
    samples: list[list[float]] = [[] for _ in runners]
    for _ in range(runs):
        for i, run in enumerate(runners):
            if untimed:
                run()  # refills caches after the previous runner, as in steady running
            t0 = time.perf_counter()
            run()
            samples[i].append((time.perf_counter() - t0) * 1e3)
    out = []
    for s in samples:
        s.sort()
        out.append(Timing(statistics.median(s), s[min(len(s) - 1, round(0.9 * (len(s) - 1)))], len(s), s[0]))
    return out


class DeviceMeter:
    """Measures sub-networks of one supernet on this machine with one backend."""

    def __init__(self, supernet: str, *, backend: str = "torch", threads: int | None = None, seed: int = 0):
        if backend not in MEASURED_BACKENDS:
            raise MeasureError(f"backend {backend!r}; allowed: {list(MEASURED_BACKENDS)}")
        if backend == "onnxruntime" and not onnxruntime_offered():
            raise MeasureError("backend 'onnxruntime' is not offered by dynofa_ros.inference.backends in this build; "
                               "use 'torch'")
        self.supernet = supernet
        self.backend = backend
        self.threads = int(threads or torch.get_num_threads())
        self.net = sn.build_supernet(supernet, seed=seed)

    def static(self, arch: Arch) -> nn.Module:
        """The static sub-network (``get_active_subnet(preserve_weight=True)``) in eval mode."""
        return sn.extract_static(self.net, level_of(arch))

    def runner(self, arch: Arch) -> Callable[[], None]:
        return self.module_runner(self.static(arch), int(arch["r"]))

    def module_runner(self, module: nn.Module, resolution: int) -> Callable[[], None]:
        """Any image classifier (1, 3, r, r) → logits run by this meter's backend (for comparisons)."""
        if self.backend == "torch":
            return _torch_runner(module.eval(), resolution)
        return _onnx_runner(module.eval(), resolution, self.threads)

    def measure(self, archs: Sequence[Arch], *, warmup: int = 3, runs: int = 15, chunk: int = 12) -> list[Timing]:
        """Interleaved timings of ``archs``, ``chunk`` sub-networks held in memory at a time."""
        out: list[Timing] = []
        with torch_threads(self.threads):
            for i in range(0, len(archs), chunk):
                runners = [self.runner(a) for a in archs[i:i + chunk]]
                out += time_interleaved(runners, warmup=warmup, runs=runs)
        return out

    def measure_one(self, arch: Arch, *, warmup: int = 2, runs: int = 7) -> float:
        with torch_threads(self.threads):
            return time_interleaved([self.runner(arch)], warmup=warmup, runs=runs)[0].p50_ms

    # ------------------------------------------------------------------ per-layer lookup table
    def profile_layers(self, resolutions: Iterable[int], *, warmup: int = 2, runs: int = 10,
                       progress: Callable[[str], None] | None = None) -> dict[int, dict[str, dict[str, float]]]:
        """A lookup table per resolution for this device, each distinct layer timed once.

        Nine uniform sub-networks per resolution (every kernel x expand pair, full depth) hold every
        distinct layer of the space: the first block of each stage (stride, channel change) and the
        following ones, at every kernel and expand choice, plus stem and head.
        """
        tables: dict[int, dict[str, dict[str, float]]] = {}
        for r in resolutions:
            t0 = time.perf_counter()
            layers: dict[str, tuple[nn.Module, torch.Tensor]] = {}
            for ks in KERNEL_CHOICES:
                for e in EXPAND_CHOICES:
                    arch = {"ks": [ks] * NUM_BLOCKS, "e": [e] * NUM_BLOCKS, "d": [4] * NUM_STAGES, "r": r}
                    for key, module, inp in _layers_with_inputs(self.static(arch), r):
                        layers.setdefault(key, (module, inp))
            keys = sorted(layers)
            runners = [_layer_runner(*layers[k]) if self.backend == "torch" else
                       _onnx_layer_runner(*layers[k], threads=self.threads) for k in keys]
            with torch_threads(self.threads):
                # no untimed call in between: in a network a layer also runs right after another one
                timings = time_interleaved(runners, warmup=warmup, runs=runs, untimed=False)
            # "mean" (the field OFA's estimator reads) holds the fastest run: interference from other
            # processes only ever adds time, and a layer takes well under a millisecond, so on a shared
            # machine the median of a short burst can be inflated many times while the minimum stays put.
            # The gap between layer sums and whole networks is fitted afterwards (AffineCalibration).
            tables[r] = {k: {"mean": t.min_ms, "p50": t.p50_ms, "p90": t.p90_ms, "count": t.runs}
                         for k, t in zip(keys, timings, strict=True)}
            if progress:
                progress(f"resolution {r}: {len(keys)} layers in {time.perf_counter() - t0:.1f} s")
        return tables


class _RecordingTable(dict):
    """A stand-in lookup table that records the keys OFA's estimator asks for, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.keys_asked: list[str] = []

    def __getitem__(self, key: str) -> dict[str, float]:
        self.keys_asked.append(key)
        return {"mean": 0.0}


def layer_keys(static_net: nn.Module, resolution: int) -> list[str]:
    """OFA ``LatencyEstimator`` keys of a static sub-network's layers, in forward order."""
    from .latency_model import _estimator

    table = _RecordingTable()
    _estimator(table).predict_network_latency(static_net, image_size=resolution)
    return table.keys_asked


def _layers_with_inputs(net: nn.Module, resolution: int) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(key, module, example input) for each layer OFA's estimator counts, by running one forward pass."""
    modules = [net.first_conv, *[b for b in net.blocks if b.conv is not None], net.final_expand_layer,
               net.global_avg_pool, net.feature_mix_layer, net.classifier]
    keys = layer_keys(net, resolution)
    if len(keys) != len(modules):
        raise MeasureError(f"internal: {len(keys)} layer keys for {len(modules)} layers")
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone())) for m in modules]
    try:
        with torch.inference_mode():
            net(torch.randn(1, 3, resolution, resolution))
    finally:
        for h in hooks:
            h.remove()
    return list(zip(keys, modules, inputs, strict=True))


def _layer_runner(module: nn.Module, inp: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            module(inp)

    return run


def _onnx_layer_runner(module: nn.Module, inp: torch.Tensor, threads: int) -> Callable[[], None]:
    """One layer exported alone (same exporter and session options as the backend) and run on its input."""
    import inspect
    import io
    import warnings

    from ..inference.backends.onnx_cache import OPSET
    from ..inference.backends.onnxruntime_backend import CPU, import_onnxruntime, session_options

    kwargs: dict[str, Any] = {"opset_version": OPSET, "input_names": ["x"], "do_constant_folding": True}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (inp,), buf, **kwargs)
    ort = import_onnxruntime()
    session = ort.InferenceSession(buf.getvalue(), sess_options=session_options(ort, threads), providers=[CPU])
    feed = {"x": inp.numpy()}
    return lambda: session.run(None, feed)
