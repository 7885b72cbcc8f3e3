#!/usr/bin/env bash
# Soak: the daemon under mixed traffic for DURATION seconds (default 1,800), then checks that
# it holds nothing and leaks nothing (issue 18). Not part of CI.
#   client 198.18.0.11 -- tg-in 198.18.0.1 [appliance, 2 workers] tg-out 203.0.113.1 -- server
# Traffic, all through the appliance, from the client namespace:
#   - new TCP connections to 203.0.113.10:80 (HTTP GET, answer, close) at TCP_RATE/s,
#   - new UDP flows (a new source port each) to 203.0.113.10:7 (echo) at UDP_RATE/s,
#   - every BURST_EVERY s, BURST UDP flows at once: with a 1,024-port SNAT pool this drives it
#     near exhaustion; the flows expire after 20 s and the pool comes back,
#   - denied traffic (UDP to port 9) every 100 ms and a ping every 200 ms.
# Meanwhile: a reload (SIGHUP) every 10 s, alternating two configurations that rename rules and
# move the deny from an explicit rule to the default; /metrics scraped every second.
# After the traffic stops, the timeouts (at most 60 s here) are waited out and the script
# reports: resident memory after warm-up and at the end, flows and SNAT ports left (must be 0),
# created - removed = tracked, drop reasons other than the expected ones (must not grow), the
# reloads applied, the highest SNAT pool use reached, and the clients' success counts.
# Exit status 0 when every check passes.
#
# usage (root): benches/soak.sh [path/to/tollgate]
#   env: DURATION=1800 TCP_RATE=20 UDP_RATE=10 BURST=850 BURST_EVERY=120 OUT=file.md
# Only namespaces this script creates (prefix tgk<pid>-), only 198.18.0.0/15 and
# 203.0.113.0/24; everything is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

TG=${1:-target/release/tollgate}
DURATION=${DURATION:-1800}
TCP_RATE=${TCP_RATE:-20}
UDP_RATE=${UDP_RATE:-10}
BURST=${BURST:-850}
BURST_EVERY=${BURST_EVERY:-120}
QUIET=75   # > the longest timeout below (tcp_established 60)
P="tgk$$-"
C=${P}client; A=${P}app; S=${P}server
PIDS=()
TMP=$(mktemp -d)

[ "$(id -u)" = 0 ] || { echo "benches/soak.sh needs root (network namespaces)" >&2; exit 1; }
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
# the client's own ports stay clear of nothing in particular; the appliance's SNAT pool is
# 20000-21023 and its host never connects out here

