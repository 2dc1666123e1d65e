#!/bin/bash
# bench/switch_bench.sh - what a hot switchover costs a running application.
#
#   bench/switch_bench.sh                   load mode (BENCH_SECONDS per phase, default 20;
#                                           SWITCHES, default 10)
#   BENCH_MODE=idle bench/switch_bench.sh   idle mode: how a switch scales with idle sessions
#                                           (IDLE_SESSIONS, default "500 1000 2000 4000";
#                                           SWITCHES per count, default 6)
#
# Load mode starts two Postgres clusters (builtin and external, both with the pgbench schema)
# and two Redis servers, and switchyard in front with one pg route and one redis route. For
# each protocol it runs the same load twice through switchyard: once without switches
# (baseline) and once while the console switches the route builtin <-> external SWITCHES
# times, spread over the run. It reports:
#   - the hold of each switch (how long sessions waited; from SWITCH's hold_ms column):
#     median and worst,
#   - the whole switch (precheck excluded, new upstreams opened, sessions moved): median,
#   - p99 latency without and with switches, and the difference,
#   - failed transactions / errors (must be 0).
# Load: pgbench -c 16 -j 2 (TPC-B-like, prepared) and redis-benchmark -c 50 -t set,get.
#
# Idle mode starts two Redis servers (builtin and external of one route) and switchyard with
# its default workers. For each count N it opens N Redis clients through switchyard
# (bench/idle_clients.py: each sends one PING, reads +PONG, then stays idle), switches the
# route builtin <-> external SWITCHES times, and after each switch has every client PING
# again. Per N it reports, median and worst over the switches:
#   - hold: how long sessions were held (SHOW STATS last_hold_ms, 0.1 ms steps; the same
#     value as hold_ms in the switch_done log line and SWITCH's reply),
#   - switch: the whole switch, precheck excluded (SHOW STATS last_switch_ms = duration_ms),
#   - wall: the console SWITCH command as a client sees it (psql start, precheck, switch),
#   - moved / closed sessions (sums), and failed: clients that did not answer PING after a
#     switch (closed, an error, or silent for 10 s; must be 0). Failed clients reconnect.
# It raises its own fd limit (ulimit -n) to what the largest N needs (3 per session in
# switchyard while a switch opens the new upstreams, one per client here and in Redis);
# counts that do not fit the hard limit are skipped with a message.
#
# Nothing here is a pass/fail test; numbers vary with the machine's load, compare within a run.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BENCH_MODE=${BENCH_MODE:-load}
case $BENCH_MODE in
load | idle) ;;
*) die "BENCH_MODE must be load or idle, not $BENCH_MODE" ;;
esac
bench_init "switch-$BENCH_MODE"

switchyard_usable || die "$SWITCHYARD_BIN missing: run make first"
PG_BIN=$(pg_bin_dir)

console() {
	"$PG_BIN/psql" -qXAt -F ' ' -h 127.0.0.1 -p "$sy_pg" -U postgres switchyard -c "$1"
}

