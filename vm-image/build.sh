#!/usr/bin/env bash
# Builds a bootable Debian bookworm image with Tollgate, from Debian packages only.
#
#   sudo vm-image/build.sh [--binary PATH] [--config FILE] [--out DIR] [--size 2G]
#
# Outputs (in --out, default vm-image/out):
#   tollgate-bookworm.qcow2   for qemu/KVM (boot-test.sh uses it)
#   tollgate-bookworm.vhd     fixed-size VHD, size a whole number of MiB (Azure page blob)
#
# Environment: TOLLGATE_BIN (same as --binary, default target/release/tollgate, built with
# `cargo build --release` only when missing), DEBIAN_MIRROR (default: the Debian mirror this
# machine's apt uses), IMAGE_SIZE (same as --size).
#
# Boot: MBR + extlinux (BIOS; qemu's SeaBIOS and Azure Generation 1 VMs), Debian's cloud kernel
# (Hyper-V netvsc/storvsc and virtio drivers), console on ttyS0, interface names eth0, eth1, ...
# Provisioning: cloud-init with the Azure datasource (NoCloud for local tests); the Tollgate
# configuration /etc/tollgate/tollgate.toml comes from custom data (write_files), see
# vm-image/azure/cloud-init.yaml, or is baked in with --config.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

bin=${TOLLGATE_BIN:-}
config=""
out="$here/out"
size=${IMAGE_SIZE:-2G}
name=tollgate-bookworm
suite=bookworm

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (debootstrap, loop devices, chroot)" >&2; exit 1; }

log() { printf '[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
start=$(date +%s)

# --- host tools, from the Debian archive ------------------------------------------------------
need=(debootstrap qemu-utils fdisk e2fsprogs extlinux syslinux-common mount)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing host tools: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian mirror apt already uses on this machine.
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -Eo 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
  DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi
DEBIAN_MIRROR=${DEBIAN_MIRROR%/}
log "mirror $DEBIAN_MIRROR"

# --- the tollgate binary ----------------------------------------------------------------------
if [ -z "$bin" ]; then
  bin="$repo/target/release/tollgate"
  if [ ! -x "$bin" ]; then
    log "target/release/tollgate missing: cargo build --release"
    (cd "$repo" && cargo build --release)
  fi
fi
[ -x "$bin" ] || { echo "build.sh: tollgate binary $bin not found or not executable" >&2; exit 1; }
if [ -n "$config" ] && [ ! -f "$config" ]; then
  echo "build.sh: config $config not found" >&2; exit 1
fi
log "binary $bin ($(du -h "$bin" | cut -f1))"

# --- scratch disk, loop device, cleanup on every exit path -------------------------------------
mkdir -p "$out"
work=$(mktemp -d /var/tmp/tollgate-vmimage.XXXXXX)
raw="$work/disk.raw"
mnt="$work/mnt"
loop=""
cleanup() {
  set +e
  for m in var/cache/apt/archives dev/pts dev proc sys run; do
    mountpoint -q "$mnt/$m" && umount -l "$mnt/$m"
  done
  mountpoint -q "$mnt" && umount "$mnt"
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "disk $size, MBR, one bootable ext4 partition from 1 MiB"
truncate -s "$size" "$raw"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$raw"
# The partition through an offset loop device: works where partition scanning (loopXp1) does not.
loop=$(losetup -f --show -o $((2048 * 512)) "$raw")
# extlinux (syslinux 6.04) does not read ext4's 64bit layout.
mkfs.ext4 -q -L tollgate-root -O ^64bit -E lazy_itable_init=0 "$loop"
uuid=$(blkid -s UUID -o value "$loop")
mkdir -p "$mnt"
mount "$loop" "$mnt"

# --- Debian -----------------------------------------------------------------------------------
# A minimal debootstrap, then apt in the chroot: debootstrap's own resolver mis-orders the
# configuration of larger --include sets (python3-cryptography failed to configure).
pkgs=(
  linux-image-cloud-amd64 initramfs-tools extlinux
  systemd-sysv udev dbus kmod systemd-resolved
  cloud-init cloud-guest-utils fdisk e2fsprogs isc-dhcp-client netbase
  openssh-server sudo ca-certificates
  iproute2 nftables ethtool
  curl less procps iputils-ping tcpdump
)
cache=/var/cache/tollgate-vmimage/debs   # downloaded .debs, reused by the next build
mkdir -p "$cache"
log "debootstrap $suite (minbase)"
debootstrap --variant=minbase --cache-dir="$cache" "$suite" "$mnt" "$DEBIAN_MIRROR" \
  > "$out/debootstrap.log" 2>&1 \
  || { tail -n 30 "$out/debootstrap.log" >&2; echo "full log: $out/debootstrap.log" >&2; exit 1; }

for m in dev dev/pts proc sys run; do
  case $m in
    proc) mount -t proc proc "$mnt/proc" ;;
    sys) mount -t sysfs sys "$mnt/sys" ;;
    run) mount -t tmpfs run "$mnt/run" ;;
    *) mount --bind "/$m" "$mnt/$m" ;;
  esac
