#!/usr/bin/env bash
# bench/run.sh: tokend against net/http ceilings, side by side.
#
# Builds tokend and the ceilings: bench/baseline ("bare"), a net/http
# server answering 204 and nothing else; bench/constants ("const"), a
# net/http server with tokend's timeouts that answers every request with
# tokend's own answer to a valid GET /auth (204 and the same headers,
# captured from tokend at start-up) from constants, verifying nothing; and
# "const5", the same with only the forward-auth headers (Cache-Control and
# X-Auth-*), not the security headers tokend sends on every answer. Loads
# a database of TOKENS tokens (default 1,000,000), starts the servers on
# loopback, and drives each with the same wrk load (CONNECTIONS
# connections, DURATION per run) in ROUNDS interleaved rounds: bare,
# const, const5, GET /auth/tokens:read, GET /api/v1/user.
# Prints req/s, p50/p99 latency and server CPU time per request for every
# run, then the medians and their ratios to the ceilings: the median of
# each round's ratio, so that load which moves between rounds cancels.
#
# tokend runs at its default configuration: no flag is given beyond -db
# and -addr. TOKEND_FLAGS adds flags (TOKEND_FLAGS='-access-log all'), and
# tokend reads its TOKEND_* environment variables as ever
# (TOKEND_ACCESS_LOG=all bench/run.sh). VARIANTS adds more tokend
# processes, each on a copy of the database and measured on /auth in the
# same rounds: VARIANTS='all=-access-log all;off=-access-log off'.
#
# tokend's log (stderr) goes to LOG_TO: "file" (default, a file in the
# work directory; its line count is printed at the end), "null", or
# "journal" (systemd-cat runs tokend with its standard output and error
# on a stream to journald, as systemd runs a service; journald must run).
# BENCH_DIR keeps the loaded database there and reuses it next time.
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
WARMUP="${WARMUP:-3s}"             # unmeasured load on each tokend first
TOKEND_FLAGS="${TOKEND_FLAGS:-}"
VARIANTS="${VARIANTS:-}"
LOG_TO="${LOG_TO:-file}"
BASE_PORT=18182
CONST_PORT=18183
CONST5_PORT=18184
TOKEND_PORT=18190 # variants take the ports after it

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
go build -o "$work/constants" ./bench/constants

data="${BENCH_DIR:-$work}"
mkdir -p "$data"
if [ ! -s "$data/secrets.txt" ] || [ ! -s "$data/bench.db" ]; then
	echo "loading $TOKENS tokens…"
	rm -f "$data/bench.db" "$data/secrets.txt"
	TOKEND_LOAD_DB="$data/bench.db" TOKEND_LOAD_SECRETS="$data/secrets.txt" TOKEND_LOAD_TOKENS="$TOKENS" \
		go test -count=1 -run '^TestBulkLoad$' -v -timeout 30m . | grep -E 'loaded|FAIL' || true
else
	TOKENS="$(wc -l <"$data/secrets.txt")"
	echo "reusing $data/bench.db ($TOKENS tokens)"
fi
test -s "$data/secrets.txt"
shuf -n "$SAMPLE" "$data/secrets.txt" >"$work/sample.txt"

# start_tokend NAME PORT FLAGS...: starts tokend on a copy of the database
# (bbolt lets one process open a file), its log going to LOG_TO.
start_tokend() {
	local name="$1" port="$2"
	shift 2
	cp "$data/bench.db" "$work/$name.db"
	local cmd=("$work/tokend" serve -db "$work/$name.db" -addr "127.0.0.1:$port" "$@")
	case "$LOG_TO" in
	file) "${cmd[@]}" 2>"$work/$name.log" & ;;
	null) "${cmd[@]}" 2>/dev/null & ;;
	journal) systemd-cat -t "tokend-$name" "${cmd[@]}" & ;; # execs tokend on a journal stream, as systemd does
	*) echo "LOG_TO: $LOG_TO is not file, null or journal" >&2; exit 1 ;;
	esac
	pids+=($!)
	eval "pid_$name=$!"
}

