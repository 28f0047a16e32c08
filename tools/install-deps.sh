#!/usr/bin/env bash
# Installs what provhost's tests and demo need on a Debian machine, idempotently (only
# missing packages, `apt-get update` only when something is missing), and makes sure the
# MariaDB server the database tests use is running. Safe to run any number of times.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

packages=(
  openssh-server openssh-client      # real sshd for tests, ssh/scp as benchmark anchors
  qemu-system-x86 qemu-utils         # test VMs (TCG) and qcow2 images
  libvirt-daemon-system libvirt-daemon-system-sysv libvirt-clients  # libvirt.rhai's real libvirtd (no systemd)
  debootstrap e2fsprogs busybox-static cpio zstd  # building the test image (mke2fs -d)
  nftables iproute2 socat            # firewall checks, lab hosts in netns, QMP by hand
  sudo                               # os/linux's sudo entries checked on lab hosts (visudo, sudo -l)
  libssl-dev zlib1g-dev pkg-config gcc  # ssh2's libssh2/openssl build
  util-linux                         # unshare/mount for the disk-full copy test
  mariadb-server mariadb-client      # the VCL-compatible database backend
  libdbd-mysql-perl hyperfine        # benchmark anchors (a vcld-like Perl process, timing)
)

missing=()
for p in "${packages[@]}"; do
  case "$p" in \#*) continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # Package scripts must not start daemons (libvirtd, sshd, mariadb): the tests start
  # their own instances and need none running. A policy-rc.d saying "no" does that; ours
  # is removed again afterwards, an existing one is left as it was.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    # A newer (backported) qemu-utils blocks the distribution's qemu-system-x86; take the
    # qemu-utils that matches qemu-system-x86's candidate version, in the same command.
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    others=()
    for p in "${missing[@]}"; do [ "$p" = qemu-utils ] || others+=("$p"); done
    $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades "${others[@]}" "qemu-utils=$v"
  fi
fi

command -v cargo >/dev/null || { echo "install-deps: cargo not found; install Rust (rustup) first" >&2; exit 1; }

# MariaDB: pre-started on CI machines; start it when it is not answering.
if ! mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  echo "install-deps: starting MariaDB"
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 60); do
    mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 || { echo "install-deps: MariaDB did not start" >&2; exit 1; }
fi
echo "install-deps: ok"
