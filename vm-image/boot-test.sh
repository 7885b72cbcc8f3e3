#!/usr/bin/env bash
# Boots the Tollgate image under qemu and pushes real traffic through it.
#
#   sudo vm-image/boot-test.sh [--image vm-image/out/tollgate-bookworm.qcow2] [--timeout 900]
#                              [--keep-logs] [--no-health] [--accel auto|kvm|tcg]
#
# Topology (all in network namespaces this script creates, prefix tgvNNNN; the host's own
# interfaces, routes and firewall are never touched):
#
#   <p>in  198.18.0.11/24 ---- br0 -- tap0 == eth0 198.18.0.1/24  [VM]  eth1 203.0.113.1/24 == tap1 -- br1 ---- <p>out 203.0.113.10/24
#   default via 198.18.0.1                                                                                        python3 -m http.server 8000
#
# qemu, the taps and the bridges live in a third namespace <p>vm; veths join them to <p>in and
# <p>out. The VM gets its addresses and /etc/tollgate/tollgate.toml from a NoCloud seed (cidata ISO).
# The VM boots from a qcow2 overlay: the image itself is never modified.
#
# Checks: the VM boots and cloud-init runs (serial console markers), the VM answers ping on both
# sides, tollgate.service is active, curl from <p>in to 203.0.113.10:8000 succeeds and the server
# logs 203.0.113.1 as the client (SNAT by the VM), curl to port 8081 (no rule allows it) fails
# without reaching the server there, and http://203.0.113.1:9090/healthz answers.
# Exit 0 only if every check passed (--no-health: the health check is reported but not counted,
# for daemons without a health endpoint). Everything is removed on every exit path.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
image="$here/out/tollgate-bookworm.qcow2"
timeout=900
keep_logs=0
require_health=1
accel_opt=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --keep-logs) keep_logs=1; shift ;;
    --no-health) require_health=0; shift ;;
    --accel) accel_opt=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "boot-test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "boot-test.sh: run as root (namespaces, taps)" >&2; exit 1; }
[ -f "$image" ] || { echo "boot-test.sh: image $image not found (run vm-image/build.sh)" >&2; exit 1; }

need=(qemu-system-x86 qemu-utils genisoimage iproute2 curl python3 iputils-ping)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# qemu-system-x86 and qemu-utils must be one version: a machine can come with qemu-utils from
# another release (e.g. a backport whose source is no longer configured), and apt then refuses
# qemu-system-x86 beside it ("held broken packages"). So qemu-utils is asked for at the version
# apt would install qemu-system-x86 at, downgrading it if need be.
pkgs=("${missing[@]}")
if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
  apt-get update -qq
  want=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  pkgs=()
  for x in "${missing[@]}"; do [ "$x" = qemu-utils ] || pkgs+=("$x"); done
  if [ -n "$want" ] && [ "$want" != "(none)" ] && [ "$have" != "$want" ]; then
    [ -n "$have" ] && echo "qemu-utils $have does not match qemu-system-x86 $want: installing qemu-utils $want"
    pkgs+=("qemu-utils=$want")
  fi
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
  echo "installing: ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades "${pkgs[@]}" >/dev/null
fi