# servers: HTTP on :80 (answer and close), UDP echo on :7
cat > "$TMP/servers.py" <<'PY'
import socket, socketserver, threading
class H(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            self.request.settimeout(5)
            self.request.recv(1024)
            self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
srv = socketserver.ThreadingTCPServer(("203.0.113.10", 80), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("203.0.113.10", 7))
while True:
    d, a = u.recvfrom(2048)
    u.sendto(d, a)
PY
ip netns exec "$S" python3 "$TMP/servers.py" & PIDS+=($!)

config() { # variant a|b
  local web=web udp=echo deny='
  [[group.collection]]
  name = "blocked"
  priority = 100
  kind = "network"
  action = "deny"
    [[group.collection.rule]]
    name = "discard"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.10"]
    protocols = ["udp"]
    destination_ports = ["9"]'
  if [ "$1" = b ]; then web=web-b; udp=echo-b; deny=; fi
  cat <<EOF
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"
workers = 2
management = "127.0.0.1:9090"

[[interface]]
name = "tg-in"
role = "inside"
addresses = ["198.18.0.1/24"]

[[interface]]
name = "tg-out"
role = "outside"
addresses = ["203.0.113.1/24"]
gateway = "203.0.113.254"

[snat]
addresses = ["203.0.113.1"]
ports = "20000-21023"

[conntrack.timeouts]
tcp_syn = 10
tcp_established = 60
tcp_closing = 10
tcp_time_wait = 10
udp = 20
icmp = 10

[[group]]
name = "soak"
priority = 100
$deny
  [[group.collection]]
  name = "egress"
  priority = 200
  kind = "network"
  action = "allow"
    [[group.collection.rule]]
    name = "$web"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.10"]
    protocols = ["tcp"]
    destination_ports = ["80"]
    [[group.collection.rule]]
    name = "$udp"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.10"]
    protocols = ["udp"]
    destination_ports = ["7"]
    [[group.collection.rule]]
    name = "ping"
    sources = ["198.18.0.0/15"]
    destinations = ["203.0.113.10"]
    protocols = ["icmp"]
    destination_ports = ["*"]
EOF
}
config a > "$TMP/a.toml"; config b > "$TMP/b.toml"; cp "$TMP/a.toml" "$TMP/tollgate.toml"
for v in a b; do "$TG" check "$TMP/$v.toml" >/dev/null || { "$TG" check "$TMP/$v.toml"; exit 1; }; done

ip netns exec "$A" "$TG" run --config "$TMP/tollgate.toml" >"$TMP/tollgate.log" 2>"$TMP/tollgate.err" & TGPID=$!
PIDS+=($TGPID)
for i in $(seq 100); do
  grep -q 'ready: every worker runs' "$TMP/tollgate.err" && break
  [ "$i" = 100 ] && { echo "tollgate did not start:" >&2; cat "$TMP/tollgate.err" >&2; exit 1; }
  sleep 0.1
done
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$TGPID/status"; }

# the load: one process, threads per kind, counts as JSON at the end
cat > "$TMP/load.py" <<'PY'
import json, select, socket, sys, threading, time
dur, tcp_rate, udp_rate, burst, burst_every = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
end = time.time() + dur
n = {k: 0 for k in ["tcp_ok", "tcp_fail", "udp_ok", "udp_fail", "burst_sent", "deny_sent"]}
lock = threading.Lock()
def bump(k, v=1):
    with lock:
        n[k] += v
def paced(rate, f):
    t = time.time()
    while t < end:
        f()
        t += 1.0 / rate
        time.sleep(max(0.0, t - time.time()))
def tcp_once():
    try:
        s = socket.create_connection(("203.0.113.10", 80), timeout=3)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            d = s.recv(1024)
            if not d:
                break
            data += d
        s.close()
        bump("tcp_ok" if data.endswith(b"ok") else "tcp_fail")
    except OSError:
        bump("tcp_fail")
def udp_once():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"echo", ("203.0.113.10", 7))
        r, _, _ = select.select([s], [], [], 2)
        bump("udp_ok" if r and s.recv(100) == b"echo" else "udp_fail")
    except OSError:
        bump("udp_fail")
    s.close()
def bursts():
    t = time.time() + 30
    while t < end:
        time.sleep(max(0.0, t - time.time()))
        socks = []
        for _ in range(burst):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"burst", ("203.0.113.10", 7))
            socks.append(s)
            time.sleep(0.001)
        bump("burst_sent", burst)
        time.sleep(1)
        for s in socks:
            s.close()
        t += burst_every
def deny():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    def once():
        s.sendto(b"x", ("203.0.113.10", 9))
        bump("deny_sent")
    paced(10, once)
ts = [threading.Thread(target=paced, args=(tcp_rate, tcp_once)),
      threading.Thread(target=paced, args=(udp_rate, udp_once)),
      threading.Thread(target=bursts), threading.Thread(target=deny)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps(n))
PY

