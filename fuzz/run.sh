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
mkdir -p artifacts corpus/process corpus/l7
cp ../tests/fixtures/*.bin corpus/l7/ 2>/dev/null || true
for t in process l7; do
  echo "== $t (${secs}s)"
  ./target/"$triple"/release/$t -max_total_time="$secs" -artifact_prefix=artifacts/ corpus/$t 2>&1 | tail -n 3
done
