#!/bin/bash
# build-image.sh - build the lab's Debian 12 VM image once, and reuse it.
#
# debootstrap (minbase plus a package list) from the package archive the
# host uses, with Debian's kernel, corosync, dlm_controld, gfs2-utils,
# ocfs2-tools, the kernel NFS server, pacemaker (with its command-line
# tools, which ocf:pacemaker:controld and the lab's test need) and
# resource-agents, and
# the run-time libraries clustermaild links against. The result is three
# files in LAB_DIR/image/: root.img (ext4, booted read-write under qemu
# -snapshot, so the image itself never changes), vmlinuz and initrd.img.
#
# Nothing of clustermail is in the image: the freshly built binaries and
# the guest scripts reach the VMs through virtio-9p at boot (see
# lab-init.sh), so a code change never needs a new image. The image is
# rebuilt only when it is older than this script (its recipe).
#
# usage: build-image.sh [--force]
# Environment: LAB_DIR (default /var/tmp/clustermail-lab), LAB_MIRROR
# (default: the host's first Debian archive URL).
# Exit: 0 image ready, 1 failed, 77 cannot build here (not root, no
# debootstrap).
set -euo pipefail

lab_dir=${LAB_DIR:-/var/tmp/clustermail-lab}
image_dir=$lab_dir/image
recipe=$(readlink -f "$0")

packages=(
	linux-image-amd64 initramfs-tools kmod udev procps iproute2 iputils-ping
	util-linux mount e2fsprogs python3
	corosync dlm-controld gfs2-utils ocfs2-tools
	nfs-kernel-server nfs-common pacemaker pacemaker-cli-utils resource-agents
	liburing2 libssl3 zlib1g libdlm3 libcpg4 libcrypt1 libxml2
)

if [ -f "$image_dir/root.img" ] && [ "$image_dir/root.img" -nt "$recipe" ] &&
		[ "${1:-}" != --force ]; then
	echo "lab: image $image_dir/root.img is up to date"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "SKIP: building the lab image needs root (debootstrap)"
	exit 77
fi
for tool in debootstrap mkfs.ext4; do
	if ! command -v "$tool" >/dev/null; then
		echo "SKIP: $tool is not installed (apt-get install debootstrap e2fsprogs)"
		exit 77
	fi
done

# mirror - the first Debian archive URL the host's apt uses
mirror=${LAB_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list \
		/etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
		2>/dev/null | grep -v security | head -1 |
		sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//' || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$image_dir"
root=$image_dir/root.tmp
rm -rf "$root" "$image_dir/root.img.tmp"
trap 'rm -rf "$root" "$image_dir/root.img.tmp"' EXIT

start=$(date +%s)
echo "lab: debootstrap bookworm from $mirror into $root"
include=$(IFS=,; echo "${packages[*]}")
if ! debootstrap --variant=minbase --include="$include" bookworm "$root" \
		"$mirror" >"$image_dir/debootstrap.log" 2>&1; then
	tail -30 "$image_dir/debootstrap.log"
	echo "lab: debootstrap failed (log: $image_dir/debootstrap.log)"
	exit 1
fi
echo "lab: debootstrap took $(( $(date +%s) - start ))s"

# The first stage of the guest's init: mount the share, run the script
# from the source tree (lab-init.sh) that does the rest.
cat >"$root/sbin/lab-stub-init" <<'STUB'
#!/bin/sh
# lab-stub-init - PID 1 of a lab VM: mount the host's share, hand over.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
modprobe 9pnet_virtio
mkdir -p /lab
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 lab /lab &&
		[ -x /lab/tests/lab/lab-init.sh ]; then
	exec /lab/tests/lab/lab-init.sh
fi
echo "lab-stub-init: no share; powering off" >/dev/console
echo o >/proc/sysrq-trigger
STUB
chmod 755 "$root/sbin/lab-stub-init"
echo "clustermail-lab" >"$root/etc/hostname"
# No services start by themselves: lab-init.sh starts what a test needs.
rm -f "$root"/etc/systemd/system/multi-user.target.wants/* 2>/dev/null || true
# Shrink: documentation and apt lists are of no use in the VMs.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* \
	"$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
	"$root"/var/cache/apt/archives/*.deb

kernel=$(find "$root/boot" -name 'vmlinuz-*' | sort | tail -1)
initrd=$(find "$root/boot" -name 'initrd.img-*' | sort | tail -1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
	echo "lab: no kernel or initrd in the image"
	exit 1
fi
cp "$kernel" "$image_dir/vmlinuz"
cp "$initrd" "$image_dir/initrd.img"

size_mb=$(( $(du -sm "$root" | cut -f1) + 512 ))
mkfs.ext4 -q -L labroot -d "$root" "$image_dir/root.img.tmp" "${size_mb}M"
mv "$image_dir/root.img.tmp" "$image_dir/root.img"
echo "lab: image ready in $(( $(date +%s) - start ))s: $image_dir (${size_mb} MiB)"