# ---- idle mode ----------------------------------------------------------------------------
if [ "$BENCH_MODE" = idle ]; then
	SWITCHES=${SWITCHES:-6}
	read -r -a COUNTS <<<"${IDLE_SESSIONS:-500 1000 2000 4000}"
	max=0
	for n in "${COUNTS[@]}"; do ((n > max)) && max=$n; done
	# switchyard: client + old upstream + new upstream per session while a switch prepares.
	need=$((3 * max + 1000))
	if (($(ulimit -n) < need)); then
		ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
	fi
	fdmax=$(ulimit -n)
	log "fd limit $fdmax (largest count $max needs $need)"

	# A switch opens every session's new upstream at once: with Redis's default tcp-backlog
	# (511) a burst of 1000+ connects overflows the accept queue and the first switch to a
	# server pays a 1 s SYN retransmit. 4096 (= net.core.somaxconn here) keeps that out.
	start_redis_server redis-a --maxclients $((max + 200)) --tcp-backlog 4096; r_a=$REDIS_PORT
	start_redis_server redis-b --maxclients $((max + 200)) --tcp-backlog 4096; r_b=$REDIS_PORT

	free_port pg_dead   # nobody listens: the pg route only exists to carry the console
	start_switch_proxy "$pg_dead"
	log "switchyard pid $SY_PID, workers auto ($(nproc) CPUs), redis route builtin :$r_a, external :$r_b"

	now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }
	stat_col() {   # stat_col COLUMN: a SHOW STATS column of the redis route (9 = last_switch_ms, 10 = last_hold_ms)
		console "SHOW STATS" | awk -v c="$1" '$1 == "redis" { print $c }'
	}
	# wait_clients N: until the redis route has at most N clients (10 s at most).
	wait_clients() {
		local i c
		for ((i = 0; i < 100; i++)); do
			c=$(stat_col 2); c=${c:-999999}
			((c <= $1)) && return 0
			sleep 0.1
		done
		log "route redis still has $c clients"
	}

	declare -A HOLD=() DUR=() WALL=() MOVED=() CLOSED=() FAILED=()
	for n in "${COUNTS[@]}"; do
		if ((3 * n + 1000 > fdmax)); then
			log "skipping $n sessions: fd limit $fdmax"
			continue
		fi
		coproc IDLE { exec /usr/bin/python3 "$REPO/bench/idle_clients.py" 127.0.0.1 "$sy_r" "$n"; }
		bench_track idle-clients "$IDLE_PID"
		read -r -t 120 line <&"${IDLE[0]}" || die "idle_clients.py did not start $n clients"
		log "$n clients: $line"
		fail=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$line")
		FAILED[$n]=${fail:-$n}
		MOVED[$n]=0
		CLOSED[$n]=0
		for ((i = 0; i < SWITCHES; i++)); do
			if ((i % 2 == 0)); then to=external; else to=builtin; fi
			t0=$(now_ms)
			# columns: route from to precheck moved closed duration_ms hold_ms
			reply=$(console "SWITCH redis TO $to") || reply=
			t1=$(now_ms)
			read -r moved closed <<<"$(awk '{ print $5, $6 }' <<<"$reply")"
			hold=$(stat_col 10)
			dur=$(stat_col 9)
			echo ping >&"${IDLE[1]}"
			read -r -t 60 line <&"${IDLE[0]}" || line="ping ok=0 failed=$n"
			fail=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$line")
			HOLD[$n]+="$hold "
			DUR[$n]+="$dur "
			WALL[$n]+="$((t1 - t0)) "
			MOVED[$n]=$((MOVED[$n] + ${moved:-0}))
			CLOSED[$n]=$((CLOSED[$n] + ${closed:-0}))
			FAILED[$n]=$((FAILED[$n] + ${fail:-$n}))
			log "$n sessions, switch $((i + 1)) to $to: moved ${moved:-?} closed ${closed:-?}, hold $hold ms, switch $dur ms, wall $((t1 - t0)) ms; $line"
			[ -n "$reply" ] || log "  SWITCH failed: $(tail -n 2 "$BENCH_DIR/sy/switchyard.log" | tr '\n' ' ')"
			sleep 0.5
		done
		if ((SWITCHES % 2 == 1)); then console "SWITCH redis TO builtin" >/dev/null; fi
		echo quit >&"${IDLE[1]}"
		wait "$IDLE_PID" 2>/dev/null || true
		unset 'BENCH_PIDS[idle-clients]'
		wait_clients 0
	done

	worst() { printf '%s\n' $1 | sort -g | tail -n 1; }   # word splitting intended
	echo
	echo "Redis switch with idle sessions: $SWITCHES switches per count, workers auto, $(nproc) CPUs, $(date -u +%Y-%m-%d)"
	echo "hold = sessions held (last_hold_ms); switch = duration_ms (precheck excluded); wall = console SWITCH as psql sees it"
	F='%8s | %8s | %8s | %10s | %10s | %8s | %8s | %7s | %6s | %6s\n'
	printf "$F" sessions "hold med" "hold max" "switch med" "switch max" "wall med" "wall max" moved closed failed
	printf '%s\n' "---------|----------|----------|------------|------------|----------|----------|---------|--------|-------"
	for n in "${COUNTS[@]}"; do
		[ -n "${HOLD[$n]:-}" ] || { printf "$F" "$n" skipped - - - - - - - -; continue; }
		printf "$F" "$n" "$(fmt "$(median ${HOLD[$n]})" 1)" "$(fmt "$(worst "${HOLD[$n]}")" 1)" \
			"$(fmt "$(median ${DUR[$n]})" 1)" "$(fmt "$(worst "${DUR[$n]}")" 1)" \
			"$(fmt "$(median ${WALL[$n]})")" "$(fmt "$(worst "${WALL[$n]}")")" "${MOVED[$n]}" "${CLOSED[$n]}" "${FAILED[$n]}"
	done
	echo "(times in ms; moved/closed/failed: sums over the switches; failed includes the initial connect)"
	exit 0
fi

# ---- load mode ----------------------------------------------------------------------------
BENCH_SECONDS=${BENCH_SECONDS:-20}
SWITCHES=${SWITCHES:-10}

free_port pg_a
free_port pg_b
start_postgres "$BENCH_DIR/pg-a/data" "$pg_a"
start_postgres "$BENCH_DIR/pg-b/data" "$pg_b"
for p in $pg_a $pg_b; do
	"$PG_BIN/psql" -qX -h 127.0.0.1 -p "$p" -U postgres -c "CREATE DATABASE sourcegraph" >/dev/null
	"$PG_BIN/pgbench" -q -i -s 4 -h 127.0.0.1 -p "$p" -U postgres sourcegraph >/dev/null 2>&1
done
start_redis_server redis-a; r_a=$REDIS_PORT
start_redis_server redis-b; r_b=$REDIS_PORT

start_switch_proxy "$pg_a" PGHOST=127.0.0.1 PGPORT="$pg_b" PGUSER=postgres PGSSLMODE=disable

