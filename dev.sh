#!/usr/bin/env bash
# One entry point for a fresh machine (run as root):
#   ./dev.sh lab    installs what it needs, builds, runs the netns lab with real traffic
#   ./dev.sh test   installs what it needs, runs every test (unit, property, netns end-to-end)
set -euo pipefail
cd "$(dirname "$0")"

need_pkgs=(iproute2 nftables iperf3 curl openssl socat tcpdump iputils-ping netcat-openbsd ethtool python3 coturn conntrack clang)
# clang builds the XDP program of the af_xdp backend (build.rs); here its absence is an error
export TOLLGATE_REQUIRE_XDP=1

install_deps() {
  local missing=()
  for p in "${need_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || { echo "cargo not found: install Rust first" >&2; exit 1; }
  install_py_deps
}

# Python packages the end-to-end tests use (tests/e2e_quic.rs: aioquic), from PyPI, only if
# python3 cannot import them yet. pip comes from apt when missing; on a Debian python3 that is
# marked externally managed (PEP 668), pip needs --break-system-packages to install for root.
need_py=(aioquic)

install_py_deps() {
  local missing=()
  for m in "${need_py[@]}"; do
    python3 -c "import $m" 2>/dev/null || missing+=("$m")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "installing (pip): ${missing[*]}"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  python3 -m pip install -q "${missing[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${missing[@]}"
  for m in "${missing[@]}"; do
    python3 -c "import $m" || { echo "python3 still cannot import $m" >&2; exit 1; }
  done
}

case "${1:-}" in
  lab)
    install_deps
    cargo build --release --workspace --quiet
    exec ./target/release/tollgate lab run "${@:2}"
    ;;
  test)
    install_deps
    cargo build --release --workspace --quiet
    # --release: the end-to-end tests push real traffic through the appliance. Everything runs
    # with the default backend (auto: AF_PACKET on veth, whose AF_XDP is copy mode only), then
    # the end-to-end tests again on AF_XDP.
    cargo test --release --workspace -- --test-threads=2
    echo "== the end-to-end tests again, on the af_xdp backend"
    TOLLGATE_BACKEND=af_xdp cargo test --release --workspace --test 'e2e_*' -- --test-threads=2
    ;;
  *)
    echo "usage: $0 lab|test" >&2
    exit 2
    ;;
esac
