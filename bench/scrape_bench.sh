#!/bin/bash
# bench/scrape_bench.sh - what monitoring costs the data path: Redis throughput through
# switchyard with and without a scraper polling /metrics and the console.
#
#   bench/scrape_bench.sh
#   BENCH_SECONDS=20 BENCH_ROUNDS=5 bench/scrape_bench.sh
#
# Environment: BENCH_SECONDS (default 10): each redis-benchmark run lasts about that long (a
# short calibration run through switchyard sizes the request count), or BENCH_REQUESTS fixes
# the requests per test; BENCH_ROUNDS (3); SCRAPE_RATE (50 per second, each of the two);
# SWITCHYARD_BIN (build/switchyard); BENCH_KEEP=1.
#
# One throwaway redis-server and switchyard in front of it (default workers, metrics_listen
# on a free port; a pg listener and route exist only to carry the console, its builtin
# points at a port nobody listens on). The workload is redis-benchmark -c 50 -t get,set
# through switchyard, run BENCH_ROUNDS times plain and BENCH_ROUNDS times "scraped",
# interleaved (plain first in odd rounds, scraped first in even ones). In a scraped run
# bench/scraper.py fetches GET /metrics and runs SHOW CLIENTS on the console, each
# SCRAPE_RATE times a second, for the whole run, and counts its own failures.
#
# Reported, medians over the rounds: GET and SET rps, the combined rate (2N requests over
# the time of both tests), the ratio scraped / plain, and the proxy's CPU seconds per 100k
# requests (utime + stime of switchyard from /proc/PID/stat around the workload; in scraped
# runs it includes serving the scraper). Scraper requests and failures are summed over the
# scraped runs. The scraper, redis-benchmark, redis-server and switchyard share the host's
# cores: the ratio also contains the scraper's own CPU, compare CPU/100k for the proxy's.
# "scraper CPU" is the scraper process's utime + stime over the workload, as a share of one
# CPU (median over the scraped runs): what it takes from the cores the others share.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SCRAPE_RATE=${SCRAPE_RATE:-50}
for tool in redis-server redis-benchmark redis-cli; do
	command -v "$tool" >/dev/null || die "$tool not found (run scripts/install-deps.sh as root)"
done
switchyard_usable || die "$SWITCHYARD_BIN missing: run make first"

bench_init scrape
log "temp dir $BENCH_DIR, ~${BENCH_SECONDS}s per run, $BENCH_ROUNDS rounds, scraper $SCRAPE_RATE/s"

start_redis_server redis

free_port METRICS_PORT
free_port CONSOLE_PORT
free_port PG_DEAD
write_switchyard_conf() {
	cat >"$1" <<-EOF
		[switchyard]
		log_level = warn
		metrics_listen = 127.0.0.1:$METRICS_PORT

		[listener pg]
		protocol = postgres
		listen = 127.0.0.1:$CONSOLE_PORT

		[route pg]
		listener = pg
		default = true
		builtin = "host=127.0.0.1 port=$PG_DEAD user=postgres sslmode=disable"

	EOF
	conf_redis_route "$2" "$REDIS_PORT" >>"$1"
}
start_switchyard write_switchyard_conf probe_redis
[ -n "$SWITCHYARD_NA" ] && die "switchyard: $SWITCHYARD_NA"
SY_PID=${PID[switchyard]}
SY_PORT=${PORT[switchyard]}
wait_port "$METRICS_PORT" 10 "$SY_PID" || die "no metrics endpoint on :$METRICS_PORT"

if [ -n "${BENCH_REQUESTS:-}" ]; then
	N=$BENCH_REQUESTS
else
	redis-benchmark -h 127.0.0.1 -p "$SY_PORT" -c 50 -n 50000 -t get --csv >"$BENCH_DIR/calibrate.csv" 2>&1
	N=$(awk -v r="$(csv_field "$BENCH_DIR/calibrate.csv" GET 2)" -v s="$BENCH_SECONDS" \
		'BEGIN { n = int(r * s / 2 / 10000 + 0.5) * 10000; if (n < 10000) n = 10000; print n }')
fi
log "switchyard pid $SY_PID, redis on :$SY_PORT, metrics :$METRICS_PORT, console :$CONSOLE_PORT; $N requests per test"

declare -A GET=() SET=() COMB=() CPU=()
SCPU=        # the scraper's share of one CPU in each scraped run
SCRAPES=()   # one scraper summary line per scraped run

# scraper_field LINE KEY: the value of KEY=... in a scraper summary line.
scraper_field() { sed -n "s/.*\\b$2=\\([^ ]*\\).*/\\1/p" <<<"$1"; }

