#!/usr/bin/env bash
# Wraps a Tollgate TOML configuration in a #cloud-config document (Azure custom data, or the
# user-data of a NoCloud seed) that writes it to /etc/tollgate/tollgate.toml; a file named *.in
# (a template with @IP@, @CIDR@, @GATEWAY@) goes to /etc/tollgate/tollgate.toml.in instead and
# tollgate-config.service renders it at boot.
#
#   vm-image/azure/render-custom-data.sh tollgate.toml [extra-cloud-config.yaml] > custom-data.yaml
set -euo pipefail
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  echo "usage: $0 tollgate.toml [extra.yaml]" >&2; exit 2
fi
echo "#cloud-config"
echo "# Written by vm-image/azure/render-custom-data.sh from $(basename "$1")."
echo "write_files:"
dest=/etc/tollgate/tollgate.toml
case "$1" in *.in) dest=/etc/tollgate/tollgate.toml.in ;; esac
echo "  - path: $dest"
echo "    owner: root:root"
echo "    permissions: '0640'"
echo "    content: |"
sed 's/^/      /' "$1"
if [ $# -ge 2 ]; then
  cat "$2"
fi