p="tgv$$"
ns_vm="${p}vm" ns_in="${p}in" ns_out="${p}out"
dir=$(mktemp -d /var/tmp/tollgate-boottest.XXXXXX)
qemu_pid="" http_pid="" http2_pid=""
t0=$(date +%s)
log() { printf '[boot-test +%4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid"
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$qemu_pid" 2>/dev/null
  fi
  if [ -n "$http_pid" ] && kill -0 "$http_pid" 2>/dev/null; then kill "$http_pid"; fi
  if [ -n "$http2_pid" ] && kill -0 "$http2_pid" 2>/dev/null; then kill "$http2_pid"; fi
  wait 2>/dev/null
  for n in "$ns_in" "$ns_out" "$ns_vm"; do
    ip netns list | grep -qw "$n" && ip netns del "$n"
  done
  if [ "$keep_logs" = 1 ] || [ "$rc" != 0 ]; then
    log "logs kept in $dir"
  else
    rm -rf "$dir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- namespaces ---------------------------------------------------------------------------------
log "namespaces $ns_vm $ns_in $ns_out"
ip netns add "$ns_vm"; ip netns add "$ns_in"; ip netns add "$ns_out"
ip -n "$ns_vm" link set lo up
for i in 0 1; do
  ip -n "$ns_vm" tuntap add dev "tap$i" mode tap
  ip -n "$ns_vm" link add "br$i" type bridge
  ip -n "$ns_vm" link set "tap$i" master "br$i"
done
ip -n "$ns_vm" link add veth0 type veth peer name eth0 netns "$ns_in"
ip -n "$ns_vm" link add veth1 type veth peer name eth0 netns "$ns_out"
ip -n "$ns_vm" link set veth0 master br0
ip -n "$ns_vm" link set veth1 master br1
for l in tap0 tap1 br0 br1 veth0 veth1; do ip -n "$ns_vm" link set "$l" up; done

ip -n "$ns_in" link set lo up
ip -n "$ns_in" addr add 198.18.0.11/24 dev eth0
ip -n "$ns_in" link set eth0 up
ip -n "$ns_in" route add default via 198.18.0.1

ip -n "$ns_out" link set lo up
ip -n "$ns_out" addr add 203.0.113.10/24 dev eth0
ip -n "$ns_out" link set eth0 up
# No route to 198.18.0.0/15 here: only SNATed traffic (from 203.0.113.1) can be answered.

mkdir -p "$dir/www"
echo "hello from 203.0.113.10" > "$dir/www/index.html"
ip netns exec "$ns_out" python3 -u -m http.server 8000 --bind 203.0.113.10 --directory "$dir/www" \
  > "$dir/http.log" 2>&1 &
http_pid=$!
# A second server the rules do not allow (only tcp/8000 is): must never see a request.
ip netns exec "$ns_out" python3 -u -m http.server 8081 --bind 203.0.113.10 --directory "$dir/www" \
  > "$dir/http-denied.log" 2>&1 &
http2_pid=$!

# --- NoCloud seed ----------------------------------------------------------------------------------
mac0=02:54:00:00:00:10
mac1=02:54:00:00:00:11
mkdir -p "$dir/seed"
cat > "$dir/seed/meta-data" <<EOF
instance-id: tollgate-boottest-$p
local-hostname: tollgate
EOF
cat > "$dir/seed/network-config" <<EOF
version: 2
ethernets:
  eth0:
    match: { macaddress: "$mac0" }
    set-name: eth0
    addresses: [ 198.18.0.1/24 ]
  eth1:
    match: { macaddress: "$mac1" }
    set-name: eth1
    addresses: [ 203.0.113.1/24 ]
EOF
{
  "$here/azure/render-custom-data.sh" "$here/boot-test/tollgate.toml"
  cat "$here/boot-test/report-files.yaml" "$here/boot-test/report.yaml"
} > "$dir/seed/user-data"
genisoimage -quiet -output "$dir/seed.iso" -volid cidata -joliet -rock \
  "$dir/seed/user-data" "$dir/seed/meta-data" "$dir/seed/network-config"

# --- qemu ----------------------------------------------------------------------------------------
qemu-img create -q -f qcow2 -b "$(readlink -f "$image")" -F qcow2 "$dir/overlay.qcow2"
start_qemu() {  # $1: kvm or tcg
  local cpu=max
  # Nested KVM here refuses IA32_ARCH_CAPABILITIES (MSR 0x10a) with -cpu host/max.
  [ "$1" = kvm ] && cpu=host,-arch-capabilities
  ip netns exec "$ns_vm" qemu-system-x86_64 \
    -machine pc,accel="$1" -cpu "$cpu" -smp 2 -m 1024 \
    -display none -monitor none -serial "file:$dir/serial.log" \
    -drive file="$dir/overlay.qcow2",if=virtio,format=qcow2 \
    -drive file="$dir/seed.iso",if=ide,media=cdrom,format=raw,readonly=on \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,mac="$mac0" \
    -netdev tap,id=n1,ifname=tap1,script=no,downscript=no \
    -device virtio-net-pci,netdev=n1,mac="$mac1" \
    > "$dir/qemu.log" 2>&1 &
  qemu_pid=$!
}
accel=${accel_opt:-auto}
if [ "$accel" = auto ]; then
  accel=tcg
  if [ -e /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; fi
fi
log "qemu (accel=$accel, 2 vCPU, 1 GiB), serial console in $dir/serial.log"
start_qemu "$accel"
if [ "$accel" = kvm ]; then
  # Nested KVM can fail outright (an MSR qemu cannot set) or stall in the firmware (a KVM
  # "emulation failure"): no output from extlinux/the kernel within 60 s means software emulation.
  for _ in $(seq 1 30); do
    kill -0 "$qemu_pid" 2>/dev/null || break
    [ -s "$dir/serial.log" ] && break
    sleep 2
  done
  if ! kill -0 "$qemu_pid" 2>/dev/null || [ ! -s "$dir/serial.log" ]; then
    log "KVM did not boot ($(grep -m1 -i -E 'error|failure' "$dir/qemu.log" || echo 'no serial output in 60 s')): software emulation (TCG)"
    if kill -0 "$qemu_pid" 2>/dev/null; then
      kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true
    fi
    accel=tcg
    rm -f "$dir/overlay.qcow2" "$dir/serial.log"
    qemu-img create -q -f qcow2 -b "$(readlink -f "$image")" -F qcow2 "$dir/overlay.qcow2"
    start_qemu tcg
  fi
fi

# --- checks ----------------------------------------------------------------------------------------
declare -A result
check() { result[$1]=$2; log "$1: $2${3:+ ($3)}"; }
qemu_alive() { kill -0 "$qemu_pid" 2>/dev/null; }

deadline=$(( t0 + timeout ))
log "waiting for the VM (timeout ${timeout}s)"
booted=""
while [ "$(date +%s)" -lt "$deadline" ] && qemu_alive; do
  if grep -q "TOLLGATE-BOOTTEST cloud-init-final" "$dir/serial.log" 2>/dev/null; then
    booted=$(( $(date +%s) - t0 )); break
  fi
  sleep 2
done
if ! qemu_alive; then
  log "qemu exited: $(tail -n 5 "$dir/qemu.log")"
fi
if [ -n "$booted" ]; then
  check boot PASS "cloud-init final stage reached ${booted}s after qemu start"
else
  check boot FAIL "no cloud-init marker on the serial console; last lines: $(tail -n 3 "$dir/serial.log" 2>/dev/null | tr -d '\r' | tr '\n' '|')"
fi
grep -a "TOLLGATE-BOOTTEST bootcmd" "$dir/serial.log" 2>/dev/null | head -n1 | tr -d '\r' || true

if ip netns exec "$ns_in" ping -c 3 -W 2 -q 198.18.0.1 >/dev/null 2>&1; then
  check ping-inside PASS "198.18.0.11 -> 198.18.0.1"
else
  check ping-inside FAIL "198.18.0.11 -> 198.18.0.1"
fi
if ip netns exec "$ns_out" ping -c 3 -W 2 -q 203.0.113.1 >/dev/null 2>&1; then
  check ping-outside PASS "203.0.113.10 -> 203.0.113.1"
else
  check ping-outside FAIL "203.0.113.10 -> 203.0.113.1"
fi

# tollgate.service: wait up to 60 s for an "active" report.
svc=""
tries=30
qemu_alive || tries=1
for _ in $(seq 1 "$tries"); do
  svc=$(grep -a "TOLLGATE-BOOTTEST uptime=" "$dir/serial.log" 2>/dev/null | tail -n1 | tr -d '\r' || true)
  case "$svc" in *tollgate=active*) break ;; esac
  sleep 2
done
case "$svc" in
  *tollgate=active*) check tollgate-service PASS "${svc#TOLLGATE-BOOTTEST }" ;;
  *) check tollgate-service FAIL "${svc#TOLLGATE-BOOTTEST }" ;;
