#!/usr/bin/env bash
# Tollgate vs the Linux kernel (ip_forward=1 + nftables masquerade + conntrack) on the lab
# topology, in one run, in the same appliance namespace:
#   client 198.18.0.11 -- tg-in 198.18.0.1 [appliance] tg-out 203.0.113.1 -- server 203.0.113.10
# Metrics: 64-byte UDP packets/s (1 flow and FLOWS streams of iperf3, MANY flows of
# lab/examples/udpflood), iperf3 TCP Gb/s (1 stream client to server, STREAMS streams, 1 stream
# server to client), new TCP connections/s.
# Offloads: every row runs with the kernel's default offloads on every interface (TSO/GSO on
# the client's, server's and appliance's veths; nothing runs ethtool), for the kernel and for
# Tollgate alike: the end hosts send GSO super-frames, as Linux peers do, and the appliance
# must take them (the TCP rows are the ones where this matters: iperf3's TCP sender hands its
# veth up to 64 KiB per frame). Tollgate runs without --offloads-off.
# UDP packets/s are counted where they arrive: an nftables counter at the server's ingress
# (prerouting, priority raw) counts what the appliance delivered. For iperf3 the rate its
# receiver got is reported too: on a 2-CPU machine that receiver shares a CPU with the
# appliance and drops what it has no CPU for (UdpRcvbufErrors), which is the test host, not
# the appliance.
# Each: RUNS runs (default 5), median and spread (min-max), ratio Tollgate/kernel, markdown table.
#
# usage (root): benches/throughput.sh [path/to/tollgate] [config.toml]
#   env: RUNS=5 SECS=3 FLOWS=8 MANY=1024 STREAMS=4 WORKERS=2
#   OVERHEAD=1: instead of the kernel, Tollgate against itself: observability off
#   (decision_log = false, nobody scrapes) vs on (decision log written, /metrics scraped every
#   second), the two alternating run by run (which goes first swaps every run) so machine
#   noise and order effects hit both alike; SCRAPE=0: on = decision log only
#   ONLY="udp1 cps": a subset of the metrics (udp1 udpN udpM tcp tcpN tcpR cps cps1)
#   TG_RUN=path: an alternative appliance binary taking the same `run --config F --workers N`
#   arguments (an older build, for a before/after comparison)
# Only namespaces this script creates (prefix tgb<pid>-), only 198.18.0.0/15 and 203.0.113.0/24;
# everything is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

TG=${TG_RUN:-${1:-target/release/tollgate}}
CONFIG=${2:-tests/lab.toml}
RUNS=${RUNS:-5}
SECS=${SECS:-3}
FLOWS=${FLOWS:-8}
STREAMS=${STREAMS:-4}   # parallel iperf3 TCP streams of the tcpN row
MANY=${MANY:-1024}
FLOOD=${FLOOD:-target/release/examples/udpflood}
CPS=${CPS:-target/release/examples/tcpcps}
CONC=${CONC:-64}
FLOOD_THREADS=${FLOOD_THREADS:-$(nproc)}
WORKERS=${WORKERS:-2}
RX_RING=${RX_RING:-v2}   # v2 (frame-based RX ring, the default) or v3 (block-based)
CPS_THREADS=${CPS_THREADS:-4}
BUSY_POLL_US=${BUSY_POLL_US:-}  # empty: the appliance's default
P="tgb$$-"
C=${P}client; A=${P}app; S=${P}server
PIDS=()
TMP=$(mktemp -d)

[ "$(id -u)" = 0 ] || { echo "benches/throughput.sh needs root (network namespaces)" >&2; exit 1; }
for t in ip nft iperf3 python3; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 1; }; done

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for n in "$C" "$A" "$S"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

