#!/usr/bin/env bash
# The GPU checks in one short script, for a machine with an NVIDIA GPU, nvcc, CMake and PyTorch but
# no Qt and no Eigen / nlohmann-json / CLI11 packages (the `device` tool's machine, which starts bare).
#
#   here:  bash gpu/device_check.sh prepare   copy the header-only dependencies into .deps/include
#                                             (ignored by git: name ".deps" in the device call's carry)
#   there: bash gpu/device_check.sh test      build what the GPU checks need (core, gpu, moelab-cli,
#                                             test_gpu_parity and test_gpu_stored; sm_90 only, no GUI)
#                                             and run ctest -L gpu (the parity tests, bf16 checkpoints
#                                             kept as stored on the device, the transformers check)
#          bash gpu/device_check.sh bench     build if needed, then moelab-cli bench --device cuda size
#                                             by size (tiny to large), fp32 then bf16 for each size,
#                                             each with its PyTorch peer in the same mode; then the
#                                             decode of a bf16 checkpoint kept as bf16 on the device
#                                             against the same checkpoint widened to fp32
#          bash gpu/device_check.sh all       test, then bench: one machine start for everything
#
# Every step writes its results under $OUT (else build-gpu/results) as it goes, through tee, so a
# command cut off by its time limit still returns what it had. Six files at most (the device tool
# returns eight):
#   device.txt        GPU, nvcc, torch; then one line per step with its exit status and seconds
#   build.txt         configure and build output
#   ctest-gpu.txt     ctest -L gpu -V
#   bench.txt         one summary line per bench run, and the runs' stderr; the stored-bf16 decode line
#   bench-fp32.jsonl  one compact `bench --json` document per size (as each run ends)
#   bench-bf16.jsonl  the same in bf16
# shellcheck disable=SC2317  # the step functions are called through step()
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
mode="${1:-}"
build="build-gpu"
out="${OUT:-$build/results}"
py="$(command -v python3 || echo /usr/bin/python3)"
failed=0

# Line-buffered output through pipes, so tee writes each line as it comes.
lb() {
  if command -v stdbuf > /dev/null; then stdbuf -oL -eL "$@"; else "$@"; fi
}

# step NAME COMMAND...: runs it, then logs its exit status and duration to device.txt.
step() {
  local name="$1" t0=$SECONDS rc
  shift
  echo "== $name" | tee -a "$out/device.txt"
  "$@"
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/device.txt"
  [ "$rc" -eq 0 ] || failed=1
  return "$rc"
}

environment() {
  {
    date -u
    nvidia-smi -L
    nvcc --version | tail -1
    cmake --version | head -1
    "$py" -c 'import sys, torch, transformers; print(sys.executable, "torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)'
  } 2>&1 | tee -a "$out/device.txt"
  return 0
}

configure_and_build() {
  if [ ! -f .deps/include/Eigen/Dense ] || [ ! -f .deps/include/nlohmann/json.hpp ] || [ ! -f .deps/include/CLI/CLI.hpp ]; then
    echo "no .deps/include: run 'bash gpu/device_check.sh prepare' here and carry .deps" | tee -a "$out/build.txt"
    return 1
  fi
  lb cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMOELAB_BUILD_APP=OFF -DMOELAB_WERROR=ON \
     -DCMAKE_CUDA_ARCHITECTURES=90 -DMOELAB_EIGEN_DIR="$PWD/.deps/include" -DMOELAB_EXTRA_INCLUDE="$PWD/.deps/include" \
     -DPython3_EXECUTABLE="$py" -DMOELAB_REFERENCE_PYTHON="$py" 2>&1 | tee -a "$out/build.txt" | tail -3 || return 1
  # Only what the GPU checks run: moelab-cli (core, gpu, devices) and the GPU tests.
  lb cmake --build "$build" -j"$(nproc)" --target moelab-cli test_gpu_parity test_gpu_stored 2>&1 |
    tee -a "$out/build.txt" | tail -5
  local rc="${PIPESTATUS[0]}"
  [ "$rc" -eq 0 ] || grep -E -m 20 "error|Error" "$out/build.txt"
  return "$rc"
}

gpu_tests() {
  # -L gpu: test_gpu_parity, test_gpu_stored and check_transformers_cuda (with its fixture,
  # reference_fixtures).
  lb ctest --test-dir "$build" -L gpu --output-on-failure -V 2>&1 | tee -a "$out/ctest-gpu.txt" |
    grep -E "^[0-9]+: |Test +#|tests passed|graph nodes|loss difference|agree closely|within 1e-5|FAILED|[Ss]kipped" |
    tail -80
  return "${PIPESTATUS[0]}"
}

bench() {
  local cli="$build/app/moelab-cli" size precision json rc=0
  for size in tiny small medium large; do
    for precision in fp32 bf16; do
      json="$(mktemp)"
      echo "-- bench $size $precision" | tee -a "$out/bench.txt"
      if lb "$cli" bench --device cuda --precision "$precision" --sizes "$size" --json --python "$py" \
            > "$json" 2> >(tee -a "$out/bench.txt" >&2); then
        "$py" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$json" >> "$out/bench-$precision.jsonl"
        "$py" - "$json" "$precision" << 'EOF' 2>&1 | tee -a "$out/bench.txt"
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["sizes"]:
    print(f'{r["size"]} {sys.argv[2]}: decode {r["decode_us_per_token"]:.1f} us/token '
          f'({r["decode_over_floor"]:.2f}x the launch floor), prefill {r["prefill_tokens_per_s"]:.0f} tokens/s, '
          f'train {r.get("train_tokens_per_s", 0):.0f} tokens/s; vs PyTorch: decode {r.get("decode_ratio", 0):.2f}x, '
          f'prefill {r.get("prefill_ratio", 0):.2f}x, train {r.get("train_ratio", 0):.2f}x')
EOF
      else
        rc=1
        echo "bench $size $precision failed" | tee -a "$out/bench.txt"
      fi
      rm -f "$json"
    done
  done
  # bf16 weights kept as bf16 on the device vs widened to fp32: graph-recorded decode, one line.
  echo "-- stored bf16 decode" | tee -a "$out/bench.txt"
  lb "$build/tests/test_gpu_stored" --bench 2>&1 | grep -E "stored-bf16 decode|FAIL|skipped" | tee -a "$out/bench.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  return "$rc"
}

case "$mode" in
  prepare)
    mkdir -p .deps/include
    cp -r /usr/include/eigen3/Eigen .deps/include/
    cp -r /usr/include/nlohmann /usr/include/CLI .deps/include/
    du -sh .deps
    exit 0
    ;;
  test | bench | all)
    mkdir -p "$out"
    step environment environment
    if [ "$mode" != bench ] || [ ! -x "$build/app/moelab-cli" ]; then
      step build configure_and_build || exit 1
    fi
    [ "$mode" = bench ] || step gpu-tests gpu_tests
    [ "$mode" = test ] || step bench bench
    echo "results in $out; $([ "$failed" -eq 0 ] && echo "every step passed" || echo "a step FAILED")"
    exit "$failed"
    ;;
  *)
    echo "usage: $0 prepare|test|bench|all" >&2
    exit 2
    ;;
esac