# switch_loop ROUTE: SWITCHES switches spread over the run; "hold_ms duration_ms" per line.
switch_loop() {
	local route=$1 i to gap
	gap=$(awk -v s="$BENCH_SECONDS" -v n="$SWITCHES" 'BEGIN { printf "%.2f", (s - 4) / n }')
	sleep 2
	for ((i = 0; i < SWITCHES; i++)); do
		if ((i % 2 == 0)); then to=external; else to=builtin; fi
		# columns: route from to precheck moved closed duration_ms hold_ms
		console "SWITCH $route TO $to" | awk '{ print $8, $7, $5, $6 }'
		sleep "$gap"
	done
	# end where we started
	if ((SWITCHES % 2 == 1)); then console "SWITCH $route TO builtin" >/dev/null; fi
}

# p99 of pgbench's per-transaction log (latency in µs is field 3), in ms.
pg_p99() {
	cat "$@" | awk '{ print $3 }' | sort -n |
		awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else printf "%.1f", a[int(NR * 0.99)] / 1000 }'
}

pg_run() {   # pg_run TAG: pgbench through switchyard, per-transaction log in DIR/TAG
	local d=$BENCH_DIR/pgbench-$1
	mkdir -p "$d"
	(cd "$d" && "$PG_BIN/pgbench" -n -M prepared -c 16 -j 2 -T "$BENCH_SECONDS" -l \
		-h 127.0.0.1 -p "$sy_pg" -U postgres sourcegraph >"$d/out.txt" 2>&1) || true
}

log "postgres: baseline, ${BENCH_SECONDS}s of pgbench -c 16"
pg_run base
log "postgres: the same with $SWITCHES switches"
switch_loop pg >"$BENCH_DIR/pg-switches.txt" &
loop=$!
pg_run switch
wait "$loop"

redis_p99() {   # redis_p99 CSV: worst p99 over the tests, in ms
	awk -F'","' 'NR > 1 { gsub(/"/, "", $7); if ($7 + 0 > m) m = $7 + 0 } END { printf "%.1f", m }' "$1"
}
redis_run() {
	local n
	n=$(awk -v s="$BENCH_SECONDS" 'BEGIN { printf "%d", s * 15000 }')
	redis-benchmark -h 127.0.0.1 -p "$sy_r" -c 50 -n "$n" -t set,get --csv >"$BENCH_DIR/redis-$1.csv" 2>"$BENCH_DIR/redis-$1.err" || true
}
log "redis: baseline, redis-benchmark -c 50 -t set,get"
redis_run base
log "redis: the same with $SWITCHES switches"
switch_loop redis >"$BENCH_DIR/redis-switches.txt" &
loop=$!
redis_run switch
wait "$loop"

summary() {   # summary FILE: "median_hold worst_hold median_duration moved closed"
	local holds durs
	holds=$(awk '{ print $1 }' "$1" | tr '\n' ' ')
	durs=$(awk '{ print $2 }' "$1" | tr '\n' ' ')
	# shellcheck disable=SC2086
	printf '%s %s %s %s %s\n' "$(median $holds)" "$(printf '%s\n' $holds | sort -g | tail -n 1)" \
		"$(median $durs)" "$(awk '{ s += $3 } END { print s + 0 }' "$1")" "$(awk '{ s += $4 } END { print s + 0 }' "$1")"
}

read -r ph pw pd pm pc <<<"$(summary "$BENCH_DIR/pg-switches.txt")"
read -r rh rw rd rm rc <<<"$(summary "$BENCH_DIR/redis-switches.txt")"
pb=$(pg_p99 "$BENCH_DIR"/pgbench-base/pgbench_log.*)
ps=$(pg_p99 "$BENCH_DIR"/pgbench-switch/pgbench_log.*)
pf=$({ grep -h 'number of failed' "$BENCH_DIR"/pgbench-switch/out.txt || true; } | awk '{ print $5 }')
rb=$(redis_p99 "$BENCH_DIR/redis-base.csv")
rs=$(redis_p99 "$BENCH_DIR/redis-switch.csv")
re=$({ grep -ci error "$BENCH_DIR/redis-switch.err" "$BENCH_DIR/redis-switch.csv" || true; } | awk -F: '{ s += $2 } END { print s + 0 }')

printf '\n%-8s %9s %10s %10s %8s %7s %9s %9s %10s %8s\n' workload switches hold_med hold_max switch_med moved closed p99_base p99_switch failed
printf '%-8s %9s %8sms %8sms %8sms %7s %7s %7sms %8sms %8s\n' pgbench "$SWITCHES" "$ph" "$pw" "$pd" "$pm" "$pc" "$pb" "$ps" "${pf:-?}"
printf '%-8s %9s %8sms %8sms %8sms %7s %7s %7sms %8sms %8s\n' redis "$SWITCHES" "$rh" "$rw" "$rd" "$rm" "$rc" "$rb" "$rs" "$re"
printf '\nadded p99: pgbench %s ms, redis %s ms (switch runs minus baseline, same machine, same run)\n' \
	"$(awk -v a="$ps" -v b="$pb" 'BEGIN { printf "%.1f", a - b }')" "$(awk -v a="$rs" -v b="$rb" 'BEGIN { printf "%.1f", a - b }')"
