#!/usr/bin/env bash
# l4.sh — L4 benchmark: gatehouse's plain TCP proxying side by side with
# HAProxy (mode tcp, nbthread 1) and nginx (stream, worker_processes 1), in one
# run on this machine, over loopback. Run from the repository root (`make bench`).
#
# Loads, each against every proxy in turn and once directly (no proxy):
#   stream    one STREAM_BYTES upload to a sink back-end: GB/s (1 GB = 1e9 bytes)
#             and the proxy's CPU-seconds per GB (utime+stime from /proc/PID/stat;
#             nginx: its worker)
#   connrate  CONN_WORKERS workers open sessions for CONN_SECONDS: connect, an
#             8-byte round trip with an echo back-end, close; sessions per second
#   idle      IDLE_CONNS sessions to the echo back-end, one round trip each, then
#             held idle: growth of the proxy's RSS (from /proc/PID/smaps_rollup,
#             nginx master+worker summed) divided by IDLE_CONNS
# The idle load runs first, on a freshly started proxy, so that no buffers left
# over from the other loads hide its cost. Clients and back-ends are separate
# processes (gatebench), each with its own open-file limit.
#
# Knobs (environment): STREAM_BYTES (2000000000), CONN_SECONDS (5),
# CONN_WORKERS (8), IDLE_CONNS (5000), IDLE_SETTLE (2, seconds), GATEHOUSE_GMP1
# (1: also run gatehouse with GOMAXPROCS=1; 0: don't), ROUNDS (3).
#
# The machine is shared, so every figure is the median of ROUNDS rounds, and
# each round runs every proxy in turn, so that a burst of other work hurts no
# single column.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STREAM_BYTES=${STREAM_BYTES:-2000000000}
CONN_SECONDS=${CONN_SECONDS:-5}
CONN_WORKERS=${CONN_WORKERS:-8}
IDLE_CONNS=${IDLE_CONNS:-5000}
IDLE_SETTLE=${IDLE_SETTLE:-2}
GATEHOUSE_GMP1=${GATEHOUSE_GMP1:-1}
ROUNDS=${ROUNDS:-3}
PATH=$PATH:/usr/sbin:/sbin
NGINX_STREAM_SO=/usr/lib/nginx/modules/ngx_stream_module.so

die() { log "l4.sh: $*"; exit 1; }

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$BENCH_DIR/.."
WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
STARTED=() # every process this script started, stopped on exit

# stop_pid ends one process: TERM, up to 5 s, then KILL.
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	local p
	local -a keep=()
	for p in "${STARTED[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	STARTED=("${keep[@]}")
}

trap cleanup EXIT
trap 'exit 130' INT TERM

# raise_nofile lifts the open-file limit as far as allowed; children inherit it.
raise_nofile() {
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	log "open-file limit: $(ulimit -n)"
}

# install_peers installs HAProxy and nginx's stream module if either is missing.
install_peers() {
	local nginx_ok=0
	if command -v nginx >/dev/null &&
		{ [[ -f $NGINX_STREAM_SO ]] || nginx -V 2>&1 | grep -q -- '--with-stream\b'; }; then
		nginx_ok=1
	fi
	if command -v haproxy >/dev/null && ((nginx_ok)); then
		return 0
	fi
	log "installing haproxy and nginx (stream module) ..."
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx-light libnginx-mod-stream >&2
}

# build compiles gatebench and gatehouse. Without a gatehouse binary the
# peers are still measured, and the run ends with a failure after the table.
build() {
	GB=$WORK/gatebench
	go build -o "$GB" ./bench/gatebench
	HAVE_GATEHOUSE=1
	if ! go build -o bin/gatehouse ./cmd/gatehouse; then
		log "l4.sh: gatehouse does not build: its columns stay empty"
		HAVE_GATEHOUSE=0
	fi
}

# start_backends starts the sink and echo back-ends on free loopback ports.
start_backends() {
	start_bg "$WORK/sink.out" "$GB" sink -listen 127.0.0.1:0
	SINK_PID=$BG_PID
	wait_line "$WORK/sink.out" '^LISTEN ' 10 "$SINK_PID" || die "sink did not start"
	start_bg "$WORK/echo.out" "$GB" echo -listen 127.0.0.1:0
	ECHO_PID=$BG_PID
	wait_line "$WORK/echo.out" '^LISTEN ' 10 "$ECHO_PID" || die "echo did not start"
	SINK_ADDR=$(awk '/^LISTEN /{print $2; exit}' "$WORK/sink.out")
	ECHO_ADDR=$(awk '/^LISTEN /{print $2; exit}' "$WORK/echo.out")
	local ports
	ports=$("$GB" freeport -n 2)
	SINK_PORT=$(sed -n 1p <<<"$ports")
	ECHO_PORT=$(sed -n 2p <<<"$ports")
	log "back-ends: sink $SINK_ADDR, echo $ECHO_ADDR; proxies listen on 127.0.0.1:$SINK_PORT (sink), :$ECHO_PORT (echo)"
}

