#!/bin/bash
# bench/redis_bench.sh - Redis: direct vs switchyard vs haproxy (tcp) vs twemproxy (nutcracker).
#
#   bench/redis_bench.sh
#   BENCH_SECONDS=20 bench/redis_bench.sh
#
# Environment: BENCH_SECONDS (default 10): request counts are sized so that each workload
# takes about half that long direct (a short direct calibration run measures the rate;
# proxied runs take longer);
# BENCH_REQUESTS / BENCH_PIPELINE_REQUESTS / BENCH_LATENCY_REQUESTS fix the counts instead;
# BENCH_ROUNDS (3), SWITCHYARD_BIN (build/switchyard), SWITCHYARD_WORKERS, SWITCHYARD_ALSO_WORKERS,
# SWITCHYARD_BASELINE_BIN (another build as "sy-base", e.g. the previous main)
# (a second switchyard, "sy-Nw", with N workers), HAPROXY_NBTHREAD,
# BENCH_WORKLOADS ("A B L", or a subset), BENCH_KEEP=1.
#
# One throwaway redis-server (no persistence) on a free 127.0.0.1 port, and in front of it:
#   haproxy    mode tcp
#   nutcracker one server pool, redis: true (it multiplexes clients onto one server connection)
#   switchyard one redis listener, one route, built-in target = the server ("n/a" if it does
#              not build or start)
#
# Workloads (redis-benchmark, --csv), BENCH_ROUNDS rounds interleaved across targets:
#   A  -c 50 -t get,set           GET and SET rps; "ratio" compares the combined rate
#                                 (2N requests over the time of both tests) with direct's
#   B  -c 50 -P 16 -t get,set     the same, pipelined 16 deep
#   L  -c 1 -t get                p50 latency; "+p50" is the median p50 minus direct's,
#                                 "+avg" the same for the mean (redis-benchmark's histogram
#                                 buckets make p50 coarse at these latencies: 8-16 us steps)
# CPU/100k: the proxy's CPU seconds (utime + stime from /proc/PID/stat) per 100k requests of
# A or B. For the direct row the column shows redis-server's own CPU, for scale.
# Everything shares the host's cores: compare within one run.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

for tool in redis-server redis-benchmark redis-cli haproxy nutcracker; do
	command -v "$tool" >/dev/null || die "$tool not found (run scripts/install-deps.sh as root)"
done

bench_init redis
log "temp dir $BENCH_DIR, ~${BENCH_SECONDS}s per workload, $BENCH_ROUNDS rounds"

# ---- redis-server -------------------------------------------------------------------------
start_redis_server redis
add_target direct "$REDIS_PORT"

# ---- nutcracker ---------------------------------------------------------------------------
start_nutcracker() {
	local d=$BENCH_DIR/nutcracker port sport pid
	mkdir -p "$d"
	free_port port
	free_port sport
	cat >"$d/nutcracker.yml" <<-EOF
		bench:
		  listen: 127.0.0.1:$port
		  hash: fnv1a_64
		  distribution: ketama
		  redis: true
		  preconnect: true
		  auto_eject_hosts: false
		  server_connections: 1
		  servers:
		   - 127.0.0.1:$REDIS_PORT:1
	EOF
	nutcracker -c "$d/nutcracker.yml" -o "$d/nutcracker.log" -s "$sport" -a 127.0.0.1 \
		-p "$d/nutcracker.pid" >"$d/stderr.log" 2>&1 &
	pid=$!
	bench_track nutcracker "$pid"
	if wait_port "$port" 10 "$pid"; then
		add_target nutcracker "$port" "$pid"
		log "nutcracker pid $pid on 127.0.0.1:$port"
	else
		log "nutcracker did not start: $(tail -n 3 "$d/nutcracker.log" "$d/stderr.log" 2>/dev/null)"
	fi
}

# ---- switchyard ---------------------------------------------------------------------------
write_switchyard_conf() {
	cat >"$1" <<-EOF
		[switchyard]
		log_level = warn
		metrics_listen = off

	EOF
	conf_redis_route "$2" "$REDIS_PORT" >>"$1"
}

start_switchyard write_switchyard_conf probe_redis
start_switchyard_extra write_switchyard_conf probe_redis
start_haproxy "$REDIS_PORT"
start_nutcracker
[ -n "$SWITCHYARD_NA" ] && log "switchyard: n/a ($SWITCHYARD_NA)"

