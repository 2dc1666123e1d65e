#!/bin/bash
# bench/plot.sh - the pictures of the last bench run, with gnuplot (Debian gnuplot-nox).
#
#   bench/plot.sh            reads bench/out/*.dat, writes bench/out/*.png
#
# Reads what the bench scripts wrote (BENCH_OUT, default bench/out):
#   pg.dat        bench/pg_bench.sh     target workload tps ratio cpu_per_100k
#   redis.dat     bench/redis_bench.sh  target workload rps ratio cpu_per_100k (+ redis-L)
#   idle_rss.dat  bench/idle_bench.sh   build clients pg redis rss_kb [after]
# and writes, for each input that exists:
#   throughput.png  throughput as a ratio to direct, per workload and target
#   cpu.png         CPU seconds per 100k requests: the proxies', and direct's server's own
#   idle_rss.png    switchyard's RSS against idle connections, and after they left
# A missing value ("n/a") leaves a gap. Nothing is measured here.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

command -v gnuplot >/dev/null || die "gnuplot not found (run scripts/install-deps.sh as root)"
OUT=$BENCH_OUT
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sy-plot.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
TARGETS="direct switchyard pgbouncer haproxy nutcracker floor"

# "run of DATE" from the first data file's first comment, and the machine.
stamp() {
	local f
	for f in "$@"; do
		[ -f "$f" ] && { sed -n '1s/.*\([0-9]\{4\}-[0-9][0-9]-[0-9][0-9]\).*/run of \1/p' "$f"; return; }
	done
}
# (No "_" in it: gnuplot's enhanced text would make a subscript.)
MACHINE="$(uname -m | tr _ -), $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"

# matrix COLUMN FILE...: rows = workloads in order of appearance, columns = TARGETS, cells
# = COLUMN of the data lines ("-" when missing); a header line names the columns.
matrix() {
	local col=$1
	shift
	awk -v col="$col" -v targets="$TARGETS" '
		/^#/ || NF < col { next }
		!($2 in seen) { seen[$2] = 1; order[++n] = $2 }
		{ v[$2, $1] = $col }
		END {
			nt = split(targets, t, " ")
			printf "workload"
			for (j = 1; j <= nt; j++) printf " %s", t[j] == "nutcracker" ? "twemproxy" : t[j]
			printf "\n"
			for (i = 1; i <= n; i++) {
				printf "%s", order[i]
				for (j = 1; j <= nt; j++) {
					x = v[order[i], t[j]]
					printf " %s", (x == "" || x == "n/a" || x ~ /^\(/) ? "-" : x
				}
				printf "\n"
			}
		}' "$@"
}

DATA=()
for f in "$OUT/pg.dat" "$OUT/redis.dat"; do
	[ -f "$f" ] && DATA+=("$f")
done

# Workload labels for the x axis.
label() {
	sed -e 's/^pg-A /"pgbench -S -c 8" /' -e 's/^pg-B /"pgbench -S -C -c 4" /' \
		-e 's/^redis-A /"redis -c 50 get,set" /' -e 's/^redis-B /"redis -c 50 -P 16" /' \
		-e '/^redis-L /d'
}

histogram() {   # histogram MATRIX PNG TITLE YLABEL [EXTRA]
	gnuplot <<-EOF
		set terminal pngcairo size 1000,520 font "sans,10"
		set output "$2"
		set title "$3\n{/*0.8 $(stamp "${DATA[@]}"); $MACHINE}"
		set ylabel "$4"
		set style data histograms
		set style histogram clustered gap 1
		set style fill solid 0.8 border -1
		set boxwidth 0.9
		set datafile missing "-"
		set key top right
		set grid ytics
		set yrange [0:*]
		$5
		plot for [i=2:$(($(wc -w <<<"$TARGETS") + 1))] "$1" using i:xtic(1) title columnheader(i)
	EOF
	log "wrote $2"
}

if [ ${#DATA[@]} -gt 0 ]; then
	matrix 4 "${DATA[@]}" | label >"$TMP/ratio.dat"
	histogram "$TMP/ratio.dat" "$OUT/throughput.png" "Throughput as a ratio to direct (median of rounds)" \
		"ratio to direct (log scale: 0.5 and 2 are as far from 1)" \
		"set logscale y 2; set yrange [0.125:*]; set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb 'black'"
	matrix 5 "${DATA[@]}" | label >"$TMP/cpu.dat"
	# direct's CPU is its server's own (postgres, redis-server): for scale.
	sed -i '1s/ direct / direct(server) /' "$TMP/cpu.dat"
	# The axis starts a decade below the least value: gnuplot's own choice is the decade at or
	# below it, and a bar exactly on a decade (0.10) would have no height.
	low=$(awk 'NR > 1 { for (i = 2; i <= NF; i++) if ($i != "-" && $i > 0 && (m == "" || $i < m)) m = $i }
		END { print m == "" ? 0.01 : 10 ^ (int(log(m) / log(10) + 10) - 11) }' "$TMP/cpu.dat")
	histogram "$TMP/cpu.dat" "$OUT/cpu.png" "CPU seconds per 100k requests (direct: the server itself)" \
		"CPU s / 100k requests (log scale)" "set logscale y; set yrange [$low:*]"
fi

if [ -f "$OUT/idle_rss.dat" ]; then
	F=$OUT/idle_rss.dat
	builds=$(awk '!/^#/ { print $1 }' "$F" | awk '!s[$0]++' | tr '\n' ' ')
	plots=()
	i=1
	for b in $builds; do
		awk -v b="$b" '$1 == b && $6 != "after" && $6 != "after_pool"' "$F" >"$TMP/rss-$b.dat"
		awk -v b="$b" '$1 == b && $6 == "after"' "$F" >"$TMP/after-$b.dat"
		plots+=("\"$TMP/rss-$b.dat\" using 2:(\$5/1024) with linespoints lw 2 pt 7 lc $i title \"$b\"")
		plots+=("\"$TMP/after-$b.dat\" using 2:(\$5/1024) with points pt 6 ps 2 lc $i title \"$b after all left\"")
		i=$((i + 1))
	done
	gnuplot <<-EOF
		set terminal pngcairo size 1000,520 font "sans,10"
		set output "$OUT/idle_rss.png"
		set title "switchyard RSS against idle clients (Postgres after ReadyForQuery, Redis after one PING)\n{/*0.8 $(stamp "$F"); $MACHINE}"
		set xlabel "idle clients (Postgres + Redis)"
		set ylabel "RSS (MiB)"
		set grid
		set key top center box opaque
		set xrange [0:10500]
		set yrange [0:*]
		set object circle at 10000, 64 size char 0.6 fc rgb "red" fs solid
		set label "target: 10,000 clients in 64 MiB" at 10000, 64 right offset -1.5, 0 tc rgb "red"
		plot $(IFS=,; echo "${plots[*]}")
	EOF
	log "wrote $OUT/idle_rss.png"
fi
exit 0
