#!/bin/bash
# bench/idle_bench.sh - what idle clients cost: switchyard's RSS against idle connections,
# and how much of it goes back when they leave.
#
#   bench/idle_bench.sh
#   IDLE_PG=2000 IDLE_REDIS=5000 IDLE_STEPS=4 bench/idle_bench.sh
#
# Environment: IDLE_PG (Postgres clients, default 5000), IDLE_REDIS (Redis clients, 5000),
# IDLE_STEPS (5: both kinds are opened in that many equal steps, RSS sampled after each),
# SWITCHYARD_BIN (build/switchyard), SWITCHYARD_BASELINE_BIN (another build, say the
# previous main, measured the same way after it as "sy-base"), BENCH_KEEP=1 (the temp dir
# keeps /proc/PID/smaps at base, peak and after, per build), IDLE_AT_PEAK (a shell command
# run with all clients idle, $SY_PID set: say, gdb -p $SY_PID -batch -ex 'call malloc_stats()'),
# IDLE_AT_AFTER (the same, once every client left and RSS is sampled), IDLE_POOL_WAIT=N
# (then wait up to N s for the pool to close its idle servers, which it keeps for
# server_idle_timeout: set a short one with IDLE_CONF, and sample RSS again, "after_pool"),
# IDLE_RELEASE_DELAY (2: server_release_delay of SWITCHYARD_BIN, so that the idle Postgres
# clients give their servers back within the run; the baseline gets none, as a build that
# does not know the key would refuse it), IDLE_CONF (more [switchyard] lines for
# SWITCHYARD_BIN, say "pool_size = 0").
#
# One throwaway cluster (max_connections = IDLE_PG + 50: every client has its own upstream)
# and one redis-server; switchyard (workers auto) with a Postgres and a Redis route to them.
# Clients are bench/idle_clients.py: a Postgres client is idle after ReadyForQuery, a Redis
# client after one PING. RSS is VmRSS of /proc/PID/status:
#   base    after start and one request of each kind
#   steps   after each step of clients is open and idle
#   released  once SHOW POOLS counts a release per Postgres client (builds with
#           server_release_delay; up to 120 s), then 3 s (three sweeps)
#   after   once every client left and switchyard counts none, after 3 s (three sweeps)
# Writes bench/out/idle_rss.dat (build clients pg redis rss_kb; "after" rows have the
# clients column 0 and the label in column 5) and prints a table.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

IDLE_PG=${IDLE_PG:-5000}
IDLE_REDIS=${IDLE_REDIS:-5000}
IDLE_STEPS=${IDLE_STEPS:-5}
PG_BIN=$(pg_bin_dir)

# Client, upstream and a spare per session, for both kinds, plus the bench's own.
need=$((2 * (IDLE_PG + IDLE_REDIS) + 1000))
if (($(ulimit -n) < need)); then
	ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
log "fd limit $(ulimit -n) (need $need)"

bench_init idle
mkdir -p "$BENCH_OUT"

free_port PG_PORT
PG_MAX_CONNECTIONS=$((IDLE_PG + 50)) start_postgres "$BENCH_DIR/pg" "$PG_PORT"
log "postgres on 127.0.0.1:$PG_PORT, max_connections $((IDLE_PG + 50))"
start_redis_server redis --maxclients $((IDLE_REDIS + 200)) --tcp-backlog 4096

rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# start_sy NAME BIN [GLOBALS]: switchyard NAME with a pg route (any database) and a redis
# route, GLOBALS added to [switchyard]. Sets sy_pg, sy_r, SY_PID.
start_sy() {
	local d=$BENCH_DIR/$1
	mkdir -p "$d"
	cp "$2" "$d/switchyard"
	free_port sy_pg
	free_port sy_r
	cat >"$d/switchyard.conf" <<-EOF
		[switchyard]
		metrics_listen = off
		log_level = warn
		${3:-}
		[listener pg]
		protocol = postgres
		listen = 127.0.0.1:$sy_pg
		[route pg]
		listener = pg
		databases = postgres
		default = true
		builtin = "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres sslmode=disable"
		[listener redis]
		protocol = redis
		listen = 127.0.0.1:$sy_r
		[route redis]
		listener = redis
		builtin = 127.0.0.1:$REDIS_PORT
	EOF
	switchyard_env_args
	env "${SY_ENV_ARGS[@]}" "$d/switchyard" --config "$d/switchyard.conf" >"$d/switchyard.log" 2>&1 &
	SY_PID=$!
	bench_track "$1" "$SY_PID"
	wait_port "$sy_pg" 10 "$SY_PID" && wait_port "$sy_r" 10 "$SY_PID" ||
		die "$1 did not start: $(tail -n 3 "$d/switchyard.log")"
}

