#!/bin/bash
# bench/instr_bench.sh - switchyard's own instructions per request, counted by callgrind.
#
#   bench/instr_bench.sh [BIN...]        (default: build/switchyard)
#
# The timed benches cannot see a change of a few percent in switchyard's own code: on this
# shared 2-CPU machine their rounds spread by 10% and more, and the virtual machine has no
# hardware counters (perf stat reports instructions "not supported"). Valgrind's callgrind
# counts the user-space instructions each build executes, the same within about 3% between
# runs of one build. It counts nothing in the kernel (the system calls and wakeups, which
# are most of a hop's cost: compare their numbers with strace -c -f).
#
# Each build runs at one worker loop under callgrind, with instrumentation switched on
# (callgrind_control -i on) only for the measured run, after a warm-up:
#   redis-p16  redis-benchmark -n INSTR_REQUESTS -c 50 -P 16 -t get,set   (default 100000)
#   redis      the same, unpipelined
#   pg         pgbench -n -S -c 8 -j 2 -t INSTR_TX (default 3000 per client), persistent
#              connections; the 8 connections' startups are in the count (about 1% of it)
# and the result is the instructions per request (per transaction for pg), with the top
# functions when INSTR_TOP=N. INSTR_WORKLOADS picks ("redis-p16 redis pg").
#
# Nothing here is timed, so it may run beside other work; it takes about 20 s a build and
# workload (valgrind slows switchyard about 50 times).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
	die "valgrind is not installed (scripts/install-deps.sh installs it)"
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(build/switchyard)
read -r -a WORKLOADS <<<"${INSTR_WORKLOADS:-redis-p16 redis pg}"
REQUESTS=${INSTR_REQUESTS:-100000}
TX=${INSTR_TX:-3000}

bench_init instr
need_pg=0 need_redis=0
for w in "${WORKLOADS[@]}"; do
	case $w in
	pg) need_pg=1 ;;
	redis | redis-p16) need_redis=1 ;;
	*) die "unknown workload $w (redis-p16, redis, pg)" ;;
	esac
done
if [ $need_redis = 1 ]; then start_redis_server redis; fi
if [ $need_pg = 1 ]; then
	PG_BIN=$(pg_bin_dir)
	free_port PG_PORT
	start_postgres "$BENCH_DIR/pg" "$PG_PORT"
	"$PG_BIN/pgbench" -i -q -s 2 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >"$BENCH_DIR/pgbench-init.log" 2>&1 ||
		die "pgbench -i failed: $(tail -n 2 "$BENCH_DIR/pgbench-init.log")"
fi

conf() { # conf FILE PORT WORKLOAD
	printf '[switchyard]\nlog_level = warn\nmetrics_listen = off\nworkers = 1\n\n' >"$1"
	if [ "$3" = pg ]; then
		printf '[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:%s\n\n[route pg]\nlistener = pg\n' "$2" >>"$1"
		printf 'databases = postgres\ndefault = true\nbuiltin = "host=127.0.0.1 port=%s sslmode=disable"\n' "$PG_PORT" >>"$1"
	else
		conf_redis_route "$2" "$REDIS_PORT" >>"$1"
	fi
}

load() { # load PORT WORKLOAD WARMUP(0|1)
	local n=$REQUESTS t=$TX p=16
	[ "$3" = 1 ] && n=20000 t=200
	case $2 in
	redis) redis-benchmark -h 127.0.0.1 -p "$1" -n "$n" -c 50 -t get,set -q >/dev/null ;;
	redis-p16) redis-benchmark -h 127.0.0.1 -p "$1" -n "$n" -c 50 -P "$p" -t get,set -q >/dev/null ;;
	pg) "$PG_BIN/pgbench" -n -S -c 8 -j 2 -t "$t" -h 127.0.0.1 -p "$1" -U postgres postgres >/dev/null 2>&1 ;;
	esac
}

echo "switchyard user-space instructions per request (callgrind, one loop), $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-12s %12s  %s\n' workload "instr/req" build
k=0
for w in "${WORKLOADS[@]}"; do
	for bin in "${BINS[@]}"; do
		d=$BENCH_DIR/run$k
		k=$((k + 1))
		mkdir -p "$d"
		free_port port
		conf "$d/sy.conf" "$port" "$w"
		valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" --dump-instr=no --instr-atstart=no \
			"$bin" --config "$d/sy.conf" >"$d/valgrind.log" 2>&1 &
		vp=$!
		bench_track "sy$k" "$vp"
		wait_port "$port" 60 "$vp" || die "$bin did not start: $(tail -n 3 "$d/valgrind.log")"
		load "$port" "$w" 1
		callgrind_control -i on "$vp" >/dev/null 2>&1
		load "$port" "$w" 0
		callgrind_control -i off "$vp" >/dev/null 2>&1
		callgrind_control -d "$vp" >/dev/null 2>&1   # the dump: cg.out.1
		kill -TERM "$vp"
		wait "$vp" || true
		total=$(callgrind_annotate "$d/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
		n=$((2 * REQUESTS))            # redis-benchmark runs -n GETs, then -n SETs
		[ "$w" = pg ] && n=$((8 * TX))  # 8 clients, -t each
		printf '%-12s %12s  %s\n' "$w" "$(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.0f", t / n }')" "$bin"
		if [ -n "${INSTR_TOP:-}" ]; then
			callgrind_annotate "$d/cg.out.1" 2>/dev/null | sed -n '/file:function/,$p' | sed -n "3,$((INSTR_TOP + 2))p"
		fi
	done
done
