#!/bin/bash
# bench/switch_bench.sh - what a hot switchover costs a running application.
#
#   bench/switch_bench.sh            (BENCH_SECONDS per phase, default 20; SWITCHES, default 10)
#
# Starts two Postgres clusters (builtin and external, both with the pgbench schema) and two
# Redis servers, and switchyard in front with one pg route and one redis route. For each
# protocol it runs the same load twice through switchyard: once without switches (baseline)
# and once while the console switches the route builtin <-> external SWITCHES times, spread
# over the run. It reports:
#   - the hold of each switch (how long sessions waited; from SWITCH's hold_ms column):
#     median and worst,
#   - the whole switch (precheck excluded, new upstreams opened, sessions moved): median,
#   - p99 latency without and with switches, and the difference,
#   - failed transactions / errors (must be 0).
# Load: pgbench -c 16 -j 2 (TPC-B-like, prepared) and redis-benchmark -c 50 -t set,get.
# Nothing here is a pass/fail test; numbers vary with the machine's load, compare within a run.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-20}
SWITCHES=${SWITCHES:-10}
bench_init switch

switchyard_usable || die "$SWITCHYARD_BIN missing: run make first"
PG_BIN=$(pg_bin_dir)

free_port pg_a
free_port pg_b
start_postgres "$BENCH_DIR/pg-a/data" "$pg_a"
start_postgres "$BENCH_DIR/pg-b/data" "$pg_b"
for p in $pg_a $pg_b; do
	"$PG_BIN/psql" -qX -h 127.0.0.1 -p "$p" -U postgres -c "CREATE DATABASE sourcegraph" >/dev/null
	"$PG_BIN/pgbench" -q -i -s 4 -h 127.0.0.1 -p "$p" -U postgres sourcegraph >/dev/null 2>&1
done
free_port r_a
free_port r_b
for p in $r_a $r_b; do
	redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir "$BENCH_DIR" \
		>"$BENCH_DIR/redis-$p.log" 2>&1 &
	bench_track "redis-$p" $!
	wait_port "$p" 10 $! || die "redis did not start"
done

free_port sy_pg
free_port sy_r
mkdir -p "$BENCH_DIR/sy"
cp "$SWITCHYARD_BIN" "$BENCH_DIR/sy/switchyard"
cat >"$BENCH_DIR/sy/switchyard.conf" <<EOF
[switchyard]
metrics_listen = off
log_level = warn
drain_timeout = 30
[listener pg]
protocol = postgres
listen = 127.0.0.1:$sy_pg
[route pg]
listener = pg
databases = sourcegraph
default = true
builtin = "host=127.0.0.1 port=$pg_a user=postgres sslmode=disable"
active = builtin
[listener redis]
protocol = redis
listen = 127.0.0.1:$sy_r
[route redis]
listener = redis
builtin = 127.0.0.1:$r_a
external_env = REDIS_ENDPOINT
active = builtin
EOF
switchyard_env_args
env "${SY_ENV_ARGS[@]}" PGHOST=127.0.0.1 PGPORT="$pg_b" PGUSER=postgres PGSSLMODE=disable \
	REDIS_ENDPOINT="127.0.0.1:$r_b" \
	"$BENCH_DIR/sy/switchyard" --config "$BENCH_DIR/sy/switchyard.conf" >"$BENCH_DIR/sy/switchyard.log" 2>&1 &
SY_PID=$!
bench_track switchyard "$SY_PID"
wait_port "$sy_pg" 10 "$SY_PID" || die "switchyard did not start: $(tail -n 3 "$BENCH_DIR/sy/switchyard.log")"

console() {
	"$PG_BIN/psql" -qXAt -F ' ' -h 127.0.0.1 -p "$sy_pg" -U postgres switchyard -c "$1"
}

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
