# bench/lib.sh - helpers shared by the scripts in bench/ (sourced).
#
# Every server and proxy a bench starts lives in one throwaway directory, listens on a free
# 127.0.0.1 port below the ephemeral range (so the thousands of client sockets a -C run opens
# never collide with a listener), and is registered with bench_track so that bench_cleanup
# (run on EXIT, and so on Ctrl-C) stops it and removes the directory.
#
# CPU accounting: a proxy's CPU time is utime + stime of its process in /proc/PID/stat (for a
# multi-threaded proxy such as haproxy this is the sum over its threads), sampled right before
# and right after a workload, in clock ticks (getconf CLK_TCK, 10 ms on Debian).

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_KEEP=${BENCH_KEEP:-}          # non-empty: keep the temp dir (logs) after the run
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_OUT=${BENCH_OUT:-$REPO/bench/out}   # medians for bench/plot.sh (*.dat) and its pictures
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$REPO/build/switchyard}
CLK_TCK=$(getconf CLK_TCK)

BENCH_DIR=
declare -A BENCH_PIDS=()            # name -> pid of every process to stop on exit
declare -A BENCH_PORTS=()           # ports handed out in this run
BENCH_PG_PIDS=()                    # postmasters: fast shutdown (SIGINT) on exit

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the postgres user when we are root (Postgres refuses to run as root).
as_pg() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# bench_init NAME: make the temp dir and install the cleanup trap.
bench_init() {
	BENCH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sy-bench-$1.XXXXXX")
	chmod 755 "$BENCH_DIR"
	# Servers that drop root (postgres, pgbouncer -u) must be able to write here.
	if is_root; then chown postgres: "$BENCH_DIR"; fi
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

bench_cleanup() {
	local rc=$? name pid i
	trap - EXIT INT TERM
	for pid in "${BENCH_PG_PIDS[@]}"; do
		kill -INT "$pid" 2>/dev/null || true
	done
	for name in "${!BENCH_PIDS[@]}"; do
		kill -TERM "${BENCH_PIDS[$name]}" 2>/dev/null || true
	done
	for i in 1 2 3 4 5 6 7 8 9 10; do
		local alive=0
		for name in "${!BENCH_PIDS[@]}"; do
			kill -0 "${BENCH_PIDS[$name]}" 2>/dev/null && alive=1
		done
		[ $alive -eq 0 ] && break
		sleep 0.2
	done
	for name in "${!BENCH_PIDS[@]}"; do
		kill -KILL "${BENCH_PIDS[$name]}" 2>/dev/null || true
	done
	for pid in "${BENCH_PG_PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ -n "$BENCH_DIR" ] && [ -d "$BENCH_DIR" ]; then
		if [ -n "$BENCH_KEEP" ]; then
			log "kept $BENCH_DIR"
		else
			rm -rf "$BENCH_DIR"
		fi
	fi
	exit $rc
}

bench_track() { BENCH_PIDS[$1]=$2; }

# free_port VAR: a port in 20000..32000 nobody listens on and not yet handed out here.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		[ -n "${BENCH_PORTS[$p]:-}" ] && continue
		[ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && continue
		break
	done
	BENCH_PORTS[$p]=1
	printf -v "$1" '%s' "$p"
}

# wait_port PORT [SECONDS] [PID]: until 127.0.0.1:PORT accepts; fails early if PID dies.
wait_port() {
	local port=$1 secs=${2:-10} pid=${3:-} i
	for ((i = 0; i < secs * 10; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
		sleep 0.1
	done
	return 1
}

# cpu_ticks PID: utime + stime of the process, in clock ticks. Field 2 (comm) may hold
# spaces, so cut everything up to its closing parenthesis; utime/stime are then fields 12/13.
cpu_ticks() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	s=${s##*) }
	awk '{print $12 + $13}' <<<"$s"
}

# perf_start NAME PID TAG / perf_stop: with BENCH_PERF="NAME ..." (targets by name), record
# NAME's process with `perf record -g` while a workload runs, into $BENCH_DIR/perf-TAG.data
# (BENCH_KEEP is then implied, so the files stay). The target's CPU figures then include
# what sampling costs it; compare profiles, not the CPU column, of such a run.
PERF_PID=
perf_start() {
	PERF_PID=
	[[ " ${BENCH_PERF:-} " == *" $1 "* ]] || return 0
	command -v perf >/dev/null || { log "BENCH_PERF: perf not found"; return 0; }
	BENCH_KEEP=1
	perf record -q -g -F 1999 -p "$2" -o "$BENCH_DIR/perf-$3.data" >"$BENCH_DIR/perf-$3.log" 2>&1 &
	PERF_PID=$!
	sleep 0.2   # attached before the workload starts
}
perf_stop() {
	[ -n "$PERF_PID" ] || return 0
	kill -INT "$PERF_PID" 2>/dev/null || true
	wait "$PERF_PID" 2>/dev/null || true
	PERF_PID=
}

# tree_ticks PID: utime + stime of the process and of its children it has reaped (cutime +
# cstime): for a postmaster, its backends' CPU once they exited.
tree_ticks() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	s=${s##*) }
	awk '{print $12 + $13 + $14 + $15}' <<<"$s"
}

# reaped_ticks PID: tree_ticks once the backends of a finished run are reaped (their
# count stops changing; at most 2 s).
reaped_ticks() {
	local i n prev=-1
	for ((i = 0; i < 20; i++)); do
		n=$(pgrep -c -P "$1" 2>/dev/null || true)
		[ "$n" = "$prev" ] && break
		prev=$n
		sleep 0.1
	done
	tree_ticks "$1"
}

# per100k TICKS COUNT: CPU seconds per 100k operations.
per100k() {
	awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", t / hz / n * 100000; else print "n/a" }'
}

# median V...: median of the numeric arguments, ignoring "n/a"; "n/a" when none.
median() {
	local v
	for v in "$@"; do
		if [ "$v" != n/a ] && [ -n "$v" ]; then echo "$v"; fi
	done | sort -g |
		awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B with two decimals; n/a when either is n/a.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

# fmt NUMBER [DECIMALS]
fmt() {
	awk -v a="$1" -v d="${2:-0}" 'BEGIN { if (a == "n/a" || a == "") print "n/a"; else printf "%.*f", d, a }'
}

# csv_field FILE TEST COLUMN: a column of redis-benchmark --csv output for "GET"/"SET"
# (columns: test, rps, avg, min, p50, p95, p99, max). Other lines (warnings) are skipped.
csv_field() {
	awk -F, -v t="\"$2\"" -v c="$3" '$1 == t { gsub(/"/, "", $c); print $c; exit }' "$1"
}

# Postgres binaries: the newest installed major version.
pg_bin_dir() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	[ -n "$d" ] || die "no Postgres server found (run scripts/install-deps.sh as root)"
	echo "$d"
}

# start_postgres DATADIR PORT: a throwaway cluster with trust auth for the superuser
# "postgres", listening on 127.0.0.1:PORT and a unix socket in DATADIR/../pg-sock.
# Sets PG_PID. PG_MAX_CONNECTIONS (default 200) is its max_connections. Tuned for a benchmark, not for durability. The postmaster runs as a child
# of this script (not through pg_ctl, which orphans it), so its exit is reaped here.
start_postgres() {
	local data=$1 port=$2 sock i
	PG_BIN=${PG_BIN:-$(pg_bin_dir)}
	sock="$(dirname "$data")/pg-sock"
	as_pg mkdir -p "$data" "$sock"
	as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >"$BENCH_DIR/initdb.log" 2>&1 ||
		{ cat "$BENCH_DIR/initdb.log" >&2; die "initdb failed"; }
	as_pg "$PG_BIN/postgres" -D "$data" -c listen_addresses=127.0.0.1 -p "$port" -k "$sock" \
		-c max_connections="${PG_MAX_CONNECTIONS:-200}" -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
		-c shared_buffers=128MB >"$data/../postgres.log" 2>&1 &
	bench_track "postgres-$port" $!
	for ((i = 0; i < 300; i++)); do
		if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then break; fi
		kill -0 $! 2>/dev/null || { cat "$data/../postgres.log" >&2; die "postgres did not start"; }
		sleep 0.1
	done
	"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" || die "postgres not ready on port $port"
	PG_PID=$(head -n 1 "$data/postmaster.pid")
	# Stop it with a fast shutdown on exit (SIGINT to the postmaster itself, not to runuser).
	BENCH_PG_PIDS+=("$PG_PID")
}

# switchyard_usable: the binary exists and runs.
switchyard_usable() {
	[ -x "$SWITCHYARD_BIN" ] && "$SWITCHYARD_BIN" --help >/dev/null 2>&1
}

# switchyard_env_args: fills SY_ENV_ARGS with "env -u" options that drop every external-target
# variable of the caller's shell (PG*, CODEINTEL_PG*, REDIS_*ENDPOINT...), so the bench's
# switchyard only knows its built-in targets. Used as a simple command (env ... BIN &) so
# that $! is the proxy's own pid, whose CPU is measured.
switchyard_env_args() {
	local v
	SY_ENV_ARGS=()
	for v in $(compgen -e); do
		case $v in
		PG* | *_PG* | REDIS_*ENDPOINT) SY_ENV_ARGS+=(-u "$v") ;;
		esac
	done
}

# start_redis_server NAME [ARGS...]: a throwaway redis-server (no persistence, extra
# redis-server ARGS) on a free 127.0.0.1 port, its files in BENCH_DIR/NAME. Sets REDIS_PORT
# and REDIS_PID.
start_redis_server() {
	local d=$BENCH_DIR/$1
	shift
	free_port REDIS_PORT
	mkdir -p "$d"
	redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
		--protected-mode no --dir "$d" --logfile "$d/redis.log" "$@" &
	REDIS_PID=$!
	bench_track "redis-$REDIS_PORT" "$REDIS_PID"
	wait_port "$REDIS_PORT" 10 "$REDIS_PID" || die "redis-server did not start: $(tail -n 3 "$d/redis.log")"
	log "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"
}

# probe_redis PORT: PING through 127.0.0.1:PORT answers PONG.
probe_redis() {
	[ "$(redis-cli -h 127.0.0.1 -p "$1" ping)" = PONG ]
}

# conf_redis_route LISTEN_PORT BACKEND_PORT: the [listener redis] and [route redis] sections
# of a switchyard config: 127.0.0.1:LISTEN_PORT to the built-in 127.0.0.1:BACKEND_PORT.
conf_redis_route() {
	printf '[listener redis]\nprotocol = redis\nlisten = 127.0.0.1:%s\n\n' "$1"
	printf '[route redis]\nlistener = redis\nbuiltin = 127.0.0.1:%s\n' "$2"
}

# ---- targets ------------------------------------------------------------------------------
# Every bench fills these: TARGETS in start order, PORT[target], PID[target] (the process whose
# CPU is measured; none for direct).
TARGETS=()
declare -A PORT=() PID=()
add_target() { TARGETS+=("$1"); PORT[$1]=$2; [ -n "${3:-}" ] && PID[$1]=$3; return 0; }

# start_haproxy BACKEND_PORT: haproxy in tcp mode in front of 127.0.0.1:BACKEND_PORT.
# Threads: haproxy's default (one per CPU) unless HAPROXY_NBTHREAD is set.
start_haproxy() {
	local d=$BENCH_DIR/haproxy port pid nb=
	mkdir -p "$d"
	free_port port
	if [ -n "${HAPROXY_NBTHREAD:-}" ]; then nb="nbthread $HAPROXY_NBTHREAD"; fi
	cat >"$d/haproxy.cfg" <<-EOF
		global
		    maxconn 4000
		    $nb
		defaults
		    mode tcp
		    timeout connect 5s
		    timeout client 1h
		    timeout server 1h
		listen bench
		    bind 127.0.0.1:$port
		    server upstream 127.0.0.1:$1
	EOF
	haproxy -db -f "$d/haproxy.cfg" >"$d/haproxy.log" 2>&1 &
	pid=$!
	bench_track haproxy "$pid"
	if wait_port "$port" 10 "$pid"; then
		add_target haproxy "$port" "$pid"
		log "haproxy pid $pid on 127.0.0.1:$port"
	else
		log "haproxy did not start: $(tail -n 3 "$d/haproxy.log")"
	fi
}

# start_switchyard WRITE_CONF PROBE [NAME [WORKERS]]: build/switchyard as target NAME
# (default switchyard) with WORKERS worker threads (default SWITCHYARD_WORKERS, else the
# config's auto: half the CPUs), with the config that the function WRITE_CONF FILE PORT
# writes, checked with --check, then probed with PROBE PORT (a real client request through
# it). On any failure SWITCHYARD_NA says why and the bench goes on without it.
# SWITCHYARD_ALSO_WORKERS=N makes the benches start a second one, "sy-Nw", with N workers.
SWITCHYARD_NA=
start_switchyard() {
	local write_conf=$1 probe=$2 name=${3:-switchyard} workers=${4:-${SWITCHYARD_WORKERS:-}}
	local bin=${5:-$SWITCHYARD_BIN} sets=${6:-}
	local d=$BENCH_DIR/$name port pid
	mkdir -p "$d"
	if ! [ -x "$bin" ] || ! "$bin" --help >/dev/null 2>&1; then
		SWITCHYARD_NA="$bin missing or not runnable"
		return 0
	fi
	# Run a copy: a rebuild during the bench must not change what is measured.
	cp "$bin" "$d/switchyard"
	free_port port
	"$write_conf" "$d/switchyard.conf" "$port"
	switchyard_env_args
	if ! env "${SY_ENV_ARGS[@]}" "$d/switchyard" --config "$d/switchyard.conf" --check >"$d/check.log" 2>&1; then
		SWITCHYARD_NA="--check failed: $(tail -n 2 "$d/check.log" | tr '\n' ' ')"
		return 0
	fi
	local extra=()
	if [ -n "$workers" ]; then extra=(-o "switchyard.workers=$workers"); fi
	local kv
	for kv in $sets; do extra+=(-o "$kv"); done
	env "${SY_ENV_ARGS[@]}" "$d/switchyard" --config "$d/switchyard.conf" "${extra[@]}" >"$d/switchyard.log" 2>&1 &
	pid=$!
	bench_track "$name" "$pid"
	if wait_port "$port" 10 "$pid" && "$probe" "$port" >"$d/probe.log" 2>&1; then
		add_target "$name" "$port" "$pid"
		log "$name pid $pid on 127.0.0.1:$port, workers ${workers:-auto}"
	else
		SWITCHYARD_NA="did not serve: $(tail -n 2 "$d/switchyard.log" "$d/probe.log" 2>/dev/null | tr '\n' ' ')"
	fi
	return 0
}

# The extra switchyard targets, if any (their names, for the tables):
#   SWITCHYARD_ALSO_WORKERS=N      a second one, "sy-Nw", with N workers;
#   SWITCHYARD_ALSO_SET="K=V ..."  one more, "sy-set", with those settings over its config
#                                  (-o, say "switchyard.reconnect_window=0"), so what a
#                                  feature costs is measured in one run;
#   SWITCHYARD_BASELINE_BIN=PATH   another build (say, the previous main), "sy-base", with
#                                  the same workers, so a change is measured in one run.
SY_EXTRA=
start_switchyard_extra() {
	if [ -n "${SWITCHYARD_ALSO_WORKERS:-}" ]; then
		SY_EXTRA=sy-${SWITCHYARD_ALSO_WORKERS}w
		start_switchyard "$1" "$2" "$SY_EXTRA" "$SWITCHYARD_ALSO_WORKERS"
	fi
	if [ -n "${SWITCHYARD_ALSO_SET:-}" ]; then
		SY_EXTRA="$SY_EXTRA sy-set"
		start_switchyard "$1" "$2" sy-set "" "" "$SWITCHYARD_ALSO_SET"
	fi
	if [ -n "${SWITCHYARD_BASELINE_BIN:-}" ]; then
		SY_EXTRA="$SY_EXTRA sy-base"
		start_switchyard "$1" "$2" sy-base "" "$SWITCHYARD_BASELINE_BIN"
	fi
}

# start_switch_proxy PG_PORT [VAR=VALUE...] (switch_bench.sh, soak.sh; reads r_a and r_b): switchyard (default workers) with a pg route whose
# builtin is Postgres on 127.0.0.1:PG_PORT (its external comes from the PG* of VAR=VALUE, if
# any) and a redis route builtin 127.0.0.1:$r_a, external 127.0.0.1:$r_b. Sets sy_pg, sy_r,
# SY_PID; the console is psql on sy_pg. BENCH_MULTIPLEX=off gives the redis route one upstream
# per client (the default is on).
start_switch_proxy() {
	local pg_port=$1
	shift
	free_port sy_pg
	free_port sy_r
	mkdir -p "$BENCH_DIR/sy"
	cp "$SWITCHYARD_BIN" "$BENCH_DIR/sy/switchyard"
	cat >"$BENCH_DIR/sy/switchyard.conf" <<-EOF
		[switchyard]
		metrics_listen = off
		log_level = ${BENCH_LOG_LEVEL:-warn}
		drain_timeout = 30
		[listener pg]
		protocol = postgres
		listen = 127.0.0.1:$sy_pg
		[route pg]
		listener = pg
		databases = sourcegraph
		default = true
		builtin = "host=127.0.0.1 port=$pg_port user=postgres sslmode=disable"
		active = builtin
		[listener redis]
		protocol = redis
		listen = 127.0.0.1:$sy_r
		[route redis]
		listener = redis
		builtin = 127.0.0.1:$r_a
		external_env = REDIS_ENDPOINT
		active = builtin
		multiplex = ${BENCH_MULTIPLEX:-on}
	EOF
	switchyard_env_args
	env "${SY_ENV_ARGS[@]}" "$@" REDIS_ENDPOINT="127.0.0.1:$r_b" \
		"$BENCH_DIR/sy/switchyard" --config "$BENCH_DIR/sy/switchyard.conf" >"$BENCH_DIR/sy/switchyard.log" 2>&1 &
	SY_PID=$!
	bench_track switchyard "$SY_PID"
	wait_port "$sy_pg" 10 "$SY_PID" && wait_port "$sy_r" 10 "$SY_PID" ||
		die "switchyard did not start: $(tail -n 3 "$BENCH_DIR/sy/switchyard.log")"
}
