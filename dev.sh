#!/usr/bin/env bash
# One entry point for a fresh machine (run as root):
#   ./dev.sh lab    installs what it needs, builds, runs the netns lab with real traffic
#   ./dev.sh test   installs what it needs, runs every test (unit, property, netns end-to-end)
set -euo pipefail
cd "$(dirname "$0")"

need_pkgs=(iproute2 nftables iperf3 curl openssl socat tcpdump iputils-ping netcat-openbsd ethtool python3)

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
}

case "${1:-}" in
  lab)
    install_deps
    cargo build --release --quiet
    exec ./target/release/tollgate lab run "${@:2}"
    ;;
  test)
    install_deps
    cargo build --release --quiet
    # --release: the end-to-end tests push real traffic through the appliance.
    exec cargo test --release -- --test-threads=2
    ;;
  *)
    echo "usage: $0 lab|test" >&2
    exit 2
    ;;
esac
