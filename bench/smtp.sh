#!/usr/bin/env bash
# smtp.sh — SMTP benchmark: gatehouse's SMTP frontend in relay and in
# passthrough mode side by side with HAProxy (mode tcp, nbthread 1) and
# nginx's mail proxy (smtp, worker_processes 1), and with no proxy at all,
# in one run on this machine over loopback. Postfix's smtp-source is the load
# and Postfix's smtp-sink the back-end. Run from the repository root
# (`make bench` runs it after l4.sh, or `bash bench/smtp.sh`).
#
# Loads, each against every column in turn:
#   sessions  SESS_MSGS messages of 1 KiB, a new session for each, SESSIONS
#             at a time: sessions per second
#   messages  MSGS messages of 1 KiB over SESSIONS sessions that stay open:
#             messages per second, and the proxy's CPU-µs per message
#             (utime+stime from /proc/PID/stat; nginx: its worker)
#   large     LARGE_MSGS messages of 10 MiB over LARGE_SESSIONS sessions:
#             MB/s of message data (1 MB = 1e6 bytes)
# Each figure is the median of ROUNDS rounds. The targets of the SMTP
# frontend are checked at the end: relay >= 0.8x HAProxy's messages/s,
# passthrough >= 0.95x, both >= 1.0x nginx's.
#
# nginx's mail proxy asks an auth_http server where each session goes; the
# same nginx answers it from an http block, which costs it a little CPU, as
# it would in production.
#
# Knobs (environment): SESSIONS (20), SESS_MSGS (4000), MSGS (20000),
# LARGE_MSGS (20), LARGE_SESSIONS (2), ROUNDS (3), GATEHOUSE (the gatehouse
# binary; default bin/gatehouse built from ./cmd/gatehouse).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SESSIONS=${SESSIONS:-20}
SESS_MSGS=${SESS_MSGS:-4000}
MSGS=${MSGS:-20000}
LARGE_MSGS=${LARGE_MSGS:-20}
LARGE_SESSIONS=${LARGE_SESSIONS:-2}
ROUNDS=${ROUNDS:-3}
PATH=$PATH:/usr/sbin:/sbin
NGINX_MODULES=/usr/lib/nginx/modules

die() { log "smtp.sh: $*"; exit 1; }

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$BENCH_DIR/.."
WORK=$(mktemp -d /tmp/gatehouse-smtp-bench.XXXXXX)
chmod 755 "$WORK"
STARTED=() # every process this script started, stopped on exit

trap cleanup EXIT
trap 'exit 130' INT TERM

