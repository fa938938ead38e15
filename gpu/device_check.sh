#!/usr/bin/env bash
# The GPU checks of issue 7 in few steps, for a machine with an NVIDIA GPU, nvcc and PyTorch but
# no Qt and no Eigen / nlohmann-json / CLI11 packages (the `device` tool's machine).
#
#   here:  bash gpu/device_check.sh prepare   copy the header-only dependencies into .deps/include
#                                             (ignored by git; name .deps in the device call's carry)
#   there: bash gpu/device_check.sh test      build core + gpu + moelab-cli (sm_90 only) and run the
#                                             GPU parity tests, the core suites and the transformers check
#          bash gpu/device_check.sh bench     moelab-cli bench --device cuda over every lab size, in fp32
#                                             and in bf16 (each with its PyTorch peer in the same mode)
# Results (logs, bench JSON) go to $OUT when it is set, else to build-gpu/results.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
build=build-gpu
out="${OUT:-$build/results}"

case "$mode" in
  prepare)
    mkdir -p .deps/include
    cp -r /usr/include/eigen3/Eigen .deps/include/
    cp -r /usr/include/nlohmann /usr/include/CLI .deps/include/
    du -sh .deps
    ;;
  test)
    mkdir -p "$out"
    { nvidia-smi -L; nvcc --version | tail -1; python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' || true; } 2>&1 | tee "$out/device.txt"
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMOELAB_BUILD_APP=OFF -DMOELAB_WERROR=ON \
          -DMOELAB_EIGEN_DIR="$PWD/.deps/include" -DMOELAB_EXTRA_INCLUDE="$PWD/.deps/include" \
          -DCMAKE_CUDA_ARCHITECTURES=90 -DPython3_EXECUTABLE="$(command -v python3)" > "$out/configure.txt"
    cmake --build "$build" -j"$(nproc)" 2>&1 | tail -5
    set +e
    ctest --test-dir "$build" -L gpu --output-on-failure -V 2>&1 | tee "$out/ctest-gpu.txt" | grep -E "^[0-9]+: |Test +#|tests passed|graph nodes|loss difference|FAILED|skipped" | tail -60
    ctest --test-dir "$build" -L "core|reference|cli" -j8 --output-on-failure 2>&1 | tee "$out/ctest-core.txt" | tail -8
    ;;
  bench)
    mkdir -p "$out"
    "$build/app/moelab-cli" bench --device cuda --python "$(command -v python3)" 2>&1 | tee "$out/bench.txt"
    "$build/app/moelab-cli" bench --device cuda --precision bf16 --python "$(command -v python3)" 2>&1 | tee "$out/bench-bf16.txt"
    "$build/app/moelab-cli" bench --device cuda --sizes tiny --json --python "$(command -v python3)" > "$out/bench-tiny.json"
    ;;
  *)
    echo "usage: $0 prepare|test|bench" >&2
    exit 2
    ;;
esac