metrics() { nsx "$A" curl -s -m 5 http://127.0.0.1:9090/metrics || true; }
# sum of a metric's samples (all label sets)
msum() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%.0f\n", s }' "$2"; }
mmax() { awk -v m="$1" 'index($1, m "{") == 1 && $2 > x { x = $2 } END { print x + 0 }' "$2"; }

start=$(date +%s)
echo "soak: ${DURATION}s of traffic, then ${QUIET}s quiet ($(date -u +%H:%M:%S) UTC start)"
ip netns exec "$C" python3 "$TMP/load.py" "$DURATION" "$TCP_RATE" "$UDP_RATE" "$BURST" "$BURST_EVERY" >"$TMP/load.json" 2>"$TMP/load.err" & LOADPID=$!
PIDS+=($LOADPID)
ip netns exec "$C" ping -q -i 0.2 -w "$DURATION" 203.0.113.10 >"$TMP/ping" 2>&1 & PINGPID=$!
PIDS+=($PINGPID)

rss_warm= ; peak_util=0; reloads=0; variant=a; scrapes=0; scrape_fail=0; next_reload=$((start + 10))
while kill -0 "$LOADPID" 2>/dev/null; do
  now=$(date +%s)
  if metrics >"$TMP/m.prom" && [ -s "$TMP/m.prom" ]; then
    scrapes=$((scrapes + 1))
    u=$(mmax tollgate_snat_address_utilisation_ratio "$TMP/m.prom")
    peak_util=$(python3 -c "print(max($peak_util, $u))")
  else
    scrape_fail=$((scrape_fail + 1))
  fi
  [ -z "$rss_warm" ] && [ $((now - start)) -ge 60 ] && rss_warm=$(rss)
  if [ "$now" -ge "$next_reload" ]; then
    variant=$([ "$variant" = a ] && echo b || echo a)
    cp "$TMP/$variant.toml" "$TMP/tollgate.toml"
    kill -HUP "$TGPID"; reloads=$((reloads + 1)); next_reload=$((next_reload + 10))
  fi
  if [ $(( (now - start) % 300 )) -eq 0 ]; then
    echo "  t=$((now - start))s flows=$(msum tollgate_flows "$TMP/m.prom") snat_used=$(msum tollgate_snat_ports_used "$TMP/m.prom") rss=$(rss) kB peak_util=$peak_util"
  fi
  sleep 1
done
wait "$PINGPID" 2>/dev/null || true
rss_traffic_end=$(rss)
sleep "$QUIET"
metrics >"$TMP/end.prom"
rss_end=$(rss)
kill -TERM "$TGPID"; wait "$TGPID" 2>/dev/null || true

flows=$(msum tollgate_flows "$TMP/end.prom")
used=$(msum tollgate_snat_ports_used "$TMP/end.prom")
created=$(msum tollgate_flows_created_total "$TMP/end.prom")
removed=$(msum tollgate_flows_removed_total "$TMP/end.prom")
applied=$(grep -c 'reload: .* applied' "$TMP/tollgate.err" || true)
rejected=$(grep -c 'reload: .* rejected\|reload failed' "$TMP/tollgate.err" || true)
expected='rule_deny|default_deny|out_of_ports|tcp_non_syn|unsolicited|icmp_error_no_flow'
unexpected=$(awk -v ok="^($expected)$" 'index($1, "tollgate_drops_total{") == 1 && $2 > 0 {
  r = $1; sub(/.*reason="/, "", r); sub(/".*/, "", r); if (r !~ ok) printf "%s=%s ", r, $2 }' "$TMP/end.prom")
expected_drops=$(awk 'index($1, "tollgate_drops_total{") == 1 && $2 > 0 {
  r = $1; sub(/.*reason="/, "", r); sub(/".*/, "", r); printf "%s=%s ", r, $2 }' "$TMP/end.prom")
ping_line=$(grep -E 'packets transmitted' "$TMP/ping" || true)

fail=0
check() { # name ok(0|1) detail
  local v=PASS; [ "$2" = 1 ] || { v=FAIL; fail=1; }
  printf '| %s | %s | %s |\n' "$1" "$v" "$3"
}
{
  echo "Soak: $DURATION s of traffic ($(cat "$TMP/load.json" 2>/dev/null || echo 'load: no result')), $reloads reloads, $scrapes scrapes ($scrape_fail failed); $(date -u +%F)"
  echo
  echo "| check | result | measured |"
  echo "|---|---|---|"
  grow=$(( rss_end - rss_warm ))
  check "resident memory flat" "$([ "$grow" -le $((rss_warm / 10 + 4096)) ] && echo 1 || echo 0)" "${rss_warm} kB at 60 s, ${rss_traffic_end} kB when the traffic stopped, ${rss_end} kB at the end"
  check "no flow left" "$([ "$flows" = 0 ] && echo 1 || echo 0)" "$flows flows ${QUIET} s after the traffic"
  check "no SNAT port left" "$([ "$used" = 0 ] && echo 1 || echo 0)" "$used ports in use"
  check "created - removed = tracked" "$([ $((created - removed)) = "$flows" ] && echo 1 || echo 0)" "$created created, $removed removed, $flows tracked"
  check "no unexpected drop reason" "$([ -z "$unexpected" ] && echo 1 || echo 0)" "${unexpected:-none} (all drops: ${expected_drops:-none})"
  check "every reload applied" "$([ "$applied" = "$reloads" ] && [ "$rejected" = 0 ] && echo 1 || echo 0)" "$applied of $reloads applied, $rejected rejected"
  check "pool driven near exhaustion" "$(python3 -c "print(1 if $peak_util >= 0.8 else 0)")" "peak SNAT use $peak_util of 1,024 ports"
  check "scrapes answered" "$([ "$scrape_fail" = 0 ] && echo 1 || echo 0)" "$scrapes answered, $scrape_fail failed"
  echo
  echo "ping: ${ping_line:-none}"
} | tee "${OUT:-/dev/null}"
exit "$fail"