setup() {
  for n in "$C" "$A" "$S"; do
    ip netns add "$n"
    ip -n "$n" link set lo up
    nsx "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip -n "$A" link add tg-in type veth peer name eth0 netns "$C"
  ip -n "$A" link add tg-out type veth peer name eth0 netns "$S"
  ip -n "$C" addr add 198.18.0.11/24 dev eth0
  ip -n "$A" addr add 198.18.0.1/24 dev tg-in
  ip -n "$A" addr add 203.0.113.1/24 dev tg-out
  ip -n "$S" addr add 203.0.113.10/24 dev eth0
  ip -n "$S" addr add 203.0.113.254/24 dev eth0
  for n in "$C" "$S"; do ip -n "$n" link set eth0 up; done
  ip -n "$A" link set tg-in up; ip -n "$A" link set tg-out up
  ip -n "$C" route add default via 198.18.0.1
  ip -n "$A" route add default via 203.0.113.254
  # offloads: the kernel's defaults everywhere (no ethtool): both appliances get the end
  # hosts' GSO super-frames, as they would from any Linux peer
  # what arrives at the server: iperf3's datagrams counted (and passed on to iperf3), the
  # many-flow load's counted and dropped before the server's conntrack and sockets
  nsx "$S" nft -f - <<'NFT'
table ip tgbsink {
  counter rx {}
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    udp dport 5201 counter name rx accept
    udp dport 7 counter name rx drop
  }
}
NFT
  ip netns exec "$S" iperf3 -s -p 5201 >/dev/null 2>&1 & PIDS+=($!)
  # the connections/s load's server (lab/examples/tcpcps): accepts and closes at once, 2 threads
  if [[ " ${METRICS[*]} " == *" cps"* ]]; then ip netns exec "$S" "$CPS" serve 0.0.0.0:80 2 & PIDS+=($!); fi
  sleep 0.5
  nsx "$A" ping -c1 -W1 198.18.0.11 >/dev/null 2>&1 || true
  nsx "$A" ping -c1 -W1 203.0.113.254 >/dev/null 2>&1 || true
  nsx "$C" ping -c1 -W1 198.18.0.1 >/dev/null 2>&1 || true
}

kernel_on() {
  nsx "$A" sysctl -qw net.ipv4.ip_forward=1
  nsx "$A" nft -f - <<'NFT'
table ip tgbench {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "tg-out" masquerade
  }
}
NFT
}
kernel_off() {
  nsx "$A" nft delete table ip tgbench
  nsx "$A" sysctl -qw net.ipv4.ip_forward=0
}

TGPID=
tollgate_on() {
  local cfg=${1:-$CONFIG}
  ip netns exec "$A" "$TG" run --config "$cfg" --workers "$WORKERS" --rx-ring "$RX_RING" ${BUSY_POLL_US:+--busy-poll-us "$BUSY_POLL_US"} >"$TMP/tollgate.log" 2>&1 & TGPID=$!
  PIDS+=($TGPID)
  # ready = every worker has its rings open and its tables built (the daemon says so)
  # (binaries older than the ready line print none: after 3 s
  # with the host table in place, go on)
  for i in $(seq 100); do
    grep -q 'ready: every worker runs' "$TMP/tollgate.log" && return 0
    kill -0 "$TGPID" 2>/dev/null || break
    if [ "$i" -ge 30 ] && nsx "$A" nft list table inet tollgate >/dev/null 2>&1; then
      echo "warning: $TG printed no ready line in 3 s; going on" >&2; return 0
    fi
    sleep 0.1
  done
  echo "tollgate did not start:" >&2; cat "$TMP/tollgate.log" >&2; return 1
}
tollgate_off() {
  kill -TERM "$TGPID" 2>/dev/null || true
  wait "$TGPID" 2>/dev/null || true
}

# datagrams the server's ingress counted since the last reset
arrived() { nsx "$S" nft list counter ip tgbsink rx | awk '{for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}'; }

# one measurement of metric $1 -> number on stdout (UDP from iperf3: "arrived received-by-iperf3")
measure() {
  case $1 in
    udp1|udpN)
      local par=1; [ "$1" = udpN ] && par=$FLOWS
      nsx "$S" nft reset counter ip tgbsink rx >/dev/null
      nsx "$C" iperf3 -c 203.0.113.10 -u -l 64 -b 0 -t "$SECS" -P "$par" -J 2>/dev/null >"$TMP/iperf.json" || true
      python3 - "$(arrived)" "$TMP/iperf.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[2]))["end"]["sum"]
    secs = d["seconds"]
    print(round(int(sys.argv[1]) / secs), round((d["packets"] - d["lost_packets"]) / secs))
except Exception:
    print(0, 0)
