#!/bin/bash
# scripts/demo.sh - the README's first command: everything needed to try switchyard here,
# including a hot switch from the built-in databases to "external" ones and back.
#
#   scripts/demo.sh             as root (no sudo needed; Postgres runs as postgres via runuser)
#
#   1. installs missing Debian packages (scripts/install-deps.sh; as non-root it only checks)
#   2. builds (make)
#   3. starts, in a throwaway directory:
#      the container's built-in databases, where conf/switchyard.conf expects them:
#        postgres     127.0.0.1:5433, superuser postgres with trust auth
#        redis-store  127.0.0.1:6381
#        redis-cache  127.0.0.1:6382
#      and a stand-in for the operator's own servers (the "external" targets):
#        postgres     127.0.0.1:5434, user sourcegraph / password demo-secret, scram-sha-256
#        redis        127.0.0.1:6383, requirepass demo-secret (both Redis routes use it)
#      Both Postgres clusters have the databases sourcegraph, sourcegraph-codeintel and
#      sourcegraph-codeinsights, and the pgbench tables in sourcegraph, so that a pgbench
#      run keeps working across a switch.
#   4. runs build/switchyard on the container's ports (5432, 6379, 6380; metrics on 9187)
#      with the external targets in its environment, the way the container documents them
#      (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, the CODEINTEL_ and
#      CODEINSIGHTS_ families, REDIS_ENDPOINT), and with a copy of the config that sets
#      `active = builtin` on every route, so everything starts on the built-in side and
#      `SWITCH <route> TO external` has somewhere to go. It prints the lines to try.
#
# Ctrl-C stops switchyard and every server, and removes the directory (DEMO_KEEP=1 keeps it).
# Postgres runs as the postgres user when we are root (it refuses to run as root).
# switchyard's log goes to this terminal. SWITCHYARD_CONFIG=FILE starts from another config.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
CONFIG=${SWITCHYARD_CONFIG:-$REPO/conf/switchyard.conf}
SWITCHYARD=$REPO/build/switchyard

# The external stand-ins.
EXT_PG_PORT=5434
EXT_REDIS_PORT=6383
EXT_USER=sourcegraph
EXT_PASSWORD=demo-secret
DATABASES=(sourcegraph sourcegraph-codeintel sourcegraph-codeinsights)

say() { printf 'demo: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }

# None of the caller's libpq / Redis endpoint variables reach switchyard or the setup
# clients below: the demo decides where everything goes.
UNSET=()
for v in $(compgen -e); do
	case $v in PG* | *_PG* | REDIS_*ENDPOINT) UNSET+=(-u "$v") ;; esac
done
clean_env() { env "${UNSET[@]}" "$@"; }

# ---- 1. packages, 2. build -----------------------------------------------------------------
if is_root; then
	scripts/install-deps.sh
else
	scripts/install-deps.sh || die "missing packages: run $0 (or scripts/install-deps.sh) as root"
fi
# curl is only for looking at the metrics endpoint; install-deps.sh does not list it.
if ! command -v curl >/dev/null 2>&1; then
	if is_root; then
		say "installing curl (to read the metrics endpoint)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl >/dev/null 2>&1 ||
			{ apt-get update -q >/dev/null 2>&1 &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl >/dev/null 2>&1; } ||
			say "could not install curl; the metrics lines below need it"
	else
		say "curl is not installed; the metrics lines below need it (apt-get install curl)"
	fi
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
PG_PIDS=()       # postmasters (children of runuser when root): SIGINT = fast shutdown
SY_PID=

alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
wait_gone() {    # wait_gone TENTHS PID...: until none of PID... is alive; 1 on timeout
	local n=$1 i
	shift
	for ((i = 0; i < n; i++)); do
		alive "$@" || return 0
		sleep 0.1
	done
	! alive "$@"
}