# ---- sizing -------------------------------------------------------------------------------
# size N_PROBE TESTS ARGS...: requests for ~BENCH_SECONDS/2 per workload of TESTS tests
# at the direct rate, rounded to 10k.
size() {
	local n=$1 tests=$2 out=$BENCH_DIR/calibrate.csv rps
	shift 2
	redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -n "$n" "$@" -t get --csv >"$out" 2>&1
	rps=$(csv_field "$out" GET 2)
	awk -v r="${rps:-0}" -v s="$BENCH_SECONDS" -v k="$tests" \
		'BEGIN { n = int(r * s / 2 / k / 10000 + 0.5) * 10000; if (n < 10000) n = 10000; print n }'
}
N_A=${BENCH_REQUESTS:-$(size 100000 2 -c 50)}
N_B=${BENCH_PIPELINE_REQUESTS:-$(size 500000 2 -c 50 -P 16)}
N_L=${BENCH_LATENCY_REQUESTS:-$(size 10000 1 -c 1)}
log "requests: A $N_A per test, B $N_B per test, L $N_L"

# ---- runs ---------------------------------------------------------------------------------
read -r -a WORKLOADS <<<"${BENCH_WORKLOADS:-A B L}"
declare -A WL_ARGS=([A]="-c 50 -t get,set" [B]="-c 50 -P 16 -t get,set" [L]="-c 1 -t get")
declare -A WL_N=([A]=$N_A [B]=$N_B [L]=$N_L)
declare -A GET=() SET=() COMB=() CPU=() P50=() AVG=() SRVCPU=()   # "target:workload" -> per-round values

