#!/bin/bash
# bench/pg_bench.sh - Postgres: direct vs switchyard vs pgbouncer (session) vs haproxy (tcp).
#
#   bench/pg_bench.sh                   10 s per run, 3 rounds
#   BENCH_SECONDS=30 bench/pg_bench.sh  longer runs
#
# Environment: BENCH_SECONDS (default 10) per pgbench run, BENCH_ROUNDS (3), BENCH_SCALE
# (pgbench -i scale, 10), SWITCHYARD_BIN (build/switchyard), HAPROXY_NBTHREAD (haproxy's
# default when unset), BENCH_KEEP=1 to keep the temp dir with every log, BENCH_RATE=N to run
# workload A at a fixed N tps (pgbench -R) instead of flat out: every target then carries the
# same load, so CPU/100k compares work per transaction, not how well each batches when busy;
# BENCH_WORKLOADS ("A B", or one of them); BENCH_FLOOR=0 leaves out the floor rows;
# BENCH_PERF="switchyard sy-base ..." records those targets with perf (bench/lib.sh, perf_start).
#
# One throwaway cluster on a free 127.0.0.1 port (run as the postgres user when we are root),
# and in front of it, each on its own free port:
#   pgbouncer  pool_mode = session, auth_type = trust (as postgres when root: it refuses root)
#   haproxy    mode tcp
#   switchyard built-in target = the cluster ("switchyard: n/a" if it does not build or start)
#   floor      bench/floor_relay.c, bytes copied and never read: the least any proxy costs
#              here (floor-uring: the same with io_uring, where liburing-dev is installed)
#
# Workloads, each BENCH_SECONDS long, run BENCH_ROUNDS times, interleaved across targets
# (round 1 of every workload on every target, then round 2, ...; the target order rotates):
#   A  pgbench -n -S -c 8 -j 2 -T N        select-only, persistent connections
#   B  pgbench -n -S -C -c 4 -j 2 -T N     a new connection for every transaction
# Reported: median tps, its ratio to direct's median, and the proxy's CPU seconds per 100k
# transactions (utime + stime from /proc/PID/stat over the run, median over rounds).
# Everything runs on one host: pgbench, the proxy and Postgres share the cores, so compare
# numbers within one run, not across machines or runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BENCH_SCALE=${BENCH_SCALE:-10}
DB=bench

for tool in pgbench pgbouncer haproxy; do
	command -v "$tool" >/dev/null || [ -x "$(pg_bin_dir)/$tool" ] ||
		die "$tool not found (run scripts/install-deps.sh as root)"
done
PG_BIN=$(pg_bin_dir)
PGBENCH=$PG_BIN/pgbench
PSQL=$PG_BIN/psql

bench_init pg
log "temp dir $BENCH_DIR, ${BENCH_SECONDS}s per run, $BENCH_ROUNDS rounds"

# ---- Postgres -----------------------------------------------------------------------------
free_port PG_PORT
start_postgres "$BENCH_DIR/pg" "$PG_PORT"
log "postgres pid $PG_PID on 127.0.0.1:$PG_PORT"
"$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE $DB" >/dev/null
"$PGBENCH" -i -q -s "$BENCH_SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DB" >"$BENCH_DIR/pgbench-init.log" 2>&1 ||
	{ cat "$BENCH_DIR/pgbench-init.log" >&2; die "pgbench -i failed"; }

add_target direct "$PG_PORT"

# ---- pgbouncer ----------------------------------------------------------------------------
start_pgbouncer() {
	local d=$BENCH_DIR/pgbouncer port pid u=()
	mkdir -p "$d"
	free_port port
	echo '"postgres" ""' >"$d/userlist.txt"
	cat >"$d/pgbouncer.ini" <<-EOF
		[databases]
		* = host=127.0.0.1 port=$PG_PORT
		[pgbouncer]
		listen_addr = 127.0.0.1
		listen_port = $port
		unix_socket_dir =
		auth_type = trust
		auth_file = $d/userlist.txt
		pool_mode = session
		max_client_conn = 500
		default_pool_size = 50
		logfile = $d/pgbouncer.log
		log_connections = 0
		log_disconnections = 0
	EOF
	if is_root; then
		chown -R postgres: "$d"
		u=(-u postgres)  # PgBouncer refuses to run as root; -u switches in-process (same pid)
	fi
	pgbouncer "${u[@]}" "$d/pgbouncer.ini" >"$d/stderr.log" 2>&1 &
	pid=$!
	bench_track pgbouncer "$pid"
	if wait_port "$port" 10 "$pid"; then
		add_target pgbouncer "$port" "$pid"
		log "pgbouncer pid $pid on 127.0.0.1:$port"
	else
		log "pgbouncer did not start: $(tail -n 3 "$d/pgbouncer.log" "$d/stderr.log" 2>/dev/null)"
	fi
}

