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
#   BACKEND=af_packet|af_xdp|auto: passed as --backend to `tollgate run` (empty: its default)
#   LAYOUT=onecpu: instead of the rows above, the appliance alone on CPU 1 (1 worker, pinned;
#   its veths' receive processing there too: NAPI="rps threaded", both by default), the
#   generator lab/examples/pktblast (64-byte frames) and the sink on CPU 0; a rate sweep per
#   system and flow count: no-loss rate, 1.5x, 2x, flat out (docs/benchmarks.md, issue 22)
#   env: FLOWS_LIST="1 1000 50000" RUNS PSECS=2 STEP=100000 RES=25000 LOSS=0.995
#   SYSTEMS="kernel tollgate" SINK=nft|xdp PRIO=-20 QUIET_WAIT=900 FOREIGN_MAX=3 DIAG=1 BLAST=path
# Only namespaces this script creates (prefix tgb<pid>-), only 198.18.0.0/15 and 203.0.113.0/24;
# LAYOUT=onecpu changes the CPU affinity and nice level of the NAPI threads of its own veths and,
# with PRIO, the nice level of ksoftirqd/0-1 (restored on exit);
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
BACKEND=${BACKEND:-}            # empty: the appliance's default; else passed as --backend
TG_PIN=()
P="tgb$$-"
C=${P}client; A=${P}app; S=${P}server
PIDS=()
TMP=$(mktemp -d)

[ "$(id -u)" = 0 ] || { echo "benches/throughput.sh needs root (network namespaces)" >&2; exit 1; }
for t in ip nft iperf3 python3; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 1; }; done