# shellcheck disable=SC2086 # TOKEND_FLAGS is a list of flags
start_tokend tokend "$TOKEND_PORT" $TOKEND_FLAGS
variant_names=()
port=$TOKEND_PORT
if [ -n "$VARIANTS" ]; then
	IFS=';' read -ra specs <<<"$VARIANTS"
	for spec in "${specs[@]}"; do
		port=$((port + 1))
		name="${spec%%=*}"
		# shellcheck disable=SC2086
		start_tokend "$name" "$port" ${spec#*=}
		variant_names+=("$name")
		eval "port_$name=$port"
	done
fi
"$work/baseline" -addr "127.0.0.1:$BASE_PORT" &
pids+=($!)
pid_bare=$!
for p in $(seq "$TOKEND_PORT" "$port") $BASE_PORT; do
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$p/healthz" && break
		sleep 0.1
	done
done

# The constants server answers with tokend's own answer to a valid token.
curl -s -o /dev/null -D "$work/answer.txt" -H "Authorization: Bearer $(head -1 "$work/sample.txt")" \
	"http://127.0.0.1:$TOKEND_PORT/auth/tokens:read"
head -1 "$work/answer.txt" | grep -q ' 204' || { echo "tokend did not answer 204:"; cat "$work/answer.txt"; exit 1; }
tail -n +2 "$work/answer.txt" | grep -iv '^date:' | grep ':' >"$work/headers.txt"
"$work/constants" -addr "127.0.0.1:$CONST_PORT" -headers "$work/headers.txt" &
pids+=($!)
pid_const=$!
# const5 sends only the forward-auth contract's own five headers
# (Cache-Control and X-Auth-*), not the security headers tokend sends on
# every answer: the difference is what those cost.
grep -iE '^(cache-control|x-auth-)' "$work/headers.txt" >"$work/headers5.txt"
"$work/constants" -addr "127.0.0.1:$CONST5_PORT" -headers "$work/headers5.txt" &
pids+=($!)
pid_const5=$!
for p in $CONST_PORT $CONST5_PORT; do
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$p/" && break
		sleep 0.1
	done
done
echo "the answer both send:"
sed 's/^/  /' "$work/headers.txt"

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

# Warm each tokend up first, unmeasured, so that every token of the sample
# has been verified once and sits in the auth cache, as on a server that
# has been answering for a while.
for p in $(seq "$TOKEND_PORT" "$port"); do
	TOKENS_FILE="$work/sample.txt" BENCH_PATH=/auth/tokens:read wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" \
		-s bench/tokens.lua "http://127.0.0.1:$p" >/dev/null
done

for r in $(seq "$ROUNDS"); do
	echo "round $r (load average $(cut -d' ' -f1 /proc/loadavg))"
	run bare "$BASE_PORT" / "$pid_bare"
	run const "$CONST_PORT" /auth/tokens:read "$pid_const"
	run const5 "$CONST5_PORT" /auth/tokens:read "$pid_const5"
	run auth "$TOKEND_PORT" /auth/tokens:read "$pid_tokend"
	run user "$TOKEND_PORT" /api/v1/user "$pid_tokend"
	for v in "${variant_names[@]}"; do
		run "auth:$v" "$(eval echo "\$port_$v")" /auth/tokens:read "$(eval echo "\$pid_$v")"
	done
done

median() { # median NAME COLUMN
	awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$results" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
# ratio NAME BY COLUMN: NAME's median over BY's, each round's ratio first:
# the median of the per-round ratios, which cancels load that moves
# between rounds.
ratio() {
	paste <(awk -v n="$1" -v c="$3" '$1 == n {print $c}' "$results") <(awk -v n="$2" -v c="$3" '$1 == n {print $c}' "$results") |
		awk '{print $1 / $2}' | sort -g | awk '{a[NR] = $1} END {printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
echo
echo "medians of $ROUNDS rounds, $TOKENS tokens, $CONNECTIONS connections, $DURATION each, tokend flags: ${TOKEND_FLAGS:-(defaults)}, log to $LOG_TO:"
printf '%-10s %10s %7s %7s %7s %7s %8s %8s %9s\n' target req/s p50-ms p99-ms "x bare" "x const" "p99 x bare" CPU-us/req "CPU x const"
for name in bare const const5 auth user "${variant_names[@]/#/auth:}"; do
	[ -n "$name" ] || continue
	printf '%-10s %10s %7s %7s %7s %7s %8s %8s %9s\n' "$name" "$(median "$name" 2)" "$(median "$name" 3)" "$(median "$name" 4)" \
		"$(ratio "$name" bare 2)" "$(ratio "$name" const 2)" "$(ratio "$name" bare 4)" "$(median "$name" 5)" "$(ratio "$name" const 5)"
done
echo "(ratios: the median of each round's ratio; CPU: the server's own user and system time per request)"
if [ "$LOG_TO" = file ]; then
	echo
	for f in "$work"/*.log; do
		echo "$(basename "$f" .log) logged $(wc -l <"$f") lines, $(du -h "$f" | cut -f1)"
	done
fi
