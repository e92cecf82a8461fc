#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one short run: a lent GPU machine (the workplace's `device` tool) is
# bare, has no network and little time, so everything it needs travels with the tree and runs in one call.
#
#   scripts/gpu_check.sh OUT_DIR [WHEEL_DIR]
#
# The machine's python3 must hold CUDA torch (its image does). WHEEL_DIR (default .whl) holds the cp3xx
# wheels that image lacks: the ROS 2 PyPI wheels of requirements-ros-pypi.txt with their dependencies,
# ofa, rosbags, rosbags-image (how to fetch them: docs/backends.md, "On a GPU").
# Steps, each bounded, each logged to OUT_DIR:
#   1. install them and this package into that interpreter's environment (the machine is thrown away after);
#   2. the CUDA tests (test_cuda_* of the perception graph and the backends), in a loopback-only namespace;
#   3. dynofa-profile of generic_cpu's levels on CUDA (torch), written into a copy of the family;
#   4. bench/contention.py, pattern step, on CUDA with that profile: targets = TARGET_X × level 6's p50 there,
#      CPU contention = one busy process per 2 cores (eager torch on a GPU is bound by the CPU thread that
#      launches its kernels, so CPU load slows it, as on a Jetson).
# PATTERNS (default step) and BENCH_COLUMNS pick what step 4 runs, or BENCH_PLAN runs several such stages into
# one bench (--resume), e.g. "bursty,ramp:joint,L0,L3,L6 target_steps:joint,L0,L6"; BENCH_S (default 330) bounds
# the whole step: the bench saves after every column and its runs.json is copied out every 10 s, so a cut-off
# bench keeps its runs; the managers' logs come back as manager_logs.tgz. SKIP_TESTS=1 skips step 2; TESTS_LAST=1
# runs it after the bench instead (where the bench is what the call is for and the tests may be cut off).
set -uo pipefail
out=$(realpath -m "${1:?usage: scripts/gpu_check.sh OUT_DIR [WHEEL_DIR]}")
whl=${2:-.whl}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$out"
say() { echo "gpu_check: $*"; }

# Loopback-only namespace (scripts/isolated.sh); its ioctl path brings lo up where the image lacks iproute2.
. scripts/isolated.sh
export DYNOFA_ISOLATED_PY="$py" DYNOFA_ALLOW_SHARED_NET=1 PYTHONUNBUFFERED=1  # the lent machine is offline

dev=${DEVICE:-cuda}   # DEVICE=cpu SKIP_INSTALL=1 PYTHON=.venv/bin/python: a dry run of this script on a CPU
say "1. install"
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile "$whl"/*.whl || exit 1
  "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
fi
"$py" -c 'import torch, rclpy; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
echo "cpus $(nproc)"

cuda_tests() {
  say "2. CUDA tests"
  [ "${SKIP_TESTS:-0}" = 1 ] && { say "skipped (SKIP_TESTS=1)"; return; }
  run_isolated timeout 240 "$py" -m pytest -q -p no:cacheprovider -rs test/test_perception_graph.py \
    test/test_backends.py -k cuda 2>&1 | tee "$out/pytest.log"
}
[ "${TESTS_LAST:-0}" = 1 ] || cuda_tests

say "3. profile on $dev"
fam="$out/generic_cpu_$dev.json"
timeout 180 "$("$py" -c "import os, sys; print(os.path.dirname(sys.executable))")/dynofa-profile" --family config/families/generic_cpu.json --device "$dev" \
  --backend torch --runs "${PROFILE_RUNS:-200}" \
  --warmup 20 --write --out "$fam" 2>&1 | tee "$out/profile.log"
[ -f "$fam" ] || { say "no profile written: bench skipped"; exit 1; }

say "4. contention bench on $dev"
scale=$("$py" -c "import json, sys; lv = json.load(open(sys.argv[1]))['levels'][-1]['latency_ms']
print(round(float(sys.argv[2]) * lv['generic_$dev/torch'] / 30.0, 4))" "$fam" "${TARGET_X:-1.5}")
busy=$(( $(nproc) / 2 ))
say "target 30 ms × $scale, busy processes × $busy"
bench=/tmp/bench_gpu; rm -f "$bench/runs.json"
(while sleep 10; do cp "$bench/runs.json" "$out/" 2>/dev/null; done) & copier=$!
deadline=$(( SECONDS + ${BENCH_S:-330} )); resume=()
for stage in ${BENCH_PLAN:-"${PATTERNS:-step}:${BENCH_COLUMNS:-joint,step,L0,L2,L4,L6}"}; do
  left=$(( deadline - SECONDS )); [ "$left" -gt 20 ] || { say "no time left for $stage"; break; }
  say "bench stage $stage (${left} s left)"
  run_isolated timeout "$left" "$py" bench/contention.py --patterns "${stage%%:*}" --controllers "${stage#*:}" \
    --duration-scale 0.5 --busy-scale "$busy" --target-scale "$scale" --family "$fam" "${resume[@]}" \
    --manager-param "latency_profile=generic_$dev/torch" --perception-param "device=$dev" \
    --perception-param backend=torch --out "$bench" 2>&1 | tee -a "$out/bench.log"
  resume=(--resume)
done
kill "$copier" 2>/dev/null
cp "$bench/runs.json" "$bench/contention.json" "$bench/contention.png" "$out/" 2>/dev/null
# the managers' reasons for each switch (a few KiB per column): the machine is thrown away after the call
(cd "$bench" && tar czf "$out/manager_logs.tgz" logs/*/manager_node*.log 2>/dev/null)
[ "${TESTS_LAST:-0}" = 1 ] && cuda_tests
say "done"
