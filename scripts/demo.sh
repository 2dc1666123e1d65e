#!/bin/bash
# scripts/demo.sh - the README's first command: everything needed to try switchyard here.
#
#   sudo scripts/demo.sh        (or, as root, scripts/demo.sh)
#
#   1. installs missing Debian packages (scripts/install-deps.sh; as non-root it only checks)
#   2. builds (make)
#   3. starts, in a throwaway directory, the container's built-in databases where
#      conf/switchyard.conf expects them:
#        postgres     127.0.0.1:5433 (+ a unix socket in the demo dir), trust auth, databases
#                     sourcegraph, sourcegraph-codeintel, sourcegraph-codeinsights
#        redis-store  127.0.0.1:6381
#        redis-cache  127.0.0.1:6382
#   4. prints the client lines to use and runs build/switchyard --config conf/switchyard.conf
#      in the foreground: 127.0.0.1:5432 -> postgres, 6379 -> redis-store, 6380 -> redis-cache.
#
# Ctrl-C stops switchyard and every server, and removes the directory (DEMO_KEEP=1 keeps it).
# Postgres runs as the postgres user when we are root (it refuses to run as root).
#
# The demo shows the built-in targets, so switchyard starts without the caller's PG* and
# REDIS_*ENDPOINT variables. Servers are started by the demo_* functions below and the
# switchyard environment is SY_ENV: a second, "external" Postgres or Redis is one more
# demo_postgres / demo_redis call plus its variables in SY_ENV (see "Servers" below).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
CONFIG=${SWITCHYARD_CONFIG:-$REPO/conf/switchyard.conf}
SWITCHYARD=$REPO/build/switchyard

say() { printf 'demo: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }

# ---- 1. packages, 2. build -----------------------------------------------------------------
if is_root; then
	scripts/install-deps.sh
else
	scripts/install-deps.sh || die "missing packages: run 'sudo $0' (or scripts/install-deps.sh as root)"
fi
say "building"
make -s
[ -x "$SWITCHYARD" ] || die "$SWITCHYARD was not built"
[ -f "$CONFIG" ] || die "$CONFIG not found"

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PG_BIN" ] || die "no Postgres server installed"

# ---- throwaway directory and cleanup -------------------------------------------------------
DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-demo.XXXXXX")
chmod 755 "$DEMO_DIR"
PIDS=()          # every server started, stopped in reverse order on exit
PG_PIDS=()       # postmasters: SIGINT = fast shutdown

cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	say "stopping"
	for i in "${PG_PIDS[@]}"; do kill -INT "$i" 2>/dev/null || true; done
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null || true; done
	for i in $(seq 50); do
		local alive=0 p
		for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive -eq 0 ] && break
		sleep 0.1
	done
	for i in "${PIDS[@]}"; do kill -KILL "$i" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "${DEMO_KEEP:-}" ]; then
		say "kept $DEMO_DIR"
	else
		rm -rf "$DEMO_DIR"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

wait_ready() {   # wait_ready WHAT PID COMMAND...: until COMMAND succeeds, or PID dies (30 s)
	local what=$1 pid=$2 i
	shift 2
	for ((i = 0; i < 300; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		kill -0 "$pid" 2>/dev/null || die "$what exited; see its log in $DEMO_DIR"
		sleep 0.1
	done
	die "$what not ready after 30 s"
}

# demo_postgres NAME PORT DATABASE...: a cluster in $DEMO_DIR/NAME, superuser postgres with
# trust auth, on 127.0.0.1:PORT and a unix socket in $DEMO_DIR/NAME/sock.
demo_postgres() {
	local name=$1 port=$2 d=$DEMO_DIR/$1 pid db
	shift 2
	port_free "$port" || die "port $port is taken (stop whatever listens there)"
	mkdir -p "$d"
	if is_root; then chown postgres: "$d"; fi
	as_pg mkdir -p "$d/data" "$d/sock"
	as_pg "$PG_BIN/initdb" -D "$d/data" -U postgres --auth=trust -E UTF8 >"$d/initdb.log" 2>&1 ||
		{ cat "$d/initdb.log" >&2; die "initdb failed for $name"; }
	as_pg "$PG_BIN/postgres" -D "$d/data" -c listen_addresses=127.0.0.1 -p "$port" -k "$d/sock" \
		>"$d/postgres.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ready "postgres $name" "$pid" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"
	PG_PIDS+=("$(head -n 1 "$d/data/postmaster.pid")")
	for db in "$@"; do
		"$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
	done
	say "postgres $name on 127.0.0.1:$port and $d/sock (databases: $*)"
}

# demo_redis NAME PORT [redis-server options...]: a redis-server without persistence.
demo_redis() {
	local name=$1 port=$2 d=$DEMO_DIR/$1 pid
	shift 2
	port_free "$port" || die "port $port is taken (stop whatever listens there)"
	mkdir -p "$d"
	redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --protected-mode no \
		--dir "$d" --logfile "$d/redis.log" "$@" &
	pid=$!
	PIDS+=("$pid")
	wait_ready "redis $name" "$pid" redis-cli -h 127.0.0.1 -p "$port" ping
	say "redis $name on 127.0.0.1:$port"
}

# ---- Servers -------------------------------------------------------------------------------
# The built-in targets of conf/switchyard.conf.
for p in 5432 6379 6380; do
	port_free "$p" || die "port $p is taken: switchyard listens there (stop whatever listens there)"
done
demo_postgres builtin-pg 5433 sourcegraph sourcegraph-codeintel sourcegraph-codeinsights
demo_redis redis-store 6381
demo_redis redis-cache 6382

# switchyard's environment: none of the caller's external-target variables, so every route
# starts on its built-in target. An external server would add its variables here, e.g.
# SY_ENV+=(PGHOST=127.0.0.1 PGPORT=5434 PGUSER=... PGSSLMODE=require REDIS_ENDPOINT=...).
SY_ENV=()
UNSET=()
for v in $(compgen -e); do
	case $v in PG* | *_PG* | REDIS_*ENDPOINT) UNSET+=(-u "$v") ;; esac
done

# ---- switchyard ----------------------------------------------------------------------------
cat >&2 <<EOF

switchyard is starting in front of them (Ctrl-C stops everything). In another terminal:

    psql -h 127.0.0.1 -p 5432 -U postgres sourcegraph
    redis-cli -p 6379
    redis-cli -p 6380

(also sourcegraph-codeintel and sourcegraph-codeinsights; demo files in $DEMO_DIR)

EOF
env "${UNSET[@]}" "${SY_ENV[@]}" "$SWITCHYARD" --config "$CONFIG"