# run_one TARGET WORKLOAD ROUND
run_one() {
	local t=$1 w=$2 r=$3 n out g s comb=n/a p50=n/a avg=n/a c0=0 c1=0 r0 r1 cpu=n/a srv=n/a
	n=${WL_N[$w]}
	out=$BENCH_DIR/run-$t-$w-$r.csv
	if [ -n "${PID[$t]:-}" ]; then c0=$(cpu_ticks "${PID[$t]}"); fi
	r0=$(cpu_ticks "$REDIS_PID")
	# shellcheck disable=SC2086
	redis-benchmark -h 127.0.0.1 -p "${PORT[$t]}" -n "$n" ${WL_ARGS[$w]} --csv --precision 3 >"$out" 2>&1 || true
	r1=$(cpu_ticks "$REDIS_PID")
	if [ -n "${PID[$t]:-}" ]; then c1=$(cpu_ticks "${PID[$t]}"); fi
	g=$(csv_field "$out" GET 2); g=${g:-n/a}
	s=$(csv_field "$out" SET 2); s=${s:-n/a}
	if [ "$w" = L ]; then
		p50=$(csv_field "$out" GET 5); p50=${p50:-n/a}
		avg=$(csv_field "$out" GET 3); avg=${avg:-n/a}
		P50[$t:$w]+="$p50 "; AVG[$t:$w]+="$avg "
		log "round $r  $t  redis-benchmark -n $n ${WL_ARGS[$w]}: GET $(fmt "$g") rps, p50 $p50 ms, avg $avg ms"
		[ "$g" = n/a ] && log "  $t failed: $(grep -v '^"' "$out" | head -n 2 | tr '\n' ' ')"
		return 0
	fi
	if [ "$g" != n/a ] && [ "$s" != n/a ]; then
		# Both tests ran n requests: combined rate = 2n / (n/g + n/s).
		comb=$(awk -v g="$g" -v s="$s" 'BEGIN { printf "%.1f", 2 / (1 / g + 1 / s) }')
		if [ -n "${PID[$t]:-}" ]; then cpu=$(per100k $((c1 - c0)) $((2 * n))); fi
		srv=$(per100k $((r1 - r0)) $((2 * n)))
	else
		log "  $t failed: $(grep -v '^"' "$out" | head -n 2 | tr '\n' ' ')"
	fi
	GET[$t:$w]+="$g "; SET[$t:$w]+="$s "; COMB[$t:$w]+="$comb "; CPU[$t:$w]+="$cpu "
	SRVCPU[$t:$w]+="$srv "
	log "round $r  $t  redis-benchmark -n $n ${WL_ARGS[$w]}: GET $(fmt "$g") SET $(fmt "$s") rps, proxy CPU/100k $cpu, redis-server CPU/100k $srv"
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
m() { median ${1:-}; }   # median of a space-separated list (word splitting intended)
echo
echo "Redis: redis-benchmark, median of $BENCH_ROUNDS, requests per test A $N_A / B $N_B / L $N_L, $(nproc) CPUs, $(date -u +%Y-%m-%d)"
echo "A = -c 50 -t get,set   B = -c 50 -P 16 -t get,set   L = -c 1 -t get"
echo "ratio = combined GET+SET rate vs direct; CPU/100k = proxy CPU s per 100k requests (direct: redis-server's own)"
F='%-11s | %9s | %9s | %5s | %8s | %10s | %10s | %5s | %8s | %7s | %7s | %7s\n'
printf "$F" target "A GET" "A SET" ratio CPU/100k "B GET" "B SET" ratio CPU/100k "L p50ms" "+p50ms" "+avg ms"
printf '%s\n' "------------|-----------|-----------|-------|----------|------------|------------|-------|----------|---------|---------|--------"
dA=$(m "${COMB[direct:A]:-}"); dB=$(m "${COMB[direct:B]:-}")
dL=$(m "${P50[direct:L]:-}"); dV=$(m "${AVG[direct:L]:-}")
diff3() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else printf "%+.3f", a - b }'; }
for t in direct switchyard $SY_EXTRA haproxy nutcracker; do
	if [ -z "${PORT[$t]:-}" ]; then
		printf "$F" "$t" n/a n/a n/a n/a n/a n/a n/a n/a n/a n/a n/a
		continue
	fi
	cA=$(m "${CPU[$t:A]:-}"); cB=$(m "${CPU[$t:B]:-}")
	if [ "$t" = direct ]; then
		cA="($(m "${SRVCPU[$t:A]:-}"))"; cB="($(m "${SRVCPU[$t:B]:-}"))"
	fi
	p=$(m "${P50[$t:L]:-}"); v=$(m "${AVG[$t:L]:-}")
	printf "$F" "$t" \
		"$(fmt "$(m "${GET[$t:A]:-}")")" "$(fmt "$(m "${SET[$t:A]:-}")")" "$(ratio "$(m "${COMB[$t:A]:-}")" "$dA")" "$cA" \
		"$(fmt "$(m "${GET[$t:B]:-}")")" "$(fmt "$(m "${SET[$t:B]:-}")")" "$(ratio "$(m "${COMB[$t:B]:-}")" "$dB")" "$cB" \
		"$(fmt "$p" 3)" "$(diff3 "$p" "$dL")" "$(diff3 "$v" "$dV")"
done
[ -n "$SWITCHYARD_NA" ] && echo "switchyard: n/a ($SWITCHYARD_NA)"

# ---- data for bench/plot.sh -----------------------------------------------------------------
# One line per target and workload A/B: median combined GET+SET rps, its ratio to direct,
# proxy CPU s per 100k requests (direct: redis-server's own); L: p50 ms and +p50 ms.
mkdir -p "$BENCH_OUT"
{
	echo "# Redis redis-benchmark medians of $BENCH_ROUNDS, $(nproc) CPUs, $(date -u +%Y-%m-%d)"
	echo "# target workload rps ratio cpu_per_100k   (workload redis-L: target L p50_ms added_p50_ms)"
	for t in direct switchyard $SY_EXTRA haproxy nutcracker; do
		[ -n "${PORT[$t]:-}" ] || continue
		for w in A B; do
			[ -n "${COMB[$t:$w]:-}" ] || continue
			c=$(m "${CPU[$t:$w]:-}")
			[ "$t" = direct ] && c=$(m "${SRVCPU[$t:$w]:-}")
			echo "$t redis-$w $(fmt "$(m "${COMB[$t:$w]}")" 1) $(ratio "$(m "${COMB[$t:$w]}")" "$(m "${COMB[direct:$w]:-}")") $c"
		done
		if [ -n "${P50[$t:L]:-}" ]; then
			p=$(m "${P50[$t:L]}")
			echo "$t redis-L $p $(diff3 "$p" "$dL")"
		fi
	done
} >"$BENCH_OUT/redis.dat"
log "data: $BENCH_OUT/redis.dat"
exit 0
