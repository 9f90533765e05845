#!/bin/sh
# deps.sh - install what clustermail needs to build, test and run, from
# Debian's archive, and only what is missing. Safe to run again.
#
# usage: scripts/deps.sh          (as root, or with nothing missing)
set -eu

PACKAGES="
gcc make autoconf automake libtool pkg-config
liburing-dev libssl-dev libxml2-dev zlib1g-dev libcrypt-dev
libdlm-dev libcpg-dev check
python3 python3-pytest
openssl curl ca-certificates groff-base man-db procps iproute2
isync offlineimap3 mutt fetchmail
postfix swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
python3-aiosmtpd
corosync pacemaker pacemaker-cli-utils resource-agents crmsh pcs
shellcheck libxml2-utils
qemu-system-x86 qemu-utils debootstrap e2fsprogs
"

missing=""
for pkg in $PACKAGES; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = "installed" ] || missing="$missing $pkg"
done

if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps.sh: missing packages:$missing" >&2
		echo "deps.sh: run as root, or: apt-get install$missing" >&2
		exit 1
	fi
	echo "deps.sh: installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# Postfix is a test peer (smtp-source, smtp-sink, a private relay
	# instance): install it without configuring a system MTA.
	echo "postfix postfix/main_mailer_type select No configuration" |
		debconf-set-selections
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi

# The daemon drops root for this user (mail_user's default).
if [ "$(id -u)" -eq 0 ] && ! getent passwd clustermail >/dev/null; then
	useradd --system --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin clustermail
	echo "deps.sh: created system user clustermail"
fi