RESTORE_NICE=()
cleanup() {
  for pid in "${RESTORE_NICE[@]}"; do renice -n 0 -p "$pid" >/dev/null 2>&1 || true; done
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
  # TG_PIN (LAYOUT=onecpu): taskset -c 1, which every thread inherits
  ${TG_PIN[@]+"${TG_PIN[@]}"} ip netns exec "$A" "$TG" run --config "$cfg" --workers "$WORKERS" --rx-ring "$RX_RING" ${BUSY_POLL_US:+--busy-poll-us "$BUSY_POLL_US"} ${BACKEND:+--backend "$BACKEND"} >"$TMP/tollgate.log" 2>&1 & TGPID=$!
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

# ---------------------------------------------------------------------------------------------
# LAYOUT=onecpu: what the appliance costs, not how fast a sender gets going. The appliance alone
# on CPU 1 (tollgate --workers 1 and all its threads pinned there, or the kernel's forwarding),
# with the receive processing of its two veths on CPU 1 too; the load generator
# (lab/examples/pktblast: raw AF_PACKET sendmmsg of prebuilt 60-byte frames, 64 on a wire) and
# the sink (an XDP program dropping IPv4 on the server's veth, its NAPI thread pinned to CPU 0)
# on CPU 0. A rate sweep per system and flow count: the no-loss rate (the highest offered rate
# delivered to >= LOSS of what was offered), then 1.5x and 2x of it and flat out.
if [ "${LAYOUT:-colocated}" = onecpu ]; then
  METRICS=()
  WORKERS=1
  BLAST=${BLAST:-${CARGO_TARGET_DIR:-target}/release/examples/pktblast}
  NAPI_MODES=${NAPI:-rps threaded}   # rps: RPS of the appliance's veths to CPU 1; threaded: their NAPI threads on CPU 1
  FLOWS_LIST=${FLOWS_LIST:-1 1000 50000}
  PSECS=${PSECS:-2}                  # seconds per point
  LOSS=${LOSS:-0.995}                # no loss = delivered >= LOSS x offered
  STEP=${STEP:-100000}               # the coarse grid's step (packets/s)
  RES=${RES:-12500}                  # the bisection stops this close
  SYSTEMS=${SYSTEMS:-kernel tollgate}
  XDP_SRC=benches/xdp/count_drop.bpf.c
  TG_PIN=(taskset -c 1)
  # PRIO=-20 (on a machine others use): the appliance, the generator, the veths' NAPI threads
  # and ksoftirqd at that nice level (back to 0 at the end), so other processes get the little
  # CPU that weight leaves them; every point logs how much they took
  PRIO=${PRIO:-}
  BL_NICE=()
  if [ -n "$PRIO" ]; then
    TG_PIN+=(nice -n "$PRIO"); BL_NICE=(nice -n "$PRIO")
    for p in $(pgrep -x 'ksoftirqd/[01]'); do renice -n "$PRIO" -p "$p" >/dev/null; RESTORE_NICE+=("$p"); done
  fi
  if [ "${SINK:-nft}" = xdp ]; then command -v clang >/dev/null || { echo "missing: clang (SINK=xdp compiles $XDP_SRC)" >&2; exit 1; }; fi
  for t in ethtool taskset curl; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 1; }; done
  [ "$(nproc)" -ge 2 ] || { echo "LAYOUT=onecpu needs 2 CPUs" >&2; exit 1; }
  if [ ! -x "$BLAST" ]; then nice -n 19 cargo build --release -p tollgate-lab --example pktblast >&2 || true; fi
  [ -x "$BLAST" ] || { echo "missing $BLAST (cargo build --release -p tollgate-lab --example pktblast)" >&2; exit 1; }
  [[ " $SYSTEMS " != *" tollgate "* ]] || [ -x "$TG" ] || { echo "no tollgate binary at $TG" >&2; exit 1; }
  if [ "${SINK:-nft}" = xdp ]; then clang -O2 -target bpf -c "$XDP_SRC" -o "$TMP/count_drop.o"; fi

  setup
  GWMAC=$(nsx "$A" cat /sys/class/net/tg-in/address)
  # flows beyond 64,512 come from further client addresses (pktblast: SRC + flow / 64512)
  maxf=0; for f in $FLOWS_LIST; do if [ "$f" -gt "$maxf" ]; then maxf=$f; fi; done
  for k in $(seq 1 $(((maxf - 1) / 64512))); do ip -n "$C" addr add "198.18.0.$((11 + k))/24" dev eth0; done

  napi_threads() { ps -eo pid=,comm= | awk '$2 ~ /^napi\// {print $1}' | sort; }
  declare -A KT=()   # napi thread pid -> "ns:dev"
  # threaded NAPI on $2 in namespace $1, its new napi/ threads pinned to CPU $3
  threaded_on() {
    local before after p
    before=$(napi_threads)
    nsx "$1" sh -c "echo 1 > /sys/class/net/$2/threaded"
    sleep 0.2
    after=$(napi_threads)
    for p in $(comm -13 <(echo "$before") <(echo "$after")); do
      taskset -p -c "$3" "$p" >/dev/null; KT[$p]="$2@cpu$3"
      if [ -n "$PRIO" ]; then renice -n "$PRIO" -p "$p" >/dev/null; fi
    done
  }
  threaded_off() {
    local p
    # (writing to a veth without NAPI fails: nothing to turn off)
    nsx "$1" sh -c "echo 0 > /sys/class/net/$2/threaded" 2>/dev/null || true
    for p in "${!KT[@]}"; do if [[ ${KT[$p]} == "$2@"* ]]; then unset "KT[$p]"; fi; done
  }
  # the sink, on CPU 0. SINK=xdp: an XDP program on the server's veth (which gives it NAPI)
  # drops IPv4, its NAPI thread pinned to CPU 0 and real-time (SCHED_FIFO 50: it runs the moment
  # frames arrive, ahead of the generator it shares CPU 0 with; its veth ring holds 256); veth
  # counts the drops. SINK=nft (the default): RPS of the server's veth to CPU 0 and an nftables
  # netdev ingress drop there (before IP), counted by an nftables counter. Measured here, the XDP sink costs
  # CPU 0 about 2 µs a frame (veth copies every skb that arrives with less than XDP's 256 bytes
  # of headroom, which is all of them, into a new page), so the generator sharing CPU 0 could
  # offer no more than ~290k/s; the nft sink leaves it most of CPU 0.
  SINK=${SINK:-nft}
  if [ "$SINK" = xdp ]; then
    ip -n "$S" link set dev eth0 xdpdrv obj "$TMP/count_drop.o" sec xdp
    threaded_on "$S" eth0 0
    if [ "${SINK_FIFO:-1}" = 1 ]; then for p in "${!KT[@]}"; do chrt -f -p 50 "$p"; done; fi
    sink() { nsx "$S" ethtool -S eth0 | awk '/rx_queue_[0-9]+_xdp_drops:/ {s += $2} END {print s + 0}'; }
  else
    nsx "$S" sh -c "echo 1 > /sys/class/net/eth0/queues/rx-0/rps_cpus"
    nsx "$S" nft -f - <<'NFT'