cleanup() {
	local rc=$? p
	trap - EXIT
	trap '' INT TERM      # a second Ctrl-C must not cut the cleanup short (it takes < 15 s)
	say "stopping"
	# switchyard first: SIGTERM stops accepting and lets sessions finish; a second SIGTERM
	# (after 3 s, or at once if Ctrl-C already reached it) exits without waiting for them.
	if [ -n "$SY_PID" ] && alive "$SY_PID"; then
		kill -TERM "$SY_PID" 2>/dev/null || true
		if ! wait_gone 30 "$SY_PID"; then
			kill -TERM "$SY_PID" 2>/dev/null || true
			wait_gone 30 "$SY_PID" || kill -KILL "$SY_PID" 2>/dev/null || true
		fi
	fi
	for p in "${PG_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	for ((p = ${#PIDS[@]} - 1; p >= 0; p--)); do kill -TERM "${PIDS[p]}" 2>/dev/null || true; done
	if ! wait_gone 100 "${PIDS[@]}" "${PG_PIDS[@]}"; then
		for p in "${PG_PIDS[@]}" "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
		wait_gone 20 "${PIDS[@]}" "${PG_PIDS[@]}" || true
	fi
	wait 2>/dev/null || true
	if [ -n "${DEMO_KEEP:-}" ]; then
		say "kept $DEMO_DIR"
	else
		rm -rf "$DEMO_DIR"
	fi
	say "stopped"
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

# demo_postgres NAME PORT [--owner USER PASSWORD] DATABASE...: a cluster in $DEMO_DIR/NAME on
# 127.0.0.1:PORT and a unix socket in $DEMO_DIR/NAME/sock, superuser postgres.
#   without --owner: trust auth, the databases are owned by postgres;
#   with --owner:    TCP clients must log in with a password (scram-sha-256), the unix
#                    socket stays trust for setting up; USER owns the databases.
# Each database gets the pgbench tables if it is named sourcegraph.
demo_postgres() {
	local name=$1 port=$2 d=$DEMO_DIR/$1 pid db owner=postgres password=''
	local -a auth=(--auth=trust)
	shift 2
	if [ "${1:-}" = --owner ]; then
		owner=$2 password=$3
		auth=(--auth-local=trust --auth-host=scram-sha-256)
		shift 3
	fi
	port_free "$port" || die "port $port is taken (stop whatever listens there)"
	mkdir -p "$d"
	if is_root; then chown postgres: "$d"; fi
	as_pg mkdir -p "$d/data" "$d/sock"
	as_pg "$PG_BIN/initdb" -D "$d/data" -U postgres "${auth[@]}" -E UTF8 >"$d/initdb.log" 2>&1 ||
		{ cat "$d/initdb.log" >&2; die "initdb failed for $name"; }
	# Started directly, not through as_pg: a backgrounded function would be a subshell,
	# and $! its pid instead of the server's.
	if is_root; then
		runuser -u postgres -- "$PG_BIN/postgres" -D "$d/data" -c listen_addresses=127.0.0.1 -p "$port" \
			-k "$d/sock" >"$d/postgres.log" 2>&1 &
	else
		"$PG_BIN/postgres" -D "$d/data" -c listen_addresses=127.0.0.1 -p "$port" -k "$d/sock" \
			>"$d/postgres.log" 2>&1 &
	fi
	pid=$!
	PIDS+=("$pid")
	wait_ready "postgres $name" "$pid" "$PG_BIN/pg_isready" -q -h "$d/sock" -p "$port"
	PG_PIDS+=("$(head -n 1 "$d/data/postmaster.pid")")
	if [ "$owner" != postgres ]; then
		clean_env "$PG_BIN/psql" -qX -v ON_ERROR_STOP=1 -h "$d/sock" -p "$port" -U postgres -d postgres \
			-c "CREATE ROLE \"$owner\" LOGIN PASSWORD '$password'" >/dev/null
	fi
	for db in "$@"; do
		clean_env "$PG_BIN/createdb" -h "$d/sock" -p "$port" -U postgres -O "$owner" "$db"
	done
	# pgbench tables, created by the owner over TCP (so the password login is exercised too)
	clean_env PGPASSWORD="$password" "$PG_BIN/pgbench" -i -q -h 127.0.0.1 -p "$port" -U "$owner" sourcegraph \
		>"$d/pgbench-init.log" 2>&1 || { cat "$d/pgbench-init.log" >&2; die "pgbench -i failed for $name"; }
	say "postgres $name on 127.0.0.1:$port (user $owner$([ -n "$password" ] && echo ", scram-sha-256"); databases: $*; pgbench tables in sourcegraph)"
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
	# PING answers NOAUTH with requirepass; either way the server is up.
	wait_ready "redis $name" "$pid" sh -c "redis-cli -h 127.0.0.1 -p $port ping | grep -q -e PONG -e NOAUTH"
	say "redis $name on 127.0.0.1:$port"
}

# ---- Servers -------------------------------------------------------------------------------
for p in 5432 6379 6380 9187; do
	port_free "$p" || die "port $p is taken: switchyard listens there (stop whatever listens there)"
done
say "starting the built-in databases"
demo_postgres builtin-pg 5433 "${DATABASES[@]}"
demo_redis redis-store 6381
demo_redis redis-cache 6382
say "starting the external stand-ins"
demo_postgres external-pg "$EXT_PG_PORT" --owner "$EXT_USER" "$EXT_PASSWORD" "${DATABASES[@]}"
# --requirepass on the command line would show in ps; a config file keeps it out of sight.
printf 'requirepass %s\n' "$EXT_PASSWORD" >"$DEMO_DIR/external-redis.conf"
chmod 600 "$DEMO_DIR/external-redis.conf"
demo_redis external-redis "$EXT_REDIS_PORT" --include "$DEMO_DIR/external-redis.conf"

# ---- switchyard ----------------------------------------------------------------------------
# The external targets, as the container's documented variables.
SY_ENV=()
for fam in "":sourcegraph CODEINTEL_:sourcegraph-codeintel CODEINSIGHTS_:sourcegraph-codeinsights; do
	pre=${fam%%:*} db=${fam#*:}
	SY_ENV+=("${pre}PGHOST=127.0.0.1" "${pre}PGPORT=$EXT_PG_PORT" "${pre}PGUSER=$EXT_USER"
		"${pre}PGPASSWORD=$EXT_PASSWORD" "${pre}PGDATABASE=$db" "${pre}PGSSLMODE=disable")
done
SY_ENV+=("REDIS_ENDPOINT=redis://:$EXT_PASSWORD@127.0.0.1:$EXT_REDIS_PORT")

# The config, with every route pinned to its built-in target to begin with (without
# `active = builtin`, a route whose external variables are set starts on external).
SY_CONF=$DEMO_DIR/switchyard.conf
{
	echo "; demo copy of $CONFIG: every route starts on builtin (scripts/demo.sh)"
	awk '
		/^[ \t]*\[/ { in_route = ($0 ~ /^[ \t]*\[route[ \t]/) }
		in_route && /^[ \t]*active[ \t]*=/ { next }
		{ print }
		/^[ \t]*\[route[ \t]/ { print "active = builtin" }
	' "$CONFIG"
} >"$SY_CONF"
clean_env "${SY_ENV[@]}" "$SWITCHYARD" --check --config "$SY_CONF" >"$DEMO_DIR/check.txt" 2>&1 ||
	{ cat "$DEMO_DIR/check.txt" >&2; die "switchyard --check failed"; }

say "starting switchyard (its log follows)"
env "${UNSET[@]}" "${SY_ENV[@]}" "$SWITCHYARD" --config "$SY_CONF" &   # env execs: $! is switchyard
SY_PID=$!
for p in 5432 6379 6380 9187; do
	wait_ready switchyard "$SY_PID" sh -c "ss -Hltn 'sport = :$p' | grep -q ."
done
sleep 0.2   # let the startup lines come out before the instructions

PSQL="psql -h 127.0.0.1 -p 5432 -U postgres"
CONSOLE="$PSQL switchyard -c"
cat >&2 <<EOF

  switchyard is running (pid $SY_PID); every route starts on its built-in target.
    built-in:  postgres 127.0.0.1:5433 (trust)   redis-store 127.0.0.1:6381   redis-cache 127.0.0.1:6382
    external:  postgres 127.0.0.1:$EXT_PG_PORT (user $EXT_USER, password $EXT_PASSWORD)   redis 127.0.0.1:$EXT_REDIS_PORT (password $EXT_PASSWORD)
  The external targets come from switchyard's environment:
    PGHOST=127.0.0.1 PGPORT=$EXT_PG_PORT PGUSER=$EXT_USER PGPASSWORD=$EXT_PASSWORD PGDATABASE=sourcegraph PGSSLMODE=disable
    CODEINTEL_PG* and CODEINSIGHTS_PG*: the same, with their own databases
    REDIS_ENDPOINT=redis://:$EXT_PASSWORD@127.0.0.1:$EXT_REDIS_PORT   (both Redis routes)

  In another terminal:

  Clients connect as always, through switchyard:
    $PSQL sourcegraph
    $PSQL sourcegraph -c 'SELECT inet_server_port(), current_user'    (5433 = built-in, $EXT_PG_PORT = external)
    redis-cli -p 6379          (redis-store; redis-cli -p 6380 is redis-cache)

  The admin console:
    $CONSOLE 'SHOW ROUTES'
    $CONSOLE 'SHOW HELP'          (also SHOW CLIENTS, SHOW SERVERS, SHOW STATS)

  A switch under load: start pgbench, then switch while it runs; it carries on.
    pgbench -h 127.0.0.1 -p 5432 -U postgres -c 8 -T 60 -P 1 sourcegraph
    $CONSOLE 'SWITCH pg TO external'
    $CONSOLE 'SWITCH pg TO builtin'
  or, from a script (exit 0 once the switch completed):
    $SWITCHYARD switch pg external --user postgres
    $SWITCHYARD status

  Redis:
    redis-cli -p 6379 set greeting hello
    $CONSOLE 'SWITCH redis-store TO external'
    redis-cli -p 6379 get greeting      (nil: the external store does not have it)
    redis-cli -p $EXT_REDIS_PORT --no-auth-warning -a $EXT_PASSWORD keys '*'

  Metrics and health:
    curl -s 127.0.0.1:9187/metrics
    curl -s 127.0.0.1:9187/healthz

  Ctrl-C stops everything (demo files: $DEMO_DIR).

EOF
wait "$SY_PID"
