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
  openssh-server openssh-client      # real sshd for tests; ssh/scp in the demo's printed commands
  qemu-system-x86 qemu-utils         # test VMs (TCG) and qcow2 images (always one version: see below)
  libvirt-daemon-system libvirt-daemon-system-sysv libvirt-clients  # libvirt.rhai's real libvirtd (no systemd)
  debootstrap e2fsprogs              # building the test image (debootstrap, mke2fs -d)
  nftables iproute2                  # the VM firewall, lab hosts and VM networks in namespaces
  sudo                               # os/linux's sudo entries checked on lab hosts (visudo, sudo -l)
  libssl-dev zlib1g-dev pkg-config gcc  # ssh2's libssh2/openssl build
  util-linux                         # unshare/mount for the disk-full copy test
  mariadb-server mariadb-client      # the VCL-compatible database backend
  chromium                           # the status page's headless browser test (tests/web_status.rs)
  dpkg-dev binutils                  # cargo-deb's dependency scan (dpkg-shlibdeps) and strip
  galera-4 rsync                     # tests/galera.rs: a 3-node Galera cluster on loopback (rsync SST)
)
# `install-deps.sh --bench`: also what `make bench` compares against (a vcld-like Perl process).
if [ "${1:-}" = "--bench" ]; then
  packages+=(libdbd-mysql-perl)
fi

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
  # qemu-system-x86 needs the qemu-utils of its own version. A newer (backported) qemu-utils
  # may already be installed, and apt would remove it to install qemu-system-x86 without
  # putting one back; so whenever either is missing, name both, qemu-utils pinned to
  # qemu-system-x86's candidate version, in the one command.
  args=()
  pin=""
  for p in "${missing[@]}"; do
    case "$p" in qemu-system-x86|qemu-utils) pin=1 ;; esac
    [ "$p" = qemu-utils ] || args+=("$p")
  done
  if [ -n "$pin" ]; then
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "install-deps: apt knows no qemu-system-x86 candidate" >&2; exit 1; }
    args+=("qemu-utils=$v")
  fi
  $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades "${args[@]}"
fi

# One run must be enough: check that everything is there now, and say what is not.
still=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || still+=("$p")
done
if [ "${#still[@]}" -gt 0 ]; then
  echo "install-deps: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
qemu-img --version >/dev/null 2>&1 || { echo "install-deps: qemu-img does not run; reinstall qemu-utils of qemu-system-x86's version" >&2; exit 1; }

command -v cargo >/dev/null || { echo "install-deps: cargo not found; install Rust (rustup) first" >&2; exit 1; }
# cargo-deb builds the Debian package (`make deb`, tests/deb_package.rs); from crates.io once.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-deb"
  cargo install --locked cargo-deb
fi

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
