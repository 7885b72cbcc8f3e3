#!/usr/bin/env bash
# The README is assembled from the section files in docs/, in reading order:
#   docs/assemble-readme.sh > README.md
set -euo pipefail
cd "$(dirname "$0")"
first=1
for f in readme-head io-lab rules app-rules engine benchmarks snat-bench operability vm-image deploy-azure limits; do
  [ -f "$f.md" ] || continue
  [ "$first" = 1 ] || echo
  first=0
  cat "$f.md"
done