PY
      ;;
    udpM)
      nsx "$S" nft reset counter ip tgbsink rx >/dev/null
      local out
      # one socket per flow: the soft limit of open files is often 1024
      out=$( (ulimit -n $((MANY + 64)) && nsx "$C" "$FLOOD" 203.0.113.10:7 "$MANY" "$SECS" 64 "$FLOOD_THREADS") 2>"$TMP/flood.err") \
        || { echo "udpflood failed: $(cat "$TMP/flood.err")" >&2; echo 0; return; }
      python3 -c "import sys; print(round(int(sys.argv[1]) / float(sys.argv[2])))" "$(arrived)" "${out#* }"
      ;;
    tcp|tcpN|tcpR)
      local opts=()
      [ "$1" = tcpN ] && opts=(-P "$STREAMS")
      [ "$1" = tcpR ] && opts=(-R)
      nsx "$C" iperf3 -c 203.0.113.10 -t "$SECS" "${opts[@]}" -J 2>/dev/null | python3 -c '
import json, sys
try:
    print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9, 3))
except Exception:
    print(0)'
      ;;
    cps|cps1)
      local conc=$CONC threads=$CPS_THREADS out; [ "$1" = cps1 ] && conc=1 threads=1
      out=$(nsx "$C" "$CPS" connect 203.0.113.10:80 "$conc" "$SECS" "$threads" 2>"$TMP/cps.err") \
        || { echo "tcpcps failed: $(cat "$TMP/cps.err")" >&2; echo 0; return; }
      read -r ok secs failed <<<"$out"
      [ "$failed" = 0 ] || echo "  ($1: $(tr "\n" ";" <"$TMP/cps.err"))" >&2
      python3 -c "import sys; print(round(int(sys.argv[1]) / float(sys.argv[2])))" "$ok" "$secs"
      ;;
  esac
}

# median and spread of RUNS measurements: "median min max", and the same of a second value
# when the measurement gives one
series() {
  local vals=()
  for _ in $(seq "$RUNS"); do vals+=("$(measure "$1")"); done
  printf '%s\n' "${vals[@]}" | python3 -c '
import sys, statistics
rows = [[float(x) for x in l.split()] for l in sys.stdin if l.strip()]
out = []
for col in zip(*rows):
    out += [statistics.median(col), min(col), max(col)]
print(*out)'
}