done
in_chroot() { LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "$mnt" "$@"; }

cat > "$mnt/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $suite main
deb $DEBIAN_MIRROR $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
# No daemons start inside the chroot (removed again below).
printf '#!/bin/sh\nexit 101\n' > "$mnt/usr/sbin/policy-rc.d"
chmod 0755 "$mnt/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$mnt/etc/resolv.conf"
mkdir -p "$mnt/var/cache/apt/archives"
mount --bind "$cache" "$mnt/var/cache/apt/archives"
log "apt-get install ${#pkgs[@]} packages in the chroot"
{ in_chroot apt-get update -q && in_chroot apt-get install -y -q --no-install-recommends "${pkgs[@]}"; } \
  > "$out/apt.log" 2>&1 || { tail -n 30 "$out/apt.log" >&2; echo "full log: $out/apt.log" >&2; exit 1; }
umount "$mnt/var/cache/apt/archives"
rm -f "$mnt/usr/sbin/policy-rc.d"
# systemd-resolved owns resolv.conf in the image (its stub); DNS comes from DHCP (Azure DNS).
ln -sf ../run/systemd/resolve/stub-resolv.conf "$mnt/etc/resolv.conf"

log "fstab, hostname"
cat > "$mnt/etc/fstab" <<EOF
UUID=$uuid / ext4 defaults,noatime,errors=remount-ro 0 1
EOF
echo tollgate > "$mnt/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 tollgate\n' > "$mnt/etc/hosts"
ln -sf /usr/share/zoneinfo/Etc/UTC "$mnt/etc/localtime"
# No installer debris, no host identity: cloud-init and systemd create these on first boot.
: > "$mnt/etc/machine-id"
rm -f "$mnt"/etc/ssh/ssh_host_*
in_chroot passwd -l root >/dev/null
# Azure: no password logins; keys come from the platform through cloud-init.
mkdir -p "$mnt/etc/ssh/sshd_config.d"
printf 'PasswordAuthentication no\nClientAliveInterval 120\n' > "$mnt/etc/ssh/sshd_config.d/60-tollgate.conf"

log "overlay (unit, sysctl, cloud-init) and the tollgate binary"
cp -a "$here/overlay/." "$mnt/"
install -m 0755 "$bin" "$mnt/usr/sbin/tollgate"
install -d -m 0750 "$mnt/etc/tollgate"
install -d "$mnt/usr/share/doc/tollgate/examples"
cp "$here/azure/tollgate.toml" "$mnt/usr/share/doc/tollgate/examples/azure-one-arm.toml"
cp "$here/azure/cloud-init.yaml" "$mnt/usr/share/doc/tollgate/examples/cloud-init.yaml"
[ -f "$repo/README.md" ] && cp "$repo/README.md" "$mnt/usr/share/doc/tollgate/README.md"
if [ -n "$config" ]; then
  install -m 0640 "$config" "$mnt/etc/tollgate/tollgate.toml"
fi
in_chroot systemctl enable tollgate.service tollgate-config.service serial-getty@ttyS0.service \
  systemd-networkd.service systemd-resolved.service >/dev/null
