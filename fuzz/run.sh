#!/usr/bin/env bash
# Builds the fuzz targets on stable Rust (libFuzzer with SanitizerCoverage, no ASan) and runs
# each for the given seconds: ./fuzz/run.sh [seconds]. Findings land in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps these flags off build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --quiet --target "$triple"
mkdir -p artifacts corpus/process corpus/l7 corpus/quic corpus/dns
cp ../tests/fixtures/clienthello_*.bin corpus/l7/ 2>/dev/null || true
# QUIC seeds: real Initials as raw datagrams (mode 0), and the RFC 9001 CRYPTO frame to be
# sealed (mode 1, one chunk: length << 1, then the frames).
for f in ../tests/fixtures/quic_initial_*.bin ../tests/fixtures/rfc9001_a2_client_initial.bin; do
  { printf '\000'; cat "$f"; } > "corpus/quic/$(basename "$f")"
done
frame=../tests/fixtures/rfc9001_a2_crypto_frame.bin
n=$(( $(wc -c < "$frame") << 1 ))
{ printf '\001'; printf "\\$(printf %03o $((n >> 8)))\\$(printf %03o $((n & 255)))"; cat "$frame"; } > corpus/quic/rfc9001_crypto_frame
targets="${FUZZ_TARGETS:-process l7 quic dns}"
for t in $targets; do
  echo "== $t (${secs}s)"
  ./target/"$triple"/release/$t -max_total_time="$secs" -artifact_prefix=artifacts/ corpus/$t 2>&1 | tail -n 3
done
