#!/usr/bin/env bash
# What a /metrics scrape costs the packet path at 1M flows (issue 18, defect 3).
#   client 198.18.0.11 -- tg-in 198.18.0.1 [appliance, 1 worker] tg-out 203.0.113.1 -- server
# 1. FLOWS UDP flows are opened through the appliance by a raw AF_PACKET sender in the client
#    namespace (256 inside sources 198.18.1.0/24 x source ports, to 256 destinations
#    198.51.100.0/24 port 7, routed to the server namespace, which drops them); the appliance
#    SNATs them to 20 public addresses 203.0.113.100-119, and its UDP timeout (300 s) keeps them.
# 2. A probe: ping 198.18.0.11 -> 203.0.113.10 through the appliance every 5 ms for SECS
#    seconds, first with nobody scraping, then with /metrics scraped every second. A scrape
#    that holds the worker shows as ping round trips as long as the stall (frames wait in the
#    ring), and as losses when the ring overflows.
# Prints per phase: ping round trip p50 / p99 / max (ms), lost pings, the scrapes' own time,
# and the appliance's tollgate_worker_query_seconds (the last answer's time on the worker).
#
# usage (root): benches/scrape.sh [path/to/tollgate]   env: FLOWS=1000000 SECS=20
# Only namespaces this script creates (prefix tgs<pid>-), only 198.18.0.0/15, 198.51.100.0/24
# and 203.0.113.0/24; everything is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

TG=${1:-target/release/tollgate}
FLOWS=${FLOWS:-1000000}
SECS=${SECS:-20}
P="tgs$$-"
C=${P}client; A=${P}app; S=${P}server
PIDS=()
TMP=$(mktemp -d)

[ "$(id -u)" = 0 ] || { echo "benches/scrape.sh needs root (network namespaces)" >&2; exit 1; }
for t in ip nft ping curl python3; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 1; }; done

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for n in "$C" "$A" "$S"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

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
# the SNAT addresses are the appliance host's (the kernel answers ARP for them)
for i in $(seq 100 119); do ip -n "$A" addr add "203.0.113.$i/24" dev tg-out; done
# the flood ends at the server's ingress, counted
nsx "$S" nft -f - <<'NFT'
table ip tgssink {
  counter rx {}
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    udp dport 7 counter name rx drop
  }
}
NFT

addrs=$(for i in $(seq 100 119); do printf '"203.0.113.%d/24", ' "$i"; done)
snat=$(for i in $(seq 100 119); do printf '"203.0.113.%d", ' "$i"; done)
cat > "$TMP/tollgate.toml" <<EOF
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"
workers = 1
management = "127.0.0.1:9090"

[[interface]]
name = "tg-in"
role = "inside"
addresses = ["198.18.0.1/24"]

[[interface]]
name = "tg-out"
role = "outside"
addresses = ["203.0.113.1/24", ${addrs%, }]
gateway = "203.0.113.254"

[[route]]
prefix = "198.18.1.0/24"
via = "198.18.0.11"
interface = "tg-in"

[snat]
addresses = [${snat%, }]
ports = "1024-65535"

[conntrack]
max_flows = 1100000
[conntrack.timeouts]
udp = 300

[[group]]
name = "bench"
priority = 100
  [[group.collection]]
  name = "out"
  priority = 100
  kind = "network"
  action = "allow"
    [[group.collection.rule]]
    name = "any"
    sources = ["198.18.0.0/15"]
    destinations = ["*"]
    protocols = ["any"]
    destination_ports = ["*"]
EOF

ip netns exec "$A" "$TG" run --config "$TMP/tollgate.toml" >"$TMP/tollgate.log" 2>&1 & PIDS+=($!)
for i in $(seq 100); do
  grep -q 'ready: every worker runs' "$TMP/tollgate.log" && break
  [ "$i" = 100 ] && { echo "tollgate did not start:" >&2; cat "$TMP/tollgate.log" >&2; exit 1; }
  sleep 0.1