# cloud-init renders the network (networkd); Debian's ifupdown default file is not used.
rm -f "$mnt/etc/network/interfaces.d/"* 2>/dev/null || true

log "kernel command line and extlinux"
kver=$(find "$mnt/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n1)
cmdline="root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8 earlyprintk=ttyS0,115200 net.ifnames=0 rootdelay=10"
mkdir -p "$mnt/boot/extlinux"
cat > "$mnt/boot/extlinux/extlinux.conf" <<EOF
# Generated by vm-image/build.sh; /etc/kernel/postinst.d/zz-tollgate-extlinux rewrites it.
SERIAL 0 115200
DEFAULT debian
TIMEOUT 10
PROMPT 0
LABEL debian
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND $cmdline
EOF
# Kernel upgrades (apt) point extlinux at the newest kernel.
cat > "$mnt/etc/kernel/postinst.d/zz-tollgate-extlinux" <<'EOF'
#!/bin/sh
set -e
conf=/boot/extlinux/extlinux.conf
[ -f "$conf" ] || exit 0
k=$(ls -1 /boot/vmlinuz-* | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n1)
sed -i -e "s|^  LINUX .*|  LINUX /boot/vmlinuz-$k|" -e "s|^  INITRD .*|  INITRD /boot/initrd.img-$k|" "$conf"
EOF
chmod 0755 "$mnt/etc/kernel/postinst.d/zz-tollgate-extlinux"
extlinux --install "$mnt/boot/extlinux" >/dev/null
# Again now that fstab names the root file system: the initramfs then carries fsck.ext4.
in_chroot update-initramfs -u -k "$kver" >/dev/null

log "trimming apt caches"
in_chroot apt-get clean
rm -rf "$mnt"/var/lib/apt/lists/* "$mnt"/var/log/*.log "$mnt"/tmp/* "$mnt"/var/tmp/*
fstrim "$mnt" 2>/dev/null || true
used=$(df -h --output=used "$mnt" | tail -n1 | tr -d ' ')

for m in dev/pts dev proc sys run; do umount -l "$mnt/$m"; done
umount "$mnt"
losetup -d "$loop"; loop=""
# The MBR boot code (the partition table stays).
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none

log "qcow2 and fixed VHD"
qemu-img convert -q -c -O qcow2 "$raw" "$out/$name.qcow2"
# Azure: fixed VHD, virtual size a whole number of MiB. force_size keeps the size exact
# instead of rounding it to a CHS geometry.
bytes=$(stat -c %s "$raw")
mib=$(( (bytes + 1048575) / 1048576 ))
if [ $((mib * 1048576)) -ne "$bytes" ]; then truncate -s $((mib * 1048576)) "$raw"; fi
qemu-img convert -q -f raw -O vpc -o subformat=fixed,force_size "$raw" "$out/$name.vhd"
# Check the footer Azure reads: cookie "conectix", disk type 2 (fixed), current size a whole MiB,
# and the file is exactly that size plus the 512-byte footer.
vhd_virtual=$(python3 - "$out/$name.vhd" <<'PY'
import os, struct, sys
p = sys.argv[1]
with open(p, "rb") as f:
    f.seek(-512, os.SEEK_END)
    footer = f.read(512)
cookie, size, dtype = footer[0:8], struct.unpack(">Q", footer[48:56])[0], struct.unpack(">I", footer[60:64])[0]
ok = cookie == b"conectix" and dtype == 2 and size % (1 << 20) == 0 and os.path.getsize(p) == size + 512
print(size if ok else f"bad:{cookie!r}:{dtype}:{size}:{os.path.getsize(p)}")
PY
)
case "$vhd_virtual" in
  bad:*) echo "build.sh: $out/$name.vhd is not a fixed VHD of whole MiB: $vhd_virtual" >&2; exit 1 ;;
esac

end=$(date +%s)
log "done in $((end - start)) s: kernel $kver, root fs used $used"
ls -l "$out/$name.qcow2" "$out/$name.vhd"
echo "qcow2 $(du -h "$out/$name.qcow2" | cut -f1) on disk; vhd $(du -h --apparent-size "$out/$name.vhd" | cut -f1) fixed (virtual $vhd_virtual bytes)"