# run_one MODE ROUND: MODE is plain or scraped.
run_one() {
	local mode=$1 r=$2 out=$BENCH_DIR/run-$1-$2.csv spid= line= c0 c1 g s comb=n/a cpu=n/a
	local sc0=0 sc1=0 t0 t1
	if [ "$mode" = scraped ]; then
		/usr/bin/python3 "$REPO/bench/scraper.py" "127.0.0.1:$METRICS_PORT" "127.0.0.1:$CONSOLE_PORT" "$SCRAPE_RATE" \
			>"$BENCH_DIR/scraper-$r.out" 2>&1 &
		spid=$!
		bench_track scraper "$spid"
		sleep 0.5   # connected and at its rate before the workload starts
	fi
	[ -n "$spid" ] && sc0=$(cpu_ticks "$spid")
	c0=$(cpu_ticks "$SY_PID")
	t0=$(date +%s.%N)
	redis-benchmark -h 127.0.0.1 -p "$SY_PORT" -c 50 -n "$N" -t get,set --csv >"$out" 2>&1 || true
	c1=$(cpu_ticks "$SY_PID")
	t1=$(date +%s.%N)
	if [ -n "$spid" ]; then
		sc1=$(cpu_ticks "$spid")
		SCPU+="$(awk -v t=$((sc1 - sc0)) -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" \
			'BEGIN { if (b > a) printf "%.1f", 100 * t / hz / (b - a); else print "n/a" }') "
		kill -TERM "$spid"
		wait "$spid" || true
		unset 'BENCH_PIDS[scraper]'
		line=$(grep '^scraper ' "$BENCH_DIR/scraper-$r.out" || true)
		[ -n "$line" ] || line="scraper missing: $(tail -n 2 "$BENCH_DIR/scraper-$r.out" | tr '\n' ' ')"
		SCRAPES+=("$line")
	fi
	g=$(csv_field "$out" GET 2); g=${g:-n/a}
	s=$(csv_field "$out" SET 2); s=${s:-n/a}
	if [ "$g" != n/a ] && [ "$s" != n/a ]; then
		comb=$(awk -v g="$g" -v s="$s" 'BEGIN { printf "%.1f", 2 / (1 / g + 1 / s) }')
		cpu=$(per100k $((c1 - c0)) $((2 * N)))
	else
		log "  $mode run failed: $(grep -v '^"' "$out" | head -n 2 | tr '\n' ' ')"
	fi
	GET[$mode]+="$g "; SET[$mode]+="$s "; COMB[$mode]+="$comb "; CPU[$mode]+="$cpu "
	log "round $r  $mode: GET $(fmt "$g") SET $(fmt "$s") rps, proxy CPU/100k $cpu${line:+; $line}"
}

for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	if ((r % 2)); then
		run_one plain "$r"; run_one scraped "$r"
	else
		run_one scraped "$r"; run_one plain "$r"
	fi
done

# Scraper totals over the scraped runs (a missing summary line counts as one failure).
m_ok=0 m_fail=0 c_ok=0 c_fail=0 secs=0 errs=
for line in "${SCRAPES[@]}"; do
	if [ "${line#scraper seconds=}" = "$line" ]; then
		m_fail=$((m_fail + 1)); errs+="$line; "
		continue
	fi
	m_ok=$((m_ok + $(scraper_field "$line" metrics_ok))); m_fail=$((m_fail + $(scraper_field "$line" metrics_failed)))
	c_ok=$((c_ok + $(scraper_field "$line" console_ok))); c_fail=$((c_fail + $(scraper_field "$line" console_failed)))
	secs=$(awk -v a="$secs" -v b="$(scraper_field "$line" seconds)" 'BEGIN { print a + b }')
	e=$(scraper_field "$line" first_error)
	[ "$e" != none ] && errs+="$e; "
done

m() { median ${1:-}; }   # median of a space-separated list (word splitting intended)
echo
echo "Redis through switchyard while scraped: redis-benchmark -c 50 -n $N -t get,set, median of $BENCH_ROUNDS, $(nproc) CPUs, $(date -u +%Y-%m-%d)"
echo "scraped = GET /metrics and console SHOW CLIENTS, $SCRAPE_RATE/s each, during the whole run; CPU/100k = switchyard CPU s per 100k requests"
F='%-8s | %9s | %9s | %9s | %5s | %8s\n'
printf "$F" run GET SET combined ratio CPU/100k
printf '%s\n' "---------|-----------|-----------|-----------|-------|---------"
base=$(m "${COMB[plain]:-}")
for mode in plain scraped; do
	printf "$F" "$mode" "$(fmt "$(m "${GET[$mode]:-}")")" "$(fmt "$(m "${SET[$mode]:-}")")" \
		"$(fmt "$(m "${COMB[$mode]:-}")")" "$(ratio "$(m "${COMB[$mode]:-}")" "$base")" "$(fmt "$(m "${CPU[$mode]:-}")" 2)"
done
echo
per_s() { awk -v n="$1" -v s="$secs" 'BEGIN { if (s > 0) printf "%.1f", n / s; else print 0 }'; }
printf 'scraper: metrics %d ok, %d failed; console %d ok, %d failed; over %.0f s (%s/s and %s/s); scraper CPU %s%% of one CPU\n' \
	"$m_ok" "$m_fail" "$c_ok" "$c_fail" "$secs" "$(per_s "$m_ok")" "$(per_s "$c_ok")" "$(m "$SCPU")"
[ -n "$errs" ] && echo "scraper errors (first per run): $errs"
exit 0
