#!/bin/bash
# Install the Debian packages switchyard needs to build, test, run the demo and the benchmarks.
#
#   scripts/install-deps.sh        as root: installs what is missing (apt-get), then exits 0
#                                  as anyone else: exits 0 if all is there, else prints the
#                                  apt-get line to run and exits 1
#
# Idempotent: when every package is installed it only runs dpkg-query and returns.
#
# node-postgres (npm, the version tests/node/package-lock.json pins) goes into
# tests/node/node_modules, for the tests that check what a Node.js application sees; Node.js
# itself comes from Debian (nodejs, npm) unless the machine already has it.
#
# Debian's postgresql package creates and starts a "main" cluster on 5432, and redis-server,
# pgbouncer, haproxy and nutcracker start services too. switchyard owns 5432/6379/6380 and the
# tests and demo start their own servers, so: no main cluster is created (createcluster.conf is
# written before postgresql-common is installed), and whatever service the packages started is
# stopped afterwards.
set -euo pipefail

PACKAGES=(
	build-essential pkg-config libuv1-dev libpq-dev libssl-dev libhiredis-dev
	postgresql postgresql-contrib redis-server redis-tools openssl
	pgbouncer haproxy nutcracker liburing-dev valgrind
	python3 python3-redis python3-psycopg2 procps iproute2 file curl
	groff-base man-db dpkg-dev adduser
	clang libclang-rt-dev
	gnuplot-nox
)
command -v node >/dev/null && command -v npm >/dev/null || PACKAGES+=(nodejs npm)
SERVICES=(redis-server postgresql pgbouncer haproxy nutcracker)

node_modules() {
	local dir
	dir="$(cd "$(dirname "$0")/.." && pwd)/tests/node"
	[ -d "$dir/node_modules/pg" ] && return 0
	if [ "$(id -u)" -ne 0 ] && [ ! -w "$dir" ]; then
		echo "install-deps: node-postgres missing: run  npm ci --prefix $dir" >&2
		return 1
	fi
	echo "install-deps: installing node-postgres into $dir"
	npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
}

installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	node_modules
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing Debian packages: ${missing[*]}" >&2
	echo "install-deps: run as root:  apt-get install ${missing[*]}" >&2
	echo "install-deps: (or run this script as root: sudo $0)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Keep our createcluster.conf if postgresql-common's ucf step meets it.
export UCF_FORCE_CONFFOLD=1

# Keep Debian from creating (and starting) a cluster on 5432 when postgresql is installed.
if ! installed postgresql-common; then
	mkdir -p /etc/postgresql-common
	if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
		echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
	elif ! grep -q '^[[:space:]]*create_main_cluster' /etc/postgresql-common/createcluster.conf; then
		echo "create_main_cluster = false" >>/etc/postgresql-common/createcluster.conf
	fi
fi

echo "install-deps: installing ${missing[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"

# Free the ports the packages' services may have taken (best effort: there may be no init).
for s in "${SERVICES[@]}"; do
	service "$s" stop >/dev/null 2>&1 || true
done

node_modules
echo "install-deps: done"