# install_peers installs Postfix (smtp-source, smtp-sink), HAProxy and
# nginx's mail module when missing.
install_peers() {
	local -a need=()
	command -v smtp-source >/dev/null || need+=(postfix)
	command -v haproxy >/dev/null || need+=(haproxy)
	command -v nginx >/dev/null || need+=(nginx-light)
	[[ -f $NGINX_MODULES/ngx_mail_module.so ]] || nginx -V 2>&1 | grep -q -- '--with-mail\b' ||
		need+=(libnginx-mod-mail)
	((${#need[@]})) || return 0
	log "installing ${need[*]} ..."
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
}

# free_port prints a loopback port nobody listens on now.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port waits (bounded) until 127.0.0.1:$1 accepts, failing early if
# process $2 ends.
wait_port() {
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# build compiles gatehouse unless GATEHOUSE names a binary. Without one
# the peers are still measured and the run fails after the table.
build() {
	HAVE_GATEHOUSE=1
	if [[ -n ${GATEHOUSE:-} ]]; then
		return 0
	fi
	GATEHOUSE=bin/gatehouse
	if ! go build -o "$GATEHOUSE" ./cmd/gatehouse; then
		log "smtp.sh: gatehouse does not build: its columns stay empty"
		HAVE_GATEHOUSE=0
	fi
}

# start_sink starts smtp-sink, which must not run as root.
start_sink() {
	SINK_PORT=$(free_port)
	local -a user=()
	(($(id -u) == 0)) && user=(-u nobody)
	start_bg "$WORK/sink.out" smtp-sink "${user[@]}" "127.0.0.1:$SINK_PORT" 1024
	SINK_PID=$BG_PID
	wait_port "$SINK_PORT" "$SINK_PID" || { cat "$WORK/sink.out" >&2; die "smtp-sink did not start"; }
	RELAY_PORT=$(free_port)
	PASS_PORT=$(free_port)
	HAPROXY_PORT=$(free_port)
	NGINX_PORT=$(free_port)
	AUTH_PORT=$(free_port)
	log "smtp-sink on 127.0.0.1:$SINK_PORT"
}

# write_configs writes each proxy's configuration, all in front of the sink.
write_configs() {
	cat >"$WORK/gatehouse.yaml" <<-YAML
		admin: {listen: "127.0.0.1:0"}
		log: {level: warn}
		backends:
		  sink: {address: "127.0.0.1:$SINK_PORT"}
		listeners:
		  - name: bench-relay
		    protocol: smtp
		    listen: ["127.0.0.1:$RELAY_PORT"]
		    backends: [sink]
		    health: {probe: smtp, interval: 10s}
		    timeouts: {connect: 2s}
		    smtp: {mode: relay, hostname: gate.bench}
		  - name: bench-passthrough
		    protocol: smtp
		    listen: ["127.0.0.1:$PASS_PORT"]
		    backends: [sink]
		    health: {probe: smtp, interval: 10s}
		    timeouts: {connect: 2s, idle: 5m}
		    smtp: {mode: passthrough, hostname: gate.bench}
	YAML
	cat >"$WORK/haproxy.cfg" <<-CFG
		global
		    nbthread 1
		    maxconn 8000
		defaults
		    mode tcp
		    timeout connect 2s
		    timeout client 5m
		    timeout server 5m
		frontend smtp
		    bind 127.0.0.1:$HAPROXY_PORT
		    default_backend sink
		backend sink
		    server sink 127.0.0.1:$SINK_PORT check inter 10s
	CFG
	local load=""
	[[ -f $NGINX_MODULES/ngx_mail_module.so ]] && load="load_module $NGINX_MODULES/ngx_mail_module.so;"
	cat >"$WORK/nginx.conf" <<-CONF
		$load
		daemon off;
		master_process on;
		worker_processes 1;
		worker_rlimit_nofile 20000;
		pid $WORK/nginx.pid;
		error_log $WORK/nginx-error.log warn;
		events { worker_connections 8000; }
		http {
		    access_log off;
		    server {
		        listen 127.0.0.1:$AUTH_PORT;
		        location = /auth {
		            add_header Auth-Status OK;
		            add_header Auth-Server 127.0.0.1;
		            add_header Auth-Port $SINK_PORT;
		            return 204;
		        }
		    }
		}
		mail {
		    auth_http 127.0.0.1:$AUTH_PORT/auth;
		    xclient off;
		    proxy_pass_error_message on;
		    smtp_capabilities PIPELINING 8BITMIME "SIZE 0";
		    server {
		        listen 127.0.0.1:$NGINX_PORT;
		        protocol smtp;
		        smtp_auth none;
		        server_name gate.bench;
		    }
		}
	CONF
}

# columns lists the columns to run, in order.
columns() {
	echo direct
	((HAVE_GATEHOUSE)) && echo relay passthrough
	echo haproxy nginx
}

# port_of prints where the load connects for column $1.
port_of() {
	case $1 in
	direct) echo "$SINK_PORT" ;;
	relay) echo "$RELAY_PORT" ;;
	passthrough) echo "$PASS_PORT" ;;
	haproxy) echo "$HAPROXY_PORT" ;;
	nginx) echo "$NGINX_PORT" ;;
	esac
}

# start_proxy starts the proxy of column $1 and sets PROXY_PID and CPU_PIDS
# (the processes that do the work: for nginx, the worker).
start_proxy() {
	local name=$1 out=$WORK/$1.log
	case $name in
	relay | passthrough)
		if [[ -z ${GATEHOUSE_PID:-} ]]; then
			start_bg "$WORK/gatehouse.log" "$GATEHOUSE" run -config "$WORK/gatehouse.yaml"
			GATEHOUSE_PID=$BG_PID
		fi
		PROXY_PID=$GATEHOUSE_PID
		out=$WORK/gatehouse.log
		;;
	haproxy) start_bg "$out" haproxy -db -f "$WORK/haproxy.cfg" && PROXY_PID=$BG_PID ;;
	nginx) start_bg "$out" nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" && PROXY_PID=$BG_PID ;;
	esac
	wait_ready "$(port_of "$name")" || { cat "$out" "$WORK/nginx-error.log" >&2 2>/dev/null || true; die "$name did not become ready"; }
	CPU_PIDS=("$PROXY_PID")
	if [[ $name == nginx ]]; then
		mapfile -t CPU_PIDS < <(pgrep -P "$PROXY_PID")
		((${#CPU_PIDS[@]} == 1)) || die "nginx: expected one worker, found ${#CPU_PIDS[@]}"
	fi
}

# wait_ready waits (bounded) until one message goes through port $1.
wait_ready() {
	local i
	wait_port "$1" "$PROXY_PID" || return 1
	for ((i = 0; i < 40; i++)); do
		smtp-source -m 1 -l 100 "127.0.0.1:$1" >/dev/null 2>&1 && return 0
		sleep 0.25
	done
	return 1
}

# stop_proxy stops the proxy of column $1 (gatehouse serves both of its
# columns and stops after the second).
stop_proxy() {
	case $1 in
	direct | relay) ;;
	passthrough) stop_pid "$GATEHOUSE_PID" && GATEHOUSE_PID= ;;
	*) stop_pid "$PROXY_PID" ;;
	esac
}