console() { "$PG_BIN/psql" -qXAt -F ' ' -h 127.0.0.1 -p "$sy_pg" -U postgres switchyard -c "$1"; }
# released: idle Postgres clients that gave their server back (SHOW POOLS column 11; empty
# for a build without it).
released() { console "SHOW POOLS" | awk '$1 == "pg" { print $11 }'; }
# pool_idle: idle Postgres servers the pool keeps (legitimately: pool_size per worker).
pool_idle() { console "SHOW POOLS" | awk '$1 == "pg" { print $4 }'; }
# clients_left: clients switchyard still counts on both routes (SHOW STATS column 2).
clients_left() { console "SHOW STATS" | awk '$1 == "pg" || $1 == "redis" { n += $2 } END { print n + 0 }'; }

# open_clients KIND PORT: idle_clients.py for KIND on fifos; sets FD_W[KIND], FD_R[KIND].
declare -A FD_W=() FD_R=()
open_clients() {
	local kind=$1 d=$BENCH_DIR/clients-$1 w r
	rm -rf "$d"
	mkdir -p "$d"
	mkfifo "$d/in" "$d/out"
	/usr/bin/python3 "$REPO/bench/idle_clients.py" 127.0.0.1 "$2" 0 "$kind" <"$d/in" >"$d/out" 2>"$d/err" &
	bench_track "clients-$kind" $!
	exec {w}>"$d/in" {r}<"$d/out"
	FD_W[$kind]=$w
	FD_R[$kind]=$r
	read -r -t 30 line <&"$r" || die "idle_clients.py $kind did not start: $(cat "$d/err")"
}
# ask KIND LINE: send LINE, print the answer.
ask() {
	local line
	echo "$2" >&"${FD_W[$1]}"
	read -r -t 300 line <&"${FD_R[$1]}" || line="timeout"
	echo "$line"
}
close_clients() {
	local w=${FD_W[$1]} r=${FD_R[$1]}
	echo quit >&"$w"
	exec {w}>&- {r}<&-
	wait "${BENCH_PIDS[clients-$1]}" 2>/dev/null || true
	unset "BENCH_PIDS[clients-$1]"
}

DAT=$BENCH_OUT/idle_rss.dat
{
	echo "# switchyard RSS against idle clients, $(date -u +%Y-%m-%d), $(nproc) CPUs"
	echo "# build clients pg redis rss_kb [after]"
} >"$DAT"
declare -A BASE=() PEAK=() AFTER=() PEAKN=()

