#!/usr/bin/env bash
# bench/run.sh: tokend against a bare net/http server, side by side.
#
# Builds tokend and the baseline, loads a database of TOKENS tokens
# (default 1,000,000), starts both servers on loopback, and drives each with
# the same wrk load (CONNECTIONS connections, DURATION per run) in ROUNDS
# interleaved rounds: the baseline, GET /auth/tokens:read, GET /api/v1/user.
# Prints req/s, p50/p99 latency and server CPU time per request for every
# run, then the medians and their ratios to the baseline.
#
#   bench/run.sh                      # the figures in BENCHMARKS.md
#   TOKENS=100000 ROUNDS=1 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TOKENS="${TOKENS:-1000000}"
SAMPLE="${SAMPLE:-10000}"          # distinct tokens the load draws from
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
TOKEND_PORT=18181
BASE_PORT=18182

if ! command -v wrk >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi

work="$(mktemp -d)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "building…"
go build -o "$work/tokend" .
go build -o "$work/baseline" ./bench/baseline

echo "loading $TOKENS tokens…"
TOKEND_LOAD_DB="$work/bench.db" TOKEND_LOAD_SECRETS="$work/secrets.txt" TOKEND_LOAD_TOKENS="$TOKENS" \
	go test -count=1 -run '^TestBulkLoad$' -v -timeout 30m . | grep -E 'loaded|FAIL' || true
test -s "$work/secrets.txt"
shuf -n "$SAMPLE" "$work/secrets.txt" >"$work/sample.txt"

"$work/tokend" serve -db "$work/bench.db" -addr "127.0.0.1:$TOKEND_PORT" -log-level warn &
pids+=($!)
tokend_pid=$!
"$work/baseline" -addr "127.0.0.1:$BASE_PORT" &
pids+=($!)
base_pid=$!
for port in $TOKEND_PORT $BASE_PORT; do
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
		sleep 0.1
	done
done

# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"

# to_ms VALUE: wrk's latency ("812.00us", "1.23ms", "1.01s") in milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
		printf "%.3f", n
	}'
}

results="$work/results.txt"
: >"$results"
run() { # run NAME PORT PATH PID
	local name="$1" port="$2" path="$3" pid="$4" before after out reqs rps p50 p99 cpu
	before="$(cpu_ticks "$pid")"
	out="$(TOKENS_FILE="$work/sample.txt" BENCH_PATH="$path" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
		--latency -s bench/tokens.lua "http://127.0.0.1:$port")"
	after="$(cpu_ticks "$pid")"
	reqs="$(echo "$out" | awk '/requests in/ {print $1}')"
	rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
	p50="$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")"
	p99="$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")"
	cpu="$(awk -v t="$((after - before))" -v hz="$hz" -v r="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / r}')"
	if echo "$out" | grep -q 'Non-2xx'; then
		echo "$name: some answers were not 2xx:"
		echo "$out"
		exit 1
	fi
	printf '%-10s %12s req/s  p50 %8s ms  p99 %8s ms  %7s µs CPU/req\n' "$name" "$rps" "$p50" "$p99" "$cpu"
	echo "$name $rps $p50 $p99 $cpu" >>"$results"
}

for r in $(seq "$ROUNDS"); do
	echo "round $r"
	run bare "$BASE_PORT" / "$base_pid"
	run auth "$TOKEND_PORT" /auth/tokens:read "$tokend_pid"
	run user "$TOKEND_PORT" /api/v1/user "$tokend_pid"
done

median() { # median NAME COLUMN
	awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$results" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
echo
echo "medians of $ROUNDS rounds, $TOKENS tokens, $CONNECTIONS connections, $DURATION each:"
printf '%-10s %12s %10s %10s %12s %10s %12s\n' target req/s p50-ms p99-ms CPU-us/req "x bare" "p99 x bare"
bare_rps="$(median bare 2)"
bare_p99="$(median bare 4)"
for name in bare auth user; do
	rps="$(median "$name" 2)"
	p99="$(median "$name" 4)"
	printf '%-10s %12s %10s %10s %12s %10s %12s\n' "$name" "$rps" "$(median "$name" 3)" "$p99" "$(median "$name" 5)" \
		"$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN {printf "%.2f", a / b}')" \
		"$(awk -v a="$p99" -v b="$bare_p99" 'BEGIN {printf "%.2f", a / b}')"
done