# cpu_seconds prints the summed utime+stime of the given pids, in seconds.
cpu_seconds() {
	local pid stat t=0
	local -a f
	for pid; do
		read -r stat <"/proc/$pid/stat"
		read -r -a f <<<"${stat##*) }"
		t=$((t + f[11] + f[12]))
	done
	awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.3f", t/hz}'
}

now() { date +%s.%N; }
declare -A RES # RES[column:metric] = one figure per round, space-separated
# source runs smtp-source against column $1 with args $2..; it prints the
# seconds taken, or fails when smtp-source reported an error.
source_load() {
	local port=$1 t0 t1 err
	shift
	t0=$(now)
	if ! smtp-source -f alice@bench.example -t bob@bench.example -M client.bench "$@" "127.0.0.1:$port" 2>"$WORK/source.err"; then
		cat "$WORK/source.err" >&2
		return 1
	fi
	t1=$(now)
	err=$(grep -c . "$WORK/source.err" || true)
	((err == 0)) || { head -3 "$WORK/source.err" >&2; return 1; }
	calc "$t1" "$t0" "a-b" %.3f
}

# load_all runs the three loads against column $1.
load_all() {
	local name=$1 port secs c0 c1
	port=$(port_of "$name")
	if secs=$(source_load "$port" -s "$SESSIONS" -m "$SESS_MSGS" -l 1024); then
		record "$name" sessions "$(calc "$SESS_MSGS" "$secs" "a/b" %.0f)"
	else
		record "$name" sessions FAIL
	fi
	((${#CPU_PIDS[@]})) && c0=$(cpu_seconds "${CPU_PIDS[@]}")
	if secs=$(source_load "$port" -d -s "$SESSIONS" -m "$MSGS" -l 1024); then
		record "$name" messages "$(calc "$MSGS" "$secs" "a/b" %.0f)"
		if ((${#CPU_PIDS[@]})); then
			c1=$(cpu_seconds "${CPU_PIDS[@]}")
			record "$name" cpumsg "$(calc "$c1" "$c0" "(a-b)*1e6/$MSGS" %.1f)"
		fi
	else
		record "$name" messages FAIL
	fi
	if secs=$(source_load "$port" -d -s "$LARGE_SESSIONS" -m "$LARGE_MSGS" -l 10485760); then
		record "$name" mbps "$(calc "$LARGE_MSGS" "$secs" "a*10485760/1e6/b" %.1f)"
	else
		record "$name" mbps FAIL
	fi
	log "$name:${RES[$name:sessions]} sessions/s,${RES[$name:messages]} msgs/s,${RES[$name:mbps]} MB/s"
}

# median prints the median of the figures in $1 (FAIL if any failed).
median() {
	[[ -n $1 ]] || { echo "-"; return; }
	[[ $1 == *FAIL* ]] && { echo FAIL; return; }
	tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{v[NR]=$1} END{print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

# report prints the table and checks the targets.
report() {
	local c
	printf '\n%-12s %12s %12s %10s %14s\n' column sessions/s messages/s MB/s cpu-µs/msg
	for c in $(columns); do
		printf '%-12s %12s %12s %10s %14s\n' "$c" "$(median "${RES[$c:sessions]:-}")" \
			"$(median "${RES[$c:messages]:-}")" "$(median "${RES[$c:mbps]:-}")" "$(median "${RES[$c:cpumsg]:-}")"
	done
	((HAVE_GATEHOUSE)) || die "gatehouse did not build: no SMTP frontend figures"
	local ha ng
	ha=$(median "${RES[haproxy:messages]}")
	ng=$(median "${RES[nginx:messages]}")
	echo
	target relay "$ha" 0.8 HAProxy
	target passthrough "$ha" 0.95 HAProxy
	target relay "$ng" 1.0 nginx
	target passthrough "$ng" 1.0 nginx
}

# target prints column $1's messages/s as a ratio of $2 against goal $3.
target() {
	local got ratio verdict
	got=$(median "${RES[$1:messages]}")
	if [[ $got == FAIL || $2 == FAIL ]]; then
		printf '%-12s vs %-8s  n/a (a load failed)\n' "$1" "$4"
		return
	fi
	ratio=$(calc "$got" "$2" "a/b" %.2f)
	verdict=$(awk -v r="$ratio" -v g="$3" 'BEGIN{print (r >= g) ? "met" : "MISSED"}')
	printf '%-12s vs %-8s %5sx messages/s (target %.2fx: %s)\n' "$1" "$4" "$ratio" "$3" "$verdict"
}

main() {
	install_peers
	build
	start_sink
	write_configs
	local round c
	for ((round = 1; round <= ROUNDS; round++)); do
		for c in $(columns); do
			log "== $c, round $round of $ROUNDS"
			CPU_PIDS=() PROXY_PID=
			[[ $c == direct ]] || start_proxy "$c"
			load_all "$c"
			stop_proxy "$c"
			kill -0 "$SINK_PID" 2>/dev/null || { cat "$WORK/sink.out" >&2; die "smtp-sink has ended"; }
		done
	done
	report
}

main "$@"