esac

body=""
tries=10
qemu_alive || tries=1
for _ in $(seq 1 "$tries"); do
  body=$(ip netns exec "$ns_in" curl -sS --max-time 5 http://203.0.113.10:8000/ 2>>"$dir/curl.err") && break
  sleep 3
done
if [ "$body" = "hello from 203.0.113.10" ]; then
  check curl-through-vm PASS "198.18.0.11 -> 203.0.113.10:8000"
else
  check curl-through-vm FAIL "$(tail -n1 "$dir/curl.err" 2>/dev/null)"
fi
if grep -q '^203\.0\.113\.1 ' "$dir/http.log"; then
  check snat-source PASS "server log: $(grep '^203\.0\.113\.1 ' "$dir/http.log" | tail -n1)"
else
  check snat-source FAIL "server log has no request from 203.0.113.1: $(tail -n1 "$dir/http.log")"
fi

if ip netns exec "$ns_in" curl -sS --max-time 5 -o /dev/null http://203.0.113.10:8081/ 2>/dev/null; then
  check deny-port-8081 FAIL "curl to 203.0.113.10:8081 succeeded: no rule allows it"
elif grep -q '"GET ' "$dir/http-denied.log"; then
  check deny-port-8081 FAIL "the server on 8081 saw a request"
else
  check deny-port-8081 PASS "198.18.0.11 -> 203.0.113.10:8081 dropped (default deny)"
fi

if h=$(ip netns exec "$ns_out" curl -sS --max-time 5 http://203.0.113.1:9090/healthz 2>&1); then
  check health PASS "http://203.0.113.1:9090/healthz: $h"
else
  check health FAIL "http://203.0.113.1:9090/healthz: $h"
fi

log "serial console, TOLLGATE-BOOTTEST lines:"
grep -a "TOLLGATE-BOOTTEST\|TOLLGATE-JOURNAL\|^eth[01] " "$dir/serial.log" | tr -d '\r' | tail -n 24 || true

fail=0
echo
echo "boot-test summary (image $(basename "$image"), accel=$accel, total $(( $(date +%s) - t0 ))s):"
for k in boot ping-inside ping-outside tollgate-service curl-through-vm snat-source deny-port-8081 health; do
  note=""
  if [ "$k" = health ] && [ "$require_health" = 0 ]; then note=" (not counted: --no-health)"; fi
  printf '  %-18s %s%s\n' "$k" "${result[$k]:-SKIPPED}" "$note"
  if [ -n "$note" ]; then continue; fi
  [ "${result[$k]:-FAIL}" = PASS ] || fail=1
done
exit "$fail"