table netdev tgbsink0 {
  counter rx {}
  chain in {
    type filter hook ingress device "eth0" priority -500; policy accept;
    meta protocol ip counter name rx drop
  }
}
NFT
    sink() { nsx "$S" nft list counter netdev tgbsink0 rx | awk '{for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}'; }
  fi

  layout() {
    local d
    for d in tg-in tg-out; do
      if [ "$1" = rps ]; then
        threaded_off "$A" "$d"
        nsx "$A" ethtool -K "$d" gro off
        if [ "$d" = tg-in ]; then nsx "$C" ethtool -K eth0 tso on; else nsx "$S" ethtool -K eth0 tso on; fi
        nsx "$A" sh -c "echo 2 > /sys/class/net/$d/queues/rx-0/rps_cpus"
      else
        nsx "$A" sh -c "echo 0 > /sys/class/net/$d/queues/rx-0/rps_cpus"
        nsx "$A" ethtool -K "$d" gro on   # veth runs NAPI when GRO is on
        # ... but takes a frame from a peer with TSO on (the default) through NAPI only when it
        # comes from a socket and the receiver forwards UDP GRO (veth_skb_is_eligible_for_gro);
        # otherwise it goes to netif_rx, the backlog of the sender's CPU (CPU 0 here). TSO off on
        # the peers (the generator sends no TSO frames anyway) puts every frame on NAPI.
        if [ "$d" = tg-in ]; then nsx "$C" ethtool -K eth0 tso off; else nsx "$S" ethtool -K eth0 tso off; fi
        threaded_on "$A" "$d" 1
      fi
    done
  }

  # CPU use between two snapshots: per CPU busy % (usr/sys/softirq), per thread of interest
  cpu_snap() {
    { grep '^cpu[0-9]' /proc/stat
      local p
      for p in ${TGPID:+$TGPID} "${!KT[@]}"; do
        if [ -r "/proc/$p/stat" ]; then awk -v p="$p" '{print "pid", p, $14 + $15}' "/proc/$p/stat"; fi
      done; } >"$1"
  }
  cpu_diff() {
    python3 - "$1" "$2" "${TGPID:-0}" "$(for p in "${!KT[@]}"; do echo -n "$p=${KT[$p]} "; done)" <<'PY'
import sys, os
def load(f):
    cpus, pids = {}, {}
    for l in open(f):
        w = l.split()
        if w[0] == "pid": pids[w[1]] = int(w[2])
        else: cpus[w[0]] = [int(x) for x in w[1:]]
    return cpus, pids
(c0, p0), (c1, p1) = load(sys.argv[1]), load(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")
out = []
for cpu in sorted(c1):
    d = [b - a for a, b in zip(c0[cpu], c1[cpu])]
    tot = sum(d[:8]) or 1
    usr, sys_, idle, iow, irq, si = d[0] + d[1], d[2], d[3], d[4], d[5], d[6]
    out.append("%s busy %d%% (usr %d sys %d irq+si %d)" % (cpu, round(100 * (tot - idle - iow) / tot),
               round(100 * usr / tot), round(100 * sys_ / tot), round(100 * (irq + si) / tot)))
names = dict(kv.split("=") for kv in sys.argv[4].split())
names[sys.argv[3]] = "tollgate"
span = sum(b - a for a, b in zip(c0["cpu0"], c1["cpu0"])) or 1   # one CPU's ticks
for p, t in p1.items():
    if p in p0 and p in names:
        out.append("%s %d%%" % (names[p], round(100 * (t - p0[p]) / span)))
print("; ".join(out))
PY
  }

  # CPU time of user processes other than this benchmark's (a build, a test of someone else):
  # a point they took CPU from is measured again. Snapshot: pid starttime ticks per process
  # that is not a kernel thread, not tollgate and not pktblast.
  foreign_snap() {
    python3 - "${TGPID:-0}" >"$1" <<'PY'
import os, sys
skip = {sys.argv[1], str(os.getpid())}
for p in os.listdir("/proc"):
    if not p.isdigit() or p in skip: continue
    try:
        st = open("/proc/%s/stat" % p).read()
    except OSError: continue
    comm = st[st.index("(") + 1:st.rindex(")")]
    w = st[st.rindex(")") + 2:].split()
    if w[1] == "2" or p == "2" or comm.startswith("pktblast"): continue   # kernel threads, the generator
    print(p, w[19], int(w[11]) + int(w[12]))
PY
  }
  # foreign CPU between two snapshots, in % of one CPU over $3 seconds
  foreign_pct() {
    python3 - "$1" "$2" "$3" <<'PY'
import os, sys
def load(f):
    return {(l.split()[0], l.split()[1]): int(l.split()[2]) for l in open(f) if l.strip()}
a, b = load(sys.argv[1]), load(sys.argv[2])
t = sum(v - a.get(k, 0) for k, v in b.items())   # new processes: all their time
print(round(100 * t / os.sysconf("SC_CLK_TCK") / float(sys.argv[3])))
PY
  }
  # wait (up to QUIET_WAIT s) until nobody else uses more than 5% of the machine for 1 s
  quiet() {
    local i f
    for i in $(seq "${QUIET_WAIT:-900}"); do
      foreign_snap "$TMP/q0"; sleep 1; foreign_snap "$TMP/q1"
      f=$(foreign_pct "$TMP/q0" "$TMP/q1" 1)
      [ "$f" -gt 5 ] || return 0
      [ $((i % 30)) = 1 ] && echo "      (waiting for a quiet machine: others use ${f}% of a CPU)" >&2
    done
    echo "      (machine still busy after ${QUIET_WAIT:-900} s: measuring anyway)" >&2
  }
  # one point: $1 flows at $2 packets/s (0: flat out) -> "offered delivered" per second;
  # measured again (up to 5 times) when other processes took more than 3% of a CPU meanwhile
  point() {
    local d0 d1 out f try
    for try in 1 2 3 4 5; do
    d0=$(sink); foreign_snap "$TMP/f0"; cpu_snap "$TMP/c0"
    out=$(${BL_NICE[@]+"${BL_NICE[@]}"} taskset -c 0 ip netns exec "$C" "$BLAST" eth0 "$GWMAC" 198.18.0.11 203.0.113.10:7 "$1" "$PSECS" "$2" 64 0 2>>"$TMP/blast.err") \
      || { echo "pktblast failed: $(tail -2 "$TMP/blast.err")" >&2; echo "0 0"; return; }
    cpu_snap "$TMP/c1"; foreign_snap "$TMP/f1"
    f=$(foreign_pct "$TMP/f0" "$TMP/f1" "$PSECS")
    echo "$f" >"$TMP/foreign.last"
    [ "$f" -gt "${FOREIGN_MAX:-3}" ] || break
    echo "      (other processes took ${f}% of a CPU during this point: again)" >&2
    sleep 0.3; d1=$(sink); quiet
    done
    sleep 0.3   # what the appliance still holds reaches the sink
    d1=$(sink)
    cpu_diff "$TMP/c0" "$TMP/c1" >"$TMP/cpu.last"
    if [ "${DIAG:-0}" = 1 ]; then
      { echo "      diag: tg-out $(nsx "$A" ip -s link show tg-out | tr -s ' \n' ' ')"
        echo "      diag: tg-out ethtool $(nsx "$A" ethtool -S tg-out | tr -s ' \n' ' ')"
        echo "      diag: server eth0 $(nsx "$S" ethtool -S eth0 | grep -v ': 0$' | tr -s ' \n' ' ')"
        echo "      diag: napi $(ps -eo pid,stat,psr,comm | grep napi/ | tr -s ' \n' ' ')"
        if [ "$(sink)" = "$d0" ]; then
          echo "      diag: nothing arrived; the kernel's own pings through tg-out:"
          nsx "$A" ping -c 3 -i 0.2 -W 1 203.0.113.10 | tail -2 || true
          echo "      diag: tg-out after $(nsx "$A" ip -s link show tg-out | tr -s ' \n' ' ' | sed 's/.*TX:/TX:/')"
          echo "      diag: server eth0 after the pings: $(nsx "$S" ethtool -S eth0 | grep -E 'xdp_packets|xdp_drops' | tr -s ' \n' ' ')"
          echo "      diag: server eth0 threaded 0 then 1 again"
          threaded_off "$S" eth0; threaded_on "$S" eth0 0
          nsx "$A" ping -c 3 -i 0.2 -W 1 203.0.113.10 | tail -2 || true
          echo "      diag: server eth0 after: $(nsx "$S" ethtool -S eth0 | grep -E 'xdp_packets|xdp_drops' | tr -s ' \n' ' ')"
        fi; } >&2
    fi
    # offered: at a rate, what pktblast put on the appliance's veth, sent + refused (a veth
    # refuses a frame at once when the appliance's receive ring is full, the drop a NIC's ring
    # makes); flat out, what the veth took (refusals there are retries as fast as they fail)
    python3 -c 'import sys; s, t, x, a, b, r = sys.argv[1:]; print(round((int(s) + (int(x) if int(r) else 0)) / float(t)), round((int(b) - int(a)) / float(t)))' $out "$d0" "$d1" "$2"
  }
  # RUNS points -> median offered, median delivered
  mpoint() {
    local vals=() i
    for i in $(seq "$RUNS"); do vals+=("$(point "$1" "$2")"); done
    printf '%s\n' "${vals[@]}" | python3 -c '
import sys, statistics
rows = [[float(x) for x in l.split()] for l in sys.stdin if l.strip()]
print(*(round(statistics.median(c)) for c in zip(*rows)))'
  }
  passes() { python3 -c 'import sys; o, d, r, loss = map(float, sys.argv[1:]); sys.exit(0 if o >= 0.97 * r and d >= loss * o else 1)' "$@" "$LOSS"; }
  lossy() { python3 -c 'import sys; o, d, loss = map(float, sys.argv[1:]); sys.exit(0 if d < loss * o else 1)' "$@" "$LOSS"; }
  genlimited() { python3 -c 'import sys; o, r = map(float, sys.argv[1:]); sys.exit(0 if o < 0.97 * r else 1)' "$@"; }

  # Tollgate's own counters (/metrics) of the interfaces, summed: "name=value ..."
  tg_counters() {
    nsx "$A" curl -s -m 2 http://127.0.0.1:9090/metrics 2>/dev/null | awk '
      /^tollgate_io_(rx_ring_drops|tx_ring_full|tx_errors|rx_oversize)_total/ {
        n = $1; sub(/\{.*/, "", n); sub(/^tollgate_io_/, "", n); sub(/_total$/, "", n); s[n] += $NF }
      END { for (n in s) printf "%s=%d ", n, s[n] }'
  }
  # the kernel's drops on the way in: CPU 1's backlog (RPS), tg-in's receive drops, refused sends
  k_counters() {
    local bl rxd
    bl=$(awk 'NR == 2 {print $2}' /proc/net/softnet_stat); bl=$((16#$bl))
    rxd=$(nsx "$A" cat /sys/class/net/tg-in/statistics/rx_dropped)
    echo "cpu1_backlog_drops=$bl tg-in_rx_dropped=$rxd"
  }
  counters_delta() {
    python3 - "$1" "$2" <<'PY'
import sys
a = dict(kv.split("=") for kv in sys.argv[1].split())
b = dict(kv.split("=") for kv in sys.argv[2].split())
print(" ".join("%s %d" % (k, int(b[k]) - int(a.get(k, 0))) for k in sorted(b)))
PY
  }

  declare -A R=()   # "$mode/$flows/$sys/$what" -> "offered delivered" (what: noloss 1.5x 2x flat), or the no-loss rate, or counters
  sweep() {   # $1 mode $2 flows $3 system
    local key="$1/$2/$3" lo=0 hi=0 r=$STEP o d mid gl=0 c0 c1 t
    quiet; point "$2" 100000 >/dev/null   # warm-up: every flow set up (50,000 flows at 100k/s: 1 s)
    while :; do
      read -r o d <<<"$(mpoint "$2" "$r")"
      echo "    $3 $2 flows: offered $o (asked $r) delivered $d   [$(cat "$TMP/cpu.last"); others $(cat "$TMP/foreign.last")%]" >&2
      if passes "$o" "$d" "$r"; then R[$key/at$r]="$o $d"; lo=$r; r=$((r + STEP))
      elif ! lossy "$o" "$d" && genlimited "$o" "$r"; then gl=1; break   # no loss, the generator's most
      else hi=$r; break; fi
    done
    while [ "$hi" -gt 0 ] && [ $((hi - lo)) -gt "$RES" ]; do
      mid=$(((lo + hi) / 2))
      read -r o d <<<"$(mpoint "$2" "$mid")"
      echo "    $3 $2 flows: offered $o (asked $mid) delivered $d   [$(cat "$TMP/cpu.last"); others $(cat "$TMP/foreign.last")%]" >&2
      if passes "$o" "$d" "$mid"; then R[$key/at$mid]="$o $d"; lo=$mid; else hi=$mid; fi
    done
    R[$key/rate]=$lo; R[$key/genlimited]=$gl
    R[$key/noloss]=${R[$key/at$lo]:-0 0}
    for t in 1.5x 2x flat; do
      case $t in 1.5x) r=$((lo * 3 / 2));; 2x) r=$((lo * 2));; flat) r=0;; esac
      [ "$lo" = 0 ] && [ "$t" != flat ] && { R[$key/$t]="0 0"; continue; }
      if [ "$3" = tollgate ]; then c0=$(tg_counters); else c0=$(k_counters); fi
      read -r o d <<<"$(mpoint "$2" "$r")"
      R[$key/$t]="$o $d"; R[$key/cpu$t]=$(cat "$TMP/cpu.last")
      echo "    $3 $2 flows, $t: offered $o (asked $r) delivered $d   [$(cat "$TMP/cpu.last"); others $(cat "$TMP/foreign.last")%]" >&2
      if [ "$3" = tollgate ]; then sleep 1.2; c1=$(tg_counters); else c1=$(k_counters); fi
      R[$key/drops$t]=$(counters_delta "$c0" "$c1")
      echo "      drops counted over the $RUNS run(s): ${R[$key/drops$t]}" >&2
    done
  }

  echo "LAYOUT=onecpu: appliance on CPU 1, pktblast + $SINK sink on CPU 0; flows $FLOWS_LIST; $PSECS s per point, RUNS=$RUNS; no loss = delivered >= $LOSS x offered" >&2
  pct() { python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("%d%%" % round(100 * a / b) if b else "n/a")' "$@"; }
  ratio() { python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("%.2f" % (a / b) if b else "n/a")' "$@"; }
  echo "Layout onecpu: appliance on CPU 1 (${BACKEND:+backend $BACKEND, }1 worker), pktblast + $SINK sink on CPU 0; 60-byte frames (64 on a wire); $PSECS s per point, median of $RUNS; no loss = delivered >= $LOSS x offered; packets/s, offered -> delivered"
  report_mode() {
    local mode=$1 f sys k cells t o d d2 gl kr tr kf tf t2
    echo
    echo "| veth receive on CPU 1 via | flows | system | no-loss rate | at 1.5x | at 2x | flat out | 2x delivered / no-loss rate |"
    echo "|---|---|---|---|---|---|---|---|"
    for f in $FLOWS_LIST; do
      for sys in $SYSTEMS; do
        k="$mode/$f/$sys"; cells=()
        for t in noloss 1.5x 2x flat; do read -r o d <<<"${R[$k/$t]}"; cells+=("$o -> $d"); done
        read -r _ d2 <<<"${R[$k/2x]}"
        gl=""; [ "${R[$k/genlimited]}" = 1 ] && gl=" (generator-limited)"
        echo "| $mode | $f | $sys | ${R[$k/rate]}$gl (${cells[0]}) | ${cells[1]} | ${cells[2]} | ${cells[3]} | $(pct "$d2" "${R[$k/rate]}") |"
      done
    done
    if [[ " $SYSTEMS " == *" kernel "* && " $SYSTEMS " == *" tollgate "* ]]; then
      echo
      echo "| $mode: flows | no-loss kernel | no-loss Tollgate | Tollgate/kernel | flat out delivered, kernel | Tollgate | Tollgate/kernel | Tollgate 2x delivered / its no-loss (target >= 90%) |"
      echo "|---|---|---|---|---|---|---|---|"
      for f in $FLOWS_LIST; do
        kr=${R[$mode/$f/kernel/rate]}; tr=${R[$mode/$f/tollgate/rate]}
        read -r _ kf <<<"${R[$mode/$f/kernel/flat]}"; read -r _ tf <<<"${R[$mode/$f/tollgate/flat]}"
        read -r _ t2 <<<"${R[$mode/$f/tollgate/2x]}"
        echo "| $f | $kr | $tr | $(ratio "$tr" "$kr") | $kf | $tf | $(ratio "$tf" "$kf") | $(pct "$t2" "$tr") |"
      done
    fi
    echo
    echo "CPU use and drops counted at the overload points ($mode):"
    for f in $FLOWS_LIST; do
      for sys in $SYSTEMS; do
        for t in 2x flat; do
          echo "- $sys, $f flows, $t: ${R[$mode/$f/$sys/cpu$t]:-}; drops: ${R[$mode/$f/$sys/drops$t]:-}"
        done
      done
    done
  }
  for mode in $NAPI_MODES; do
    layout "$mode"
    echo "== $mode: $(for d in tg-in tg-out; do echo -n "$d rps_cpus=$(nsx "$A" cat /sys/class/net/$d/queues/rx-0/rps_cpus) threaded=$(nsx "$A" cat /sys/class/net/$d/threaded) "; done); napi threads: $(for p in "${!KT[@]}"; do echo -n "$p ${KT[$p]} "; done)" >&2
    for f in $FLOWS_LIST; do
      for sys in $SYSTEMS; do
        if [ "$sys" = kernel ]; then
          conntrack -F >/dev/null 2>&1 || true
          kernel_on; sweep "$mode" "$f" kernel; kernel_off
        else
          tollgate_on || exit 1
          taskset -a -p -c 1 "$TGPID" >/dev/null
          sweep "$mode" "$f" tollgate
          tollgate_off; TGPID=
        fi
      done
    done
    report_mode "$mode"
  done

  grep -h 'pktblast:' "$TMP/blast.err" | grep -v ' 0 refused' | tail -3 >&2 || true
  exit 0
fi


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