# OVERHEAD=1: one measurement of $1 with observability off, then one with it on -> "off on"
SCRAPER=
measure_quiet() {
  tollgate_on "$TMP/quiet.toml" || { echo 0; return; }
  measure "$1" | awk '{print $1}'; tollgate_off
}
measure_observed() {
  tollgate_on "$CONFIG" || { echo 0; return; }
  if [ "${SCRAPE:-1}" = 1 ]; then
    ( while :; do nsx "$A" curl -s -m 2 -o /dev/null http://127.0.0.1:9090/metrics; sleep 1; done ) & SCRAPER=$!
  else
    ( while :; do sleep 1; done ) & SCRAPER=$!
  fi
  measure "$1" | awk '{print $1}'
  kill "$SCRAPER" 2>/dev/null; wait "$SCRAPER" 2>/dev/null || true
  tollgate_off
}
# run $2 of metric $1: "off on", the order swapped every other run (no order bias)
overhead_pair() {
  local off on
  if [ $(($2 % 2)) = 0 ]; then
    off=$(measure_quiet "$1"); on=$(measure_observed "$1")
  else
    on=$(measure_observed "$1"); off=$(measure_quiet "$1")
  fi
  echo "$off $on"
}
overhead_series() {
  local offs=() ons=() o n
  for i in $(seq "$RUNS"); do read -r o n <<<"$(overhead_pair "$1" "$i")"; offs+=("$o"); ons+=("$n"); done
  python3 - "${offs[*]}" "${ons[*]}" <<'PY'
import sys, statistics
off = [float(x) for x in sys.argv[1].split()]; on = [float(x) for x in sys.argv[2].split()]
print(statistics.median(off), min(off), max(off), statistics.median(on), min(on), max(on))
PY
}

read -r -a METRICS <<<"${ONLY:-udp1 udpN udpM tcp tcpN tcpR cps cps1}"
# the load generators the chosen metrics need, built from lab/examples/ when missing
need=()
[[ " ${METRICS[*]} " == *" udpM "* ]] && need+=("$FLOOD:udpflood")
[[ " ${METRICS[*]} " == *" cps"* ]] && need+=("$CPS:tcpcps")
for e in "${need[@]}"; do
  path=${e%:*}
  [ -x "$path" ] || cargo build --release -p tollgate-lab --example "${e#*:}" >&2 || true
  [ -x "$path" ] || { echo "missing $path (cargo build --release -p tollgate-lab --example ${e#*:})" >&2; exit 1; }
done
declare -A NAME=([udp1]="UDP 64 B, 1 flow (packets/s at the server)" [udpN]="UDP 64 B, $FLOWS flows (packets/s at the server)" [udpM]="UDP 64 B, $MANY flows, udpflood (packets/s at the server)" [tcp]="TCP, 1 stream (Gb/s)" [tcpN]="TCP, $STREAMS streams (Gb/s)" [tcpR]="TCP, 1 stream, server to client (Gb/s)" [cps]="new TCP connections/s, $CONC in flight ($CPS_THREADS client threads)" [cps1]="new TCP connections/s, 1 at a time")
declare -A K T

if [ "${OVERHEAD:-0}" = 1 ]; then
  [ -x "$TG" ] || { echo "no tollgate binary at $TG" >&2; exit 1; }
  grep -q '^\[appliance\]' "$CONFIG" || { echo "$CONFIG has no [appliance] table" >&2; exit 1; }
  sed 's/^\[appliance\]$/[appliance]\ndecision_log = false/' "$CONFIG" > "$TMP/quiet.toml"
  setup
  echo "tollgate observability off vs on, alternating ($RUNS pairs) ..." >&2
  declare -A O
  for m in "${METRICS[@]}"; do O[$m]=$(overhead_series "$m"); echo "  $m: ${O[$m]}" >&2; done
  echo
  echo "| metric ($RUNS runs x ${SECS}s, $(nproc) CPUs, workers=$WORKERS) | logs+scrapes off, median (min-max) | on, median (min-max) | on/off |"
  echo "|---|---|---|---|"
  for m in "${METRICS[@]}"; do
    read -r a amin amax b bmin bmax <<<"${O[$m]}"
    ratio=$(python3 -c "print('%.3f' % ($b / $a) if $a else 'n/a')")
    echo "| ${NAME[$m]} | $a ($amin-$amax) | $b ($bmin-$bmax) | $ratio |"
  done
  exit 0
fi

setup
echo "kernel: ip_forward=1 + nftables masquerade + conntrack ..." >&2
kernel_on
for m in "${METRICS[@]}"; do K[$m]=$(series "$m"); echo "  $m: ${K[$m]}" >&2; done
kernel_off
echo "tollgate: $TG run --config $CONFIG --workers $WORKERS ..." >&2
if [ -x "$TG" ] && tollgate_on; then
  for m in "${METRICS[@]}"; do T[$m]=$(series "$m"); echo "  $m: ${T[$m]}" >&2; done
  tollgate_off
  grep -E '^(drop\.|rx_packets|tx_packets|neighbour_|handoff|rx_ring_drops|tx_ring_full|tx_errors|rx_oversize|rx_gso|tx_gso|gso_segmented)' "$TMP/tollgate.log" >&2 || true
else
  for m in "${METRICS[@]}"; do T[$m]="0 0 0 0 0 0"; done
fi

echo
echo "| metric ($RUNS runs x ${SECS}s, $(nproc) CPUs, workers=$WORKERS, rx ring $RX_RING${BUSY_POLL_US:+, busy poll ${BUSY_POLL_US} µs}, default offloads) | kernel median (min-max) | Tollgate median (min-max) | Tollgate/kernel |"
echo "|---|---|---|---|"
for m in "${METRICS[@]}"; do
  read -r km kmin kmax k2 k2min k2max <<<"${K[$m]}"
  read -r tm tmin tmax t2 t2min t2max <<<"${T[$m]}"
  ratio=$(python3 -c "print('%.2f' % ($tm / $km) if $km else 'n/a')")
  echo "| ${NAME[$m]} | $km ($kmin-$kmax) | $tm ($tmin-$tmax) | $ratio |"
  if [ -n "${k2:-}" ]; then
    ratio=$(python3 -c "print('%.2f' % (${t2:-0} / $k2) if $k2 else 'n/a')")
    echo "| same, received by iperf3 | $k2 ($k2min-$k2max) | ${t2:-0} (${t2min:-0}-${t2max:-0}) | $ratio |"
  fi
done