# ---- the floor ----------------------------------------------------------------------------
# bench/floor_relay.c: a relay that copies bytes and reads none of them, the least CPU any
# TCP proxy spends per transaction here ("floor", epoll; "floor-uring", io_uring, where
# liburing is installed). BENCH_FLOOR=0 leaves them out.
start_floor() {
	local d=$BENCH_DIR/floor mode port pid lib=()
	mkdir -p "$d"
	[ -e /usr/include/liburing.h ] && lib=(-luring)
	cc -O2 -std=gnu11 -o "$d/floor_relay" "$(dirname "$0")/floor_relay.c" "${lib[@]}" 2>"$d/cc.log" ||
		{ log "floor_relay did not build: $(head -n 2 "$d/cc.log")"; return 0; }
	for mode in epoll uring; do
		[ "$mode" = uring ] && [ ${#lib[@]} -eq 0 ] && continue
		free_port port
		"$d/floor_relay" "$mode" "$port" "$PG_PORT" 2>"$d/$mode.log" &
		pid=$!
		local name=floor
		[ "$mode" = uring ] && name=floor-uring
		bench_track "$name" "$pid"
		if wait_port "$port" 10 "$pid"; then
			add_target "$name" "$port" "$pid"
			FLOORS="$FLOORS $name"
			log "$name pid $pid on 127.0.0.1:$port"
		else
			log "$name did not start: $(head -n 2 "$d/$mode.log")"
		fi
	done
}
FLOORS=

# ---- switchyard ---------------------------------------------------------------------------
# One listener, one route serving every database (the bench database by name, anything else
# as the listener's default), built-in target = the cluster. No metrics port, quiet logs.
write_switchyard_conf() {
	cat >"$1" <<-EOF
		[switchyard]
		log_level = warn
		metrics_listen = off

		[listener pg]
		protocol = postgres
		listen = 127.0.0.1:$2

		[route pg]
		listener = pg
		databases = $DB
		default = true
		builtin = "host=127.0.0.1 port=$PG_PORT sslmode=disable"
	EOF
}

probe_pg() {
	"$PSQL" -X -qAt -h 127.0.0.1 -p "$1" -U postgres -d "$DB" -c 'select 1'
}

start_switchyard write_switchyard_conf probe_pg
start_switchyard_extra write_switchyard_conf probe_pg
start_pgbouncer
start_haproxy "$PG_PORT"
[ "${BENCH_FLOOR:-1}" = 0 ] || start_floor
[ -n "$SWITCHYARD_NA" ] && log "switchyard: n/a ($SWITCHYARD_NA)"

# ---- runs ---------------------------------------------------------------------------------
read -r -a WORKLOADS <<<"${BENCH_WORKLOADS:-A B}"
declare -A WL_ARGS=([A]="-S -c 8 -j 2${BENCH_RATE:+ -R $BENCH_RATE}" [B]="-S -C -c 4 -j 2")
declare -A TPS=() CPU=()   # key "target:workload" -> space-separated per-round values

# run_one TARGET WORKLOAD ROUND
run_one() {
	local t=$1 w=$2 r=$3 out tps tx c0=0 c1=0 cpu=n/a
	out=$BENCH_DIR/run-$t-$w-$r.log
	[ -n "${PID[$t]:-}" ] && perf_start "$t" "${PID[$t]}" "$t-$w-$r"
	if [ -n "${PID[$t]:-}" ]; then c0=$(cpu_ticks "${PID[$t]}"); else c0=$(tree_ticks "$PG_PID"); fi
	# shellcheck disable=SC2086
	if "$PGBENCH" -n ${WL_ARGS[$w]} -T "$BENCH_SECONDS" -h 127.0.0.1 -p "${PORT[$t]}" -U postgres "$DB" >"$out" 2>&1; then
		perf_stop
		if [ -n "${PID[$t]:-}" ]; then c1=$(cpu_ticks "${PID[$t]}"); else c1=$(reaped_ticks "$PG_PID"); fi
		tx=$(awk -F': *' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] }' "$out")
		tps=$(awk '/^tps = / { print $3; exit }' "$out")
		cpu=$(per100k $((c1 - c0)) "$tx")   # direct: Postgres's own
	else
		perf_stop
		tps=n/a; tx=0
		log "pgbench failed on $t: $(grep -m 2 -iE 'error|fatal|abort' "$out" | tr '\n' ' ')"
	fi
	TPS[$t:$w]+="${tps:-n/a} "
	CPU[$t:$w]+="$cpu "
	log "round $r  $t  pgbench ${WL_ARGS[$w]}: tps $(fmt "${tps:-n/a}" 1), $tx tx, proxy CPU/100k $cpu"
}

n=${#TARGETS[@]}
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	for w in "${WORKLOADS[@]}"; do
		for ((i = 0; i < n; i++)); do
			run_one "${TARGETS[(i + r - 1) % n]}" "$w" "$r"
		done
	done
done

# ---- table --------------------------------------------------------------------------------
declare -A MT=() MC=()
for t in "${TARGETS[@]}"; do
	for w in "${WORKLOADS[@]}"; do
		# shellcheck disable=SC2086
		MT[$t:$w]=$(median ${TPS[$t:$w]})
		# shellcheck disable=SC2086
		MC[$t:$w]=$(median ${CPU[$t:$w]})
	done
done

echo
echo "Postgres: pgbench -S, ${BENCH_SECONDS}s runs, median of $BENCH_ROUNDS, scale $BENCH_SCALE, $(nproc) CPUs, $(date -u +%Y-%m-%d)"
echo "CPU/100k = proxy CPU seconds (user+sys) per 100k transactions (direct: Postgres's own, in parentheses)"
printf '%-11s | %12s | %5s | %8s | %10s | %5s | %8s\n' target "-S -c8 tps" ratio CPU/100k "-C tps" ratio CPU/100k
printf '%s\n' "------------|--------------|-------|----------|------------|-------|---------"
for t in direct switchyard $SY_EXTRA pgbouncer haproxy $FLOORS; do
	if [ -z "${PORT[$t]:-}" ]; then
		printf '%-11s | %12s | %5s | %8s | %10s | %5s | %8s\n' "$t" n/a n/a n/a n/a n/a n/a
		continue
	fi
	cA=${MC[$t:A]:-n/a}; cB=${MC[$t:B]:-n/a}
	[ "$t" = direct ] && { cA="($cA)"; cB="($cB)"; }
	printf '%-11s | %12s | %5s | %8s | %10s | %5s | %8s\n' "$t" \
		"$(fmt "${MT[$t:A]:-n/a}" 1)" "$(ratio "${MT[$t:A]:-n/a}" "${MT[direct:A]:-n/a}")" "$cA" \
		"$(fmt "${MT[$t:B]:-n/a}" 1)" "$(ratio "${MT[$t:B]:-n/a}" "${MT[direct:B]:-n/a}")" "$cB"
done
[ -n "$SWITCHYARD_NA" ] && echo "switchyard: n/a ($SWITCHYARD_NA)"

# ---- data for bench/plot.sh -----------------------------------------------------------------
# One line per target and workload: median tps, its ratio to direct, proxy CPU s per 100k
# transactions (direct: Postgres's own, the postmaster with its reaped backends).
mkdir -p "$BENCH_OUT"
{
	echo "# Postgres pgbench medians of $BENCH_ROUNDS, ${BENCH_SECONDS}s runs, $(nproc) CPUs, $(date -u +%Y-%m-%d)"
	echo "# target workload tps ratio cpu_per_100k"
	for t in direct switchyard $SY_EXTRA pgbouncer haproxy $FLOORS; do
		[ -n "${PORT[$t]:-}" ] || continue
		for w in "${WORKLOADS[@]}"; do
			echo "$t pg-$w $(fmt "${MT[$t:$w]}" 1) $(ratio "${MT[$t:$w]}" "${MT[direct:$w]}") ${MC[$t:$w]}"
		done
	done
} >"$BENCH_OUT/pg.dat"
log "data: $BENCH_OUT/pg.dat"
exit 0