# check_backends stops the run if a back-end has ended.
check_backends() {
	local b
	for b in sink echo; do
		local pid_var=${b^^}_PID
		kill -0 "${!pid_var}" 2>/dev/null && continue
		cat "$WORK/$b.out" >&2
		die "the $b back-end has ended"
	done
}

# ---- the proxies -----------------------------------------------------------

# write_configs writes each proxy's configuration: two listeners, one in front
# of the sink and one in front of the echo back-end, no logging of sessions.
write_configs() {
	cat >"$WORK/gatehouse.yaml" <<-YAML
		admin: {listen: "127.0.0.1:0"}
		log: {level: warn}
		backends:
		  sink: {address: "$SINK_ADDR"}
		  echo: {address: "$ECHO_ADDR"}
		listeners:
		  - name: bench-sink
		    protocol: tcp
		    listen: ["127.0.0.1:$SINK_PORT"]
		    backends: [sink]
		    health: {probe: tcp, interval: 10s}
		    timeouts: {connect: 2s, idle: 5m}
		  - name: bench-echo
		    protocol: tcp
		    listen: ["127.0.0.1:$ECHO_PORT"]
		    backends: [echo]
		    health: {probe: tcp, interval: 10s}
		    timeouts: {connect: 2s, idle: 5m}
	YAML
	# maxconn 8000 keeps HAProxy's computed socket need (2 per connection)
	# under the 20,000 open files a process may have here.
	cat >"$WORK/haproxy.cfg" <<-CFG
		global
		    nbthread 1
		    maxconn 8000
		defaults
		    mode tcp
		    maxconn 8000
		    timeout connect 2s
		    timeout client 5m
		    timeout server 5m
		frontend sink
		    bind 127.0.0.1:$SINK_PORT
		    default_backend sink
		backend sink
		    server sink $SINK_ADDR check inter 10s
		frontend echo
		    bind 127.0.0.1:$ECHO_PORT
		    default_backend echo
		backend echo
		    server echo $ECHO_ADDR check inter 10s
	CFG
	local load=""
	[[ -f $NGINX_STREAM_SO ]] && load="load_module $NGINX_STREAM_SO;"
	# proxy_half_close lets the sink's byte count travel back after the
	# client's end of stream, as it does through HAProxy and gatehouse.
	cat >"$WORK/nginx.conf" <<-CONF
		$load
		daemon off;
		master_process on;
		worker_processes 1;
		worker_rlimit_nofile 20000;
		pid $WORK/nginx.pid;
		error_log $WORK/nginx-error.log warn;
		events { worker_connections 16000; }
		stream {
		    proxy_connect_timeout 2s;
		    proxy_timeout 5m;
		    proxy_half_close on;
		    server { listen 127.0.0.1:$SINK_PORT; proxy_pass $SINK_ADDR; }
		    server { listen 127.0.0.1:$ECHO_PORT; proxy_pass $ECHO_ADDR; }
		}
	CONF
}

# proxies lists the columns to run, in order.
proxies() {
	echo direct
	if ((HAVE_GATEHOUSE)); then
		echo gatehouse
		((GATEHOUSE_GMP1)) && echo gatehouse-gmp1
	fi
	echo haproxy nginx
}

