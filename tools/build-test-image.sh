#!/usr/bin/env bash
# Builds provhost's test image: a small Debian bookworm guest that boots straight into
# /sbin/testinit (no systemd), brings up eth0 from `testip=`/`testgw=` on the kernel command
# line, and runs sshd with a fixed host key and the management node's key for root.
#
# Called by `provhost image build-test` (src/image/build.rs), which owns caching, locking,
# the temporary folder and the final rename; run by hand only for debugging:
#
#   tools/build-test-image.sh WORK MIRROR PUBKEY CACHE PACKAGES RECIPE
#
# WORK      empty folder to build in; the result is written to WORK/image/
# MIRROR    Debian mirror URL (from this machine's apt sources)
# PUBKEY    public key file put into /root/.ssh/authorized_keys
# CACHE     persistent debootstrap package cache (absolute path)
# PACKAGES  comma-separated --include list for debootstrap
# RECIPE    recipe hash, recorded in WORK/image/RECIPE
#
# No loop devices and no mounts but /proc inside the chroot (for update-initramfs); every
# mount under WORK (also debootstrap's own) is undone on exit, success or not.
# Lines starting with "==> " name the step that begins (the caller shows them as progress).
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin

[ "$#" -eq 6 ] || { echo "usage: $0 WORK MIRROR PUBKEY CACHE PACKAGES RECIPE" >&2; exit 2; }
WORK=$1 MIRROR=$2 PUBKEY=$3 CACHE=$4 PACKAGES=$5 RECIPE=$6
ROOT=$WORK/root
OUT=$WORK/image

# Undo every mount below WORK, deepest first (debootstrap mounts proc/sys/dev/pts itself
# and leaves them when it is killed).
unmount_all() {
  local m
  for m in $(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
trap unmount_all EXIT
trap 'exit 130' INT TERM

step() { echo "==> $*"; }

mkdir -p "$CACHE" "$OUT"

step "debootstrap bookworm (minbase) from $MIRROR"
debootstrap --variant=minbase --cache-dir="$CACHE" --include="$PACKAGES" \
  bookworm "$ROOT" "$MIRROR"

step "configure the guest"
echo provhost-test >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tprovhost-test\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
echo '/dev/vda / ext4 rw,noatime 0 0' >"$ROOT/etc/fstab"
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$PUBKEY" "$ROOT/root/.ssh/authorized_keys"
# One host key, ed25519, made for this build; clients pin its .pub (recorded beside the image).
rm -f "$ROOT"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C provhost-test -f "$ROOT/etc/ssh/ssh_host_ed25519_key"
cat >"$ROOT/etc/ssh/sshd_config.d/provhost.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
PermitRootLogin prohibit-password
EOF

cat >"$ROOT/sbin/testinit" <<'EOF'
#!/bin/sh
# PID 1 of provhost's test image: mounts, network from the kernel command line
# (testip=ADDR/PREFIX testgw=GW testhostname=NAME), sshd, and a power-button watcher so
# ACPI power-off (QMP system_powerdown, virsh shutdown) turns the VM off.
PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts; mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run; mkdir -p /run/sshd
mount -o remount,rw /
modprobe -q virtio_rng
IP=10.0.2.15/24; GW=10.0.2.2; NAME=
for a in $(cat /proc/cmdline); do case "$a" in
  testip=*) IP=${a#testip=};; testgw=*) GW=${a#testgw=};;
  testhostname=*) NAME=${a#testhostname=};; esac; done
if [ -n "$NAME" ]; then
  echo "$NAME" >/etc/hostname
  grep -q "[[:space:]]$NAME\$" /etc/hosts || printf '127.0.1.1\t%s\n' "$NAME" >>/etc/hosts
fi
hostname -F /etc/hostname
ip link set lo up; ip link set eth0 up; ip addr add "$IP" dev eth0
[ -n "$GW" ] && ip route add default via "$GW"
/usr/sbin/sshd -E /run/sshd.log
modprobe -q button; modprobe -q evdev
for d in /sys/class/input/input*; do
  [ "$(cat $d/name)" = "Power Button" ] || continue
  for e in $d/event*; do ( dd if=/dev/input/${e##*/} of=/dev/null bs=64 count=1 \
    status=none && echo TESTVM-POWERDOWN >/dev/ttyS0 && sync \
    && echo o >/proc/sysrq-trigger ) & done
done
echo TESTVM-READY >/dev/ttyS0
while :; do sleep 3600 & wait; done
EOF
chmod 755 "$ROOT/sbin/testinit"

step "small initramfs (virtio + ext4 only)"
sed -i 's/^MODULES=.*/MODULES=list/' "$ROOT/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 >>"$ROOT/etc/initramfs-tools/modules"
mount -t proc proc "$ROOT/proc"
chroot "$ROOT" update-initramfs -u -k all >/dev/null 2>&1 || chroot "$ROOT" update-initramfs -u -k all
umount "$ROOT/proc"

step "kernel, initrd and command line"
vmlinuz=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$ROOT/boot/initrd.img-${vmlinuz##*/vmlinuz-}
[ -f "$initrd" ] || { echo "no initrd for ${vmlinuz##*/} in $ROOT/boot" >&2; exit 1; }
cp "$vmlinuz" "$OUT/vmlinuz"
cp "$initrd" "$OUT/initrd.img"
echo 'console=ttyS0 root=/dev/vda rw net.ifnames=0 quiet init=/sbin/testinit' >"$OUT/cmdline"
cp "$ROOT/etc/ssh/ssh_host_ed25519_key.pub" "$OUT/ssh_host_ed25519_key.pub"

step "clean (docs, man pages, locales, apt caches, boot files)"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/cache/apt/*.bin \
  "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* \
  "$ROOT"/usr/share/locale/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/*.log \
  "$ROOT"/boot/*

step "disk image (mke2fs -d, qcow2)"
mke2fs -q -F -t ext4 -L provhost-test -E root_owner=0:0 -d "$ROOT" "$WORK/disk.raw" 2G
qemu-img convert -O qcow2 "$WORK/disk.raw" "$OUT/disk.qcow2"
rm -f "$WORK/disk.raw"

step "checksums"
echo "$RECIPE" >"$OUT/RECIPE"
(cd "$OUT" && sha256sum disk.qcow2 vmlinuz initrd.img cmdline ssh_host_ed25519_key.pub RECIPE >SHA256SUMS)
step "done"
