#!/usr/bin/env bash
# The fuzz targets, on stable Rust (libFuzzer with SanitizerCoverage, no ASan):
#
#   ./fuzz/run.sh [SECONDS]   build, then run every target for SECONDS (default 60), starting
#                             from the committed corpus fuzz/corpus/<target>/. Exits non-zero
#                             if any target finds a crash (its input lands in fuzz/artifacts/).
#   ./fuzz/run.sh merge       minimise into a fresh fuzz/corpus/<target>/ what the runs found
#                             (kept in fuzz/work/<target>/) together with the committed corpus
#                             and the seeds (tests/fixtures, config/ and tests/*.toml).
#
# FUZZ_TARGETS="a b" picks targets; FUZZ_JOBS=N runs N at a time (default 1); FUZZ_NICE=N runs
# them under nice -n N. Per target, the last lines of libFuzzer's output are printed; the whole
# output is in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"
all="process l7 quic dns config worker"
targets="${FUZZ_TARGETS:-$all}"
jobs="${FUZZ_JOBS:-1}"

export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps these flags off build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --quiet --target "$triple"
bin="${CARGO_TARGET_DIR:-target}/$triple/release"

# Seeds from the repository's fixtures and configurations, for `merge`.
seed() {
  local s=seeds
  rm -rf "$s"
  mkdir -p "$s"/{process,l7,quic,dns,config,worker}
  cp ../tests/fixtures/clienthello_*.bin "$s/l7/"
  # QUIC: real Initials as raw datagrams (mode 0), and the RFC 9001 CRYPTO frame to be sealed
  # (mode 1, one chunk: length << 1, then the frames).
  for f in ../tests/fixtures/quic_initial_*.bin ../tests/fixtures/rfc9001_a2_client_initial.bin; do
    { printf '\000'; cat "$f"; } > "$s/quic/$(basename "$f")"
  done
  local frame=../tests/fixtures/rfc9001_a2_crypto_frame.bin
  local n=$(( $(wc -c < "$frame") << 1 ))
  { printf '\001'; printf "\\$(printf %03o $((n >> 8)))\\$(printf %03o $((n & 255)))"; cat "$frame"; } \
    > "$s/quic/rfc9001_crypto_frame"
  for f in ../config/*.toml ../tests/*.toml; do
    cp "$f" "$s/config/$(basename "$(dirname "$f")")_$(basename "$f")"
  done
  # The worker: one short session per engine setting (first byte): a TCP SYN, its SYN-ACK
  # (an answer to the tracked flow), a UDP query, time, a reload, expiry.
  local session='\000\000\000\000\000\000\000\003\000\000\022\000\000\001\000\002\000\002\000\004\012\000\005\001\006'
  for h in 0 1 2 3; do
    printf "\\$(printf %03o $h)$session" > "$s/worker/session_$h"
  done
}

if [ "${1:-}" = merge ]; then
  seed
  mkdir -p logs
  for t in $targets; do
    mkdir -p "corpus/$t" "work/$t"
    rm -rf "corpus.new/$t"
    mkdir -p "corpus.new/$t"
    # On edges alone (not hit counts): every edge any input reached, in far fewer inputs.
    "$bin/$t" -merge=1 -use_counters=0 "corpus.new/$t" "corpus/$t" "work/$t" "seeds/$t" \
      > "logs/$t.merge.log" 2>&1 \
      || { tail -n 20 "logs/$t.merge.log"; exit 1; }
    rm -rf "corpus/$t"
    mv "corpus.new/$t" "corpus/$t"
    echo "$t: $(ls "corpus/$t" | wc -l) inputs," \
      "$(find "corpus/$t" -type f -printf '%s\n' | awk '{ s += $1 } END { print int(s / 1024) }') KB"
  done
  rmdir corpus.new 2>/dev/null || true
  exit 0
fi

secs="${1:-60}"
mkdir -p artifacts logs
run_one() {
  local t=$1 rc=0
  mkdir -p "work/$t" "corpus/$t"
  # New inputs go to work/<t> (not committed); the committed corpus is only read.
  nice -n "${FUZZ_NICE:-0}" "$bin/$t" -max_total_time="$secs" -timeout=30 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t-" "work/$t" "corpus/$t" > "logs/$t.log" 2>&1 || rc=$?
  echo "$rc" > "logs/$t.rc"
}
for t in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "== $t (${secs}s)"
  run_one "$t" &
done
wait
failed=""
for t in $targets; do
  rc="$(cat "logs/$t.rc" 2>/dev/null || echo 1)"
  if [ "$rc" = 0 ]; then
    echo "== $t: ok"
    grep -E '^(#[0-9]+|Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "logs/$t.log" \
      | tail -n 4
  else
    echo "== $t: FAILED (exit $rc): see fuzz/logs/$t.log and fuzz/artifacts/"
    tail -n 30 "logs/$t.log"
    failed="$failed $t"
  fi
done
if [ -n "$failed" ]; then
  echo "fuzzing found crashes in:$failed" >&2
  exit 1
fi