# start_proxy starts proxy $1 and sets PROXY_PID, MEM_PIDS (all its
# processes) and CPU_PIDS (those that move bytes: for nginx, the worker).
start_proxy() {
	local name=$1 log=$WORK/$1.log
	case $name in
	gatehouse) start_bg "$log" bin/gatehouse run -config "$WORK/gatehouse.yaml" ;;
	gatehouse-gmp1) start_bg "$log" env GOMAXPROCS=1 bin/gatehouse run -config "$WORK/gatehouse.yaml" ;;
	haproxy) start_bg "$log" haproxy -db -f "$WORK/haproxy.cfg" ;;
	nginx) start_bg "$log" nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" ;;
	*) die "unknown proxy $name" ;;
	esac
	PROXY_PID=$BG_PID
	wait_ready || { cat "$log" "$WORK/nginx-error.log" >&2 2>/dev/null || true; die "$name did not become ready"; }
	MEM_PIDS=("$PROXY_PID")
	CPU_PIDS=("$PROXY_PID")
	if [[ $name == nginx ]]; then
		mapfile -t CPU_PIDS < <(children "$PROXY_PID")
		((${#CPU_PIDS[@]} == 1)) || die "nginx: expected one worker, found ${#CPU_PIDS[@]}"
		MEM_PIDS+=("${CPU_PIDS[@]}")
	fi
}

# wait_ready waits (bounded) until both listen ports accept and one echo round
# trip goes through the proxy, so that the back-ends are known to be reachable.
wait_ready() {
	local i port
	for port in "$SINK_PORT" "$ECHO_PORT"; do
		for ((i = 0; ; i++)); do
			((i < 100)) || return 1
			kill -0 "$PROXY_PID" 2>/dev/null || return 1
			(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
			sleep 0.1
		done
	done
	for ((i = 0; i < 40; i++)); do
		"$GB" idle -target "127.0.0.1:$ECHO_PORT" -n 1 -hold 0s -timeout 1s >/dev/null 2>&1 && return 0
		sleep 0.25
	done
	return 1
}

# ---- measuring -------------------------------------------------------------

declare -A RES # RES[proxy:metric] = one figure per round, space-separated

# mem_kib prints the summed Rss and Pss (KiB) of the given pids.
mem_kib() {
	local pid
	for pid; do cat "/proc/$pid/smaps_rollup"; done |
		awk '/^Rss:/{r+=$2} /^Pss:/{p+=$2} END{print r+0, p+0}'
}

# load_idle holds IDLE_CONNS sessions through proxy $1 and records its memory
# growth per session.
load_idle() {
	local name=$1 before after out
	local -a m0 m1
	[[ $name == direct ]] && return 0
	before=$(mem_kib "${MEM_PIDS[@]}")
	start_bg "$WORK/idle.out" "$GB" idle -target "127.0.0.1:$ECHO_PORT" -n "$IDLE_CONNS" -hold 300s
	local idle_pid=$BG_PID
	if ! wait_line "$WORK/idle.out" '^READY ' 120 "$idle_pid"; then
		stop_pid "$idle_pid"
		record "$name" rss FAIL
		record "$name" pss FAIL
		return 0
	fi
	sleep "$IDLE_SETTLE"
	after=$(mem_kib "${MEM_PIDS[@]}")
	stop_pid "$idle_pid"
	out=$(cat "$WORK/idle.out")
	if [[ $(kv lost "$out") != 0 ]]; then
		log "$name: idle sessions were lost: $out"
		record "$name" rss FAIL
		record "$name" pss FAIL
		return 0
	fi
	read -r -a m0 <<<"$before"
	read -r -a m1 <<<"$after"
	set -- "${m0[@]}" "${m1[@]}" # Rss before, Pss before, Rss after, Pss after
	local rss pss
	rss=$(calc "$3" "$1" "(a-b)/$IDLE_CONNS" %.2f)
	pss=$(calc "$4" "$2" "(a-b)/$IDLE_CONNS" %.2f)
	record "$name" rss "$rss"
	record "$name" pss "$pss"
	log "$name: idle $IDLE_CONNS: Rss $1 -> $3 KiB, Pss $2 -> $4 KiB: $rss KiB/conn (Rss), $pss (Pss)"
}

# load_stream sends STREAM_BYTES through proxy $1 and records GB/s and the
# proxy's CPU-seconds per GB.
load_stream() {
	local name=$1 target c0=0 c1=0 out
	target=$(target_of "$name" sink)
	((${#CPU_PIDS[@]})) && c0=$(cpu_seconds "${CPU_PIDS[@]}")
	if ! out=$("$GB" stream -target "$target" -bytes "$STREAM_BYTES" 2>&1); then
		log "$name: stream failed: $out"
		record "$name" gbps FAIL
		return 0
	fi
	record "$name" gbps "$(kv gbps "$out")"
	if ((${#CPU_PIDS[@]})); then
		c1=$(cpu_seconds "${CPU_PIDS[@]}")
		record "$name" cpugb "$(calc "$c1" "$c0" "(a-b)/($STREAM_BYTES/1e9)" %.3f)"
	fi
	log "$name: stream: $out, proxy CPU ${c0}s -> ${c1}s"
}

# load_connrate opens short sessions through proxy $1 and records the rate.
load_connrate() {
	local name=$1 target out
	target=$(target_of "$name" echo)
	if ! out=$("$GB" connrate -target "$target" -workers "$CONN_WORKERS" -duration "${CONN_SECONDS}s" 2>&1); then
		log "$name: connrate failed: $out"
		record "$name" rate FAIL
		return 0
	fi
	local mark=""
	[[ $(kv errors "$out") == 0 ]] || mark="!"
	record "$name" rate "$(kv rate "$out")$mark"
	log "$name: connrate: $out"
}

# target_of prints where the loads connect for proxy $1 and back-end $2.
target_of() {
	case $1:$2 in
	direct:sink) echo "$SINK_ADDR" ;;
	direct:echo) echo "$ECHO_ADDR" ;;
	*:sink) echo "127.0.0.1:$SINK_PORT" ;;
	*:echo) echo "127.0.0.1:$ECHO_PORT" ;;
	esac
}

# bench_one runs the three loads against proxy $1 (round $2), idle first on a
# fresh process.
bench_one() {
	local name=$1
	log "== $name, round $2 of $ROUNDS"
	MEM_PIDS=() CPU_PIDS=() PROXY_PID=
	[[ $name == direct ]] || start_proxy "$name"
	load_idle "$name"
	load_stream "$name"
	load_connrate "$name"
	[[ -z $PROXY_PID ]] || stop_pid "$PROXY_PID"
	show_log "$WORK/$name.log" "$name"
	show_log "$WORK/nginx-error.log" "$name"
	check_backends
}

# ---- the table -------------------------------------------------------------

# ratio prints a/b with two decimals, or "-" unless both are numbers.
ratio() {
	awk -v a="${1%!}" -v b="${2%!}" 'BEGIN{
		if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b+0 > 0) printf "%.2f", a/b; else printf "-"}'
}

# print_table prints one row per load and one column per proxy, then the
# ratios of gatehouse (default GOMAXPROCS and GOMAXPROCS=1) to each peer.
print_table() {
	printf "\nL4 benchmark on %s cores, loopback; %s; %s; %s\n" "$(nproc)" \
		"$(haproxy -v | head -1 | cut -d' ' -f1-3)" "$(nginx -v 2>&1 | cut -d' ' -f3)" "$(go version | cut -d' ' -f3)"
	table_line load direct gatehouse "gh GMP=1" HAProxy nginx gh/HAP gh/ngx gh1/HAP gh1/ngx target
	row "stream GB/s" gbps %.2f "gh/HAP >= 1.10"
	row "stream proxy CPU-s/GB" cpugb %.3f "gh/HAP <= 0.50"
	row "new conns/s ($CONN_WORKERS workers)" rate %.0f "gh/HAP >= 1.00"
	row "idle KiB/conn (Rss delta)" rss %.1f "gh <= 8 KiB"
	row "idle KiB/conn (Pss delta)" pss %.1f ""
	printf "\nmedians of %s rounds; stream %s bytes (GB = 1e9 bytes); connrate %ss; idle %s sessions;\n" \
		"$ROUNDS" "$STREAM_BYTES" "$CONN_SECONDS" "$IDLE_CONNS"
	printf "'!' = some sessions failed (see the log above); FAIL = a load failed in some round;\n"
	printf "CPU and memory are the proxy's own (nginx: CPU of the worker, memory of master+worker);\n"
	printf "gh = gatehouse with default GOMAXPROCS (%s), gh1 = gatehouse with GOMAXPROCS=1.\n" "$(nproc)"
}

# median prints the median of the figures in $1 with printf format $2; "-"
# if there are none, FAIL if any round failed, with a trailing "!" if any
# round had failed sessions.
median() {
	local vals=$1 format=$2 mark=""
	[[ -n ${vals// /} ]] || { echo -; return; }
	[[ $vals != *FAIL* ]] || { echo FAIL; return; }
	[[ $vals != *'!'* ]] || mark='!'
	tr ' ' '\n' <<<"${vals//!/}" | grep . | sort -g |
		awk -v mark="$mark" -v format="$format" '{v[NR] = $1} END {
			if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf format "%s", m, mark }'
}

# table_line prints one line of the table: a label, eleven cells.
table_line() {
	printf '%-26s %9s %10s %10s %9s %9s %8s %8s %8s %8s   %s\n' "$@"
}

# row prints one load's figures and ratios.
row() {
	local label=$1 m=$2 format=$3 target=$4 p
	local -a v=()
	for p in direct gatehouse gatehouse-gmp1 haproxy nginx; do
		v+=("$(median "${RES[$p:$m]:-}" "$format")")
	done
	table_line "$label" "${v[@]}" \
		"$(ratio "${v[1]}" "${v[3]}")" "$(ratio "${v[1]}" "${v[4]}")" \
		"$(ratio "${v[2]}" "${v[3]}")" "$(ratio "${v[2]}" "${v[4]}")" "$target"
}

main() {
	raise_nofile
	install_peers
	build
	start_backends
	write_configs
	local p r
	for ((r = 1; r <= ROUNDS; r++)); do
		for p in $(proxies); do
			bench_one "$p" "$r"
		done
	done
	print_table
	((HAVE_GATEHOUSE)) || die "gatehouse was not measured: go build ./cmd/gatehouse failed"
}

main "$@"