done
nsx "$C" ping -c1 -W1 203.0.113.10 >/dev/null || { echo "no path through the appliance" >&2; cat "$TMP/tollgate.log" >&2; exit 1; }

metric() { # name (first sample's value)
  nsx "$A" curl -s http://127.0.0.1:9090/metrics | awk -v m="$1" '($1 == m || index($1, m "{") == 1) && !done { print $2; done = 1 }'
}

# 1. the flows: raw frames, the IPv4 checksum computed per frame, UDP checksum 0
mac_in=$(nsx "$A" cat /sys/class/net/tg-in/address)
start=$(date +%s.%N)
nsx "$C" python3 - "$FLOWS" "$mac_in" <<'PY'
import socket, struct, sys
n, mac = int(sys.argv[1]), bytes.fromhex(sys.argv[2].replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
src_mac = open("/sys/class/net/eth0/address").read().strip()
eth = mac + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
f = bytearray(eth + bytes(20 + 8 + 18))
# version/IHL, length 46, TTL 64, UDP
struct.pack_into("!BBHHHBBH", f, 14, 0x45, 0, 46, 0, 0, 64, 17, 0)
base = 0x4500 + 46 + (64 << 8 | 17)
sent = 0
for i in range(n):
    src = 0xC6120100 | (i & 255)            # 198.18.1.x
    dst = 0xC6336400 | ((i >> 8) & 255)     # 198.51.100.y
    sport = 1024 + (i >> 8) % 64000         # (source, port) unique: one endpoint per flow
    c = base + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    c = (c & 0xFFFF) + (c >> 16); c = (c & 0xFFFF) + (c >> 16)
    struct.pack_into("!HII", f, 24, 0xFFFF - c, src, dst)
    struct.pack_into("!HHHH", f, 34, sport, 7, 26, 0)
    while True:
        try:
            s.send(f); break
        except BlockingIOError:
            pass
    sent += 1
print(f"sent {sent} frames", file=sys.stderr)
PY
sleep 2
end=$(date +%s.%N)
flows=$(metric tollgate_flows)
echo "flows in the table: ${flows:-?} (opened in $(python3 -c "print(round($end-$start,1))") s)"

probe() { # label scrape(0|1)
  local label=$1 scrape=$2 spid=
  if [ "$scrape" = 1 ]; then
    ( while :; do nsx "$A" curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1:9090/metrics >>"$TMP/scrapes"; sleep 1; done ) & spid=$!
    PIDS+=($spid)
  fi
  nsx "$C" ping -n -i 0.005 -w "$SECS" -W 1 203.0.113.10 >"$TMP/ping" 2>&1 || true
  [ -n "$spid" ] && { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; }
  python3 - "$label" "$TMP/ping" "$TMP/scrapes" <<'PY'
import re, sys, os
label, ping, scr = sys.argv[1:4]
txt = open(ping).read()
rtt = sorted(float(x) for x in re.findall(r"time=([\d.]+)", txt))
m = re.search(r"(\d+) packets transmitted, (\d+) received", txt)
tx, rx = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
q = lambda p: rtt[min(len(rtt) - 1, int(p * len(rtt)))] if rtt else float("nan")
line = f"{label:<12} pings {tx} lost {tx - rx}  rtt ms p50 {q(.5):.3f} p99 {q(.99):.3f} max {rtt[-1] if rtt else float('nan'):.3f}"
if label.endswith("scraped") and os.path.exists(scr):
    t = sorted(float(x) * 1000 for x in open(scr).read().split())
    if t:
        line += f"  scrape ms median {t[len(t)//2]:.1f} max {t[-1]:.1f} ({len(t)} scrapes)"
print(line)
PY
}
probe "idle" 0
probe "scraped" 1
q=$(metric tollgate_worker_query_seconds)
[ -n "$q" ] && echo "tollgate_worker_query_seconds (last scrape's time on the worker): $q"
echo "flows at the end: $(metric tollgate_flows)"
