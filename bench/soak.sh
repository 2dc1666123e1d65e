#!/bin/bash
# bench/soak.sh - mixed Postgres and Redis load through switchyard, with switches, for a
# while: does anything leak or fail over time?
#
#   bench/soak.sh                     SOAK_SECONDS (default 600), a switch every
#                                     SOAK_SWITCH_EVERY seconds (default 30), alternating
#                                     the pg and the redis route between builtin and external
#
# It starts two Postgres clusters (builtin and external, both with the pgbench schema), two
# Redis servers, and switchyard in front (route pg, route redis; default workers). Load for
# the whole run:
#   - pgbench -c 8 -j 2 (TPC-B-like) for SOAK_SECONDS;
#   - redis-benchmark -c 50 -t set,get,lpush,lpop, in back-to-back runs;
#   - a connect/disconnect churn: psql and redis-cli, one each per second.
# After a warm-up (SOAK_WARMUP seconds, default 20) and at the end it reads switchyard's
# RSS (VmRSS) and open fds from /proc, and the routes' error counters (SHOW STATS). It prints
# both, the switches made, and the failures seen by the clients (pgbench failed
# transactions, redis-benchmark errors, churn failures). All of them must stay flat or 0.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_SWITCH_EVERY=${SOAK_SWITCH_EVERY:-30}
SOAK_WARMUP=${SOAK_WARMUP:-20}
bench_init soak
switchyard_usable || die "$SWITCHYARD_BIN missing: run make first"
PG_BIN=$(pg_bin_dir)

free_port pg_a
free_port pg_b
start_postgres "$BENCH_DIR/pg-a/data" "$pg_a"
start_postgres "$BENCH_DIR/pg-b/data" "$pg_b"
for p in "$pg_a" "$pg_b"; do
	"$PG_BIN/createdb" -h 127.0.0.1 -p "$p" -U postgres sourcegraph
	"$PG_BIN/pgbench" -q -i -s 4 -h 127.0.0.1 -p "$p" -U postgres sourcegraph >"$BENCH_DIR/init-$p.log" 2>&1
done
start_redis_server redis-a; r_a=$REDIS_PORT
start_redis_server redis-b; r_b=$REDIS_PORT

start_switch_proxy "$pg_a" PGHOST=127.0.0.1 PGPORT="$pg_b" PGUSER=postgres PGSSLMODE=disable
log "switchyard pid $SY_PID; pg builtin :$pg_a external :$pg_b; redis builtin :$r_a external :$r_b"

console() {
	"$PG_BIN/psql" -qXAt -F ' ' -h 127.0.0.1 -p "$sy_pg" -U postgres switchyard -c "$1"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SY_PID/status"; }
nfds() { ls "/proc/$SY_PID/fd" | wc -l; }
errors() { console "SHOW STATS" | awk '{ s = s $1 "=" $7 " " } END { print s }'; }

deadline=$(($(date +%s) + SOAK_SECONDS))

# Load.
"$PG_BIN/pgbench" -n -c 8 -j 2 -T "$SOAK_SECONDS" -h 127.0.0.1 -p "$sy_pg" -U postgres sourcegraph \
	>"$BENCH_DIR/pgbench.log" 2>&1 &
pgbench_pid=$!
(
	runs=0 errs=0
	while (($(date +%s) < deadline)); do
		out=$(redis-benchmark -h 127.0.0.1 -p "$sy_r" -c 50 -n 100000 -t set,get,lpush,lpop -q 2>&1) || errs=$((errs + 1))
		if grep -qi error <<<"$out"; then errs=$((errs + 1)); fi
		runs=$((runs + 1))
	done
	echo "$runs $errs" >"$BENCH_DIR/redis.result"
) &
redis_pid=$!
(
	ok=0 bad=0
	while (($(date +%s) < deadline)); do
		if "$PG_BIN/psql" -qXAt -h 127.0.0.1 -p "$sy_pg" -U postgres sourcegraph -c "SELECT 1" >/dev/null 2>&1; then
			ok=$((ok + 1))
		else
			bad=$((bad + 1))
		fi
		if [ "$(redis-cli -h 127.0.0.1 -p "$sy_r" ping 2>/dev/null)" = PONG ]; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
		sleep 1
	done
	echo "$ok $bad" >"$BENCH_DIR/churn.result"
) &
churn_pid=$!

sleep "$SOAK_WARMUP"
rss0=$(rss_kb) fds0=$(nfds) err0=$(errors)
log "after warm-up: rss ${rss0} kB, fds $fds0, errors $err0"

# Switches, alternating routes and targets, until the end.
switches=0 switch_fail=0
declare -A where=([pg]=builtin [redis]=builtin)
route=pg
while (($(date +%s) + SOAK_SWITCH_EVERY < deadline)); do
	sleep "$SOAK_SWITCH_EVERY"
	to=external
	[ "${where[$route]}" = external ] && to=builtin
	if console "SWITCH $route TO $to" >"$BENCH_DIR/switch.last" 2>&1; then
		where[$route]=$to
		switches=$((switches + 1))
	else
		switch_fail=$((switch_fail + 1))
		log "SWITCH $route TO $to failed: $(tail -n 2 "$BENCH_DIR/switch.last")"
	fi
	[ $route = pg ] && route=redis || route=pg
done

wait "$pgbench_pid" || true
wait "$redis_pid" "$churn_pid" || true
rss1=$(rss_kb) fds1=$(nfds) err1=$(errors)
tx=$(awk '/number of transactions actually processed/ { print $NF }' "$BENCH_DIR/pgbench.log")
failed=$(awk '/number of failed transactions/ { print $5 }' "$BENCH_DIR/pgbench.log")
aborted=$(grep -c "aborted\|error" "$BENCH_DIR/pgbench.log" || true)
read -r rruns rerrs <"$BENCH_DIR/redis.result"
read -r cok cbad <"$BENCH_DIR/churn.result"

printf '\nsoak: %ds, a switch every %ds (%s)\n' "$SOAK_SECONDS" "$SOAK_SWITCH_EVERY" "$(date -u +%F)"
printf '%-28s %14s %14s\n' "" start end
printf '%-28s %14s %14s\n' "switchyard RSS (kB)" "$rss0" "$rss1"
printf '%-28s %14s %14s\n' "switchyard open fds" "$fds0" "$fds1"
printf '%-28s %s -> %s\n' "errors per route (SHOW STATS)" "$err0" "$err1"
printf 'switches: %d made, %d refused or failed\n' "$switches" "$switch_fail"
printf 'pgbench: %s transactions, %s failed, %s error/abort lines\n' "${tx:-?}" "${failed:-0}" "$aborted"
printf 'redis-benchmark: %s runs, %s with errors\n' "$rruns" "$rerrs"
printf 'churn: %s connects ok, %s failed\n' "$cok" "$cbad"