# measure NAME BIN [GLOBALS]
measure() {
	local name=$1 i pg=0 rd=0 kpg kr a b rss
	start_sy "$name" "$2" "${3:-}"
	probe_redis "$sy_r" >/dev/null
	"$PG_BIN/psql" -qXAt -h 127.0.0.1 -p "$sy_pg" -U postgres postgres -c "SELECT 1" >/dev/null
	BASE[$name]=$(rss_kb "$SY_PID")
	cp "/proc/$SY_PID/smaps" "$BENCH_DIR/$name-base.smaps"
	echo "$name 0 0 0 ${BASE[$name]}" >>"$DAT"
	log "$name pid $SY_PID: base RSS ${BASE[$name]} kB"
	open_clients "pg:postgres" "$sy_pg"
	open_clients redis "$sy_r"
	for ((i = 1; i <= IDLE_STEPS; i++)); do
		kpg=$((IDLE_PG * i / IDLE_STEPS - pg))
		kr=$((IDLE_REDIS * i / IDLE_STEPS - rd))
		a=$(ask "pg:postgres" "open $kpg")
		b=$(ask redis "open $kr")
		pg=$((pg + $(sed -n 's/.* open=\([0-9]*\).*/\1/p' <<<"$a")))
		rd=$((rd + $(sed -n 's/.* open=\([0-9]*\).*/\1/p' <<<"$b")))
		rss=$(rss_kb "$SY_PID")
		echo "$name $((pg + rd)) $pg $rd $rss" >>"$DAT"
		log "$name: $pg pg + $rd redis idle clients: RSS $rss kB (pg: $a; redis: $b)"
	done
	if [ -n "$(released)" ] && ((pg > 0)); then
		# By the clock: under load one SHOW POOLS takes a good part of a second, and 1,200
		# tries took 3 to 8 minutes instead of 120 s.
		local until=$((SECONDS + 120))
		while ((SECONDS < until)) && (($(released) < pg)); do
			sleep 0.1
		done
		sleep 3   # three sweeps: the one after the closes trims
		log "$name: $(released) of $pg pg clients released: RSS $rss kB before, $(rss_kb "$SY_PID") kB after"
		rss=$(rss_kb "$SY_PID")
		echo "$name $((pg + rd)) $pg $rd $rss released" >>"$DAT"
	fi
	PEAK[$name]=$rss
	cp "/proc/$SY_PID/smaps" "$BENCH_DIR/$name-peak.smaps"
	if [ -n "${IDLE_AT_PEAK:-}" ]; then SY_PID=$SY_PID bash -c "$IDLE_AT_PEAK" || true; fi
	PEAKN[$name]="$pg pg + $rd redis"
	close_clients "pg:postgres"
	close_clients redis
	for ((i = 0; i < 300; i++)); do
		(($(clients_left) == 0)) && break
		sleep 0.1
	done
	sleep 3   # three 1 s sweeps: the one after the burst trims
	AFTER[$name]=$(rss_kb "$SY_PID")
	cp "/proc/$SY_PID/smaps" "$BENCH_DIR/$name-after.smaps"   # BENCH_KEEP=1: where RSS stayed
	echo "$name 0 0 0 ${AFTER[$name]} after" >>"$DAT"
	log "$name: all left ($(clients_left) counted): RSS ${AFTER[$name]} kB; pg servers kept idle: $(pool_idle)"
	if [ -n "${IDLE_AT_AFTER:-}" ]; then SY_PID=$SY_PID bash -c "$IDLE_AT_AFTER" || true; fi
	if [ -n "${IDLE_POOL_WAIT:-}" ] && [ -n "$(pool_idle)" ]; then
		# The pool's idle servers are kept on purpose (server_idle_timeout, 600 s by default;
		# set a short one with IDLE_CONF): once it closed them, what is left of the burst.
		local until=$((SECONDS + IDLE_POOL_WAIT))
		while ((SECONDS < until)) && (($(pool_idle) > 0)); do
			sleep 0.5
		done
		sleep 3   # three sweeps: the one after the closes trims
		local ap
		ap=$(rss_kb "$SY_PID")
		echo "$name 0 0 0 $ap after_pool" >>"$DAT"
		log "$name: the pool's idle servers closed ($(pool_idle) left): RSS $ap kB, $(ratio "$ap" "${BASE[$name]}") of base"
	fi
	kill -TERM "$SY_PID"
	wait "$SY_PID" 2>/dev/null || true
	unset "BENCH_PIDS[$name]"
}

measure switchyard "$SWITCHYARD_BIN" "server_release_delay = ${IDLE_RELEASE_DELAY:-2}
${IDLE_CONF:-}"
NAMES=(switchyard)
if [ -n "${SWITCHYARD_BASELINE_BIN:-}" ]; then
	measure sy-base "$SWITCHYARD_BASELINE_BIN"
	NAMES+=(sy-base)
fi

echo
echo "Idle clients: switchyard RSS (VmRSS), workers auto, $(nproc) CPUs, $(date -u +%Y-%m-%d)"
F='%-11s | %9s | %-22s | %9s | %12s | %9s | %12s\n'
printf "$F" build "base kB" "idle clients" "peak kB" "kB / client" "after kB" "after/base"
printf '%s\n' "------------|-----------|------------------------|-----------|--------------|-----------|-------------"
for t in "${NAMES[@]}"; do
	n=$(awk '{ print $1 + $4 }' <<<"${PEAKN[$t]}")
	printf "$F" "$t" "${BASE[$t]}" "${PEAKN[$t]}" "${PEAK[$t]}" \
		"$(awk -v p="${PEAK[$t]}" -v b="${BASE[$t]}" -v n="$n" 'BEGIN { printf "%.1f", n ? (p - b) / n : 0 }')" \
		"${AFTER[$t]}" "$(ratio "${AFTER[$t]}" "${BASE[$t]}")"
done
log "data: $DAT"
exit 0
