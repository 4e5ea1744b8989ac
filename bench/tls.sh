#!/usr/bin/env bash
# tls.sh — TLS handshake benchmark: gatehouse terminating TLS on a plain TCP
# listener side by side with HAProxy (mode tcp, bind … ssl, nbthread 1) and
# nginx (stream, ssl, worker_processes 1), in one run on this machine, over
# loopback. Run from the repository root (`make bench`, or `bash bench/tls.sh`).
#
# Every proxy serves the same ECDSA P-256 certificate (made with openssl for
# this run) in front of one echo back-end (gatebench echo). gatehouse runs
# with GOMAXPROCS=1 against one thread or worker of the others; with
# GATEHOUSE_DEFAULT=1 it also runs with the default GOMAXPROCS.
#
# The client is gatebench tlsrate: TLS_WORKERS workers for TLS_SECONDS each
# open a connection, complete a handshake, exchange 8 bytes with the echo
# back-end through the proxy and close. It offers X25519 and P-256 only, and
# in TLS 1.2 the ECDHE-ECDSA-AES128-GCM-SHA256 suite only, so that every
# proxy does the same work (the negotiated parameters are checked), and it
# refuses any certificate but this run's. Loads, each against every proxy:
#   full      TLS 1.3, then TLS 1.2: a fresh full handshake per connection
#             (no session cache, no tickets)
#   resumed   TLS 1.3, then TLS 1.2: every connection resumes from a session
#             cache shared by the workers (tickets)
# For each: handshakes per second, and the proxy's CPU-µs per handshake
# (utime+stime deltas from /proc/PID/stat; nginx: its worker), which
# includes proxying the 8 bytes and the back-end connection.
#
# Knobs (environment): TLS_SECONDS (5), TLS_WORKERS (8), GATEHOUSE_DEFAULT
# (1: also run gatehouse with the default GOMAXPROCS; 0: don't), ROUNDS (3:
# every figure is the median of the rounds; each round runs every proxy in
# turn, so that a burst of other work on the shared machine hurts no single
# column).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TLS_SECONDS=${TLS_SECONDS:-5}
TLS_WORKERS=${TLS_WORKERS:-8}
GATEHOUSE_DEFAULT=${GATEHOUSE_DEFAULT:-1}
ROUNDS=${ROUNDS:-3}
PATH=$PATH:/usr/sbin:/sbin
NGINX_STREAM_SO=/usr/lib/nginx/modules/ngx_stream_module.so
SERVER_NAME=bench.gatehouse.test
LOADS=(full-1.3 full-1.2 resumed-1.3 resumed-1.2)

die() { log "tls.sh: $*"; exit 1; }

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$BENCH_DIR/.."
WORK=$(mktemp -d /tmp/gatehouse-tls-bench.XXXXXX)
STARTED=() # every process this script started, stopped on exit

trap cleanup EXIT
trap 'exit 130' INT TERM

# install_peers installs HAProxy, nginx's stream module and openssl if missing.
install_peers() {
	local -a missing=()
	command -v haproxy >/dev/null || missing+=(haproxy)
	command -v openssl >/dev/null || missing+=(openssl)
	if ! command -v nginx >/dev/null ||
		! { [[ -f $NGINX_STREAM_SO ]] || nginx -V 2>&1 | grep -q -- '--with-stream\b'; }; then
		missing+=(nginx-light libnginx-mod-stream)
	fi
	((${#missing[@]} == 0)) && return 0
	log "installing ${missing[*]} ..."
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# warn_others names other benchmarks running now: their load skews figures.
warn_others() {
	local pid
	pgrep -f 'bench/[a-z0-9]+\.sh' >"$WORK/others" || true
	while read -r pid; do
		[[ $pid == "$$" ]] && continue
		log "tls.sh: warning: another benchmark is running, figures will be skewed: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
	done <"$WORK/others"
}

# build compiles gatebench and gatehouse. Without a gatehouse binary the
# peers are still measured, and the run ends with a failure after the table.
build() {
	GB=$WORK/gatebench
	go build -o "$GB" ./bench/gatebench
	HAVE_GATEHOUSE=1
	if ! go build -o bin/gatehouse ./cmd/gatehouse; then
		log "tls.sh: gatehouse does not build: its columns stay empty"
		HAVE_GATEHOUSE=0
	fi
}

# make_cert writes the one ECDSA P-256 certificate every proxy serves:
# cert.pem and key.pem, and both.pem (chain and key) for HAProxy.
make_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=$SERVER_NAME" -addext "subjectAltName=DNS:$SERVER_NAME,IP:127.0.0.1" \
		-keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null || die "openssl could not make the certificate"
	cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/both.pem"
}

# start_backend starts the echo back-end and picks the port the proxies
# listen on, one at a time.
start_backend() {
	start_bg "$WORK/echo.out" "$GB" echo -listen 127.0.0.1:0
	ECHO_PID=$BG_PID
	wait_line "$WORK/echo.out" '^LISTEN ' 10 "$ECHO_PID" || die "echo did not start"
	ECHO_ADDR=$(awk '/^LISTEN /{print $2; exit}' "$WORK/echo.out")
	TLS_PORT=$("$GB" freeport -n 1)
	log "back-end: echo $ECHO_ADDR; proxies terminate TLS on 127.0.0.1:$TLS_PORT"
}

# check_backend stops the run if the echo back-end has ended.
check_backend() {
	kill -0 "$ECHO_PID" 2>/dev/null && return 0
	cat "$WORK/echo.out" >&2
	die "the echo back-end has ended"
}

# ---- the proxies -----------------------------------------------------------

# write_configs writes each proxy's configuration: one TLS listener in front
# of the echo back-end with the same certificate, no logging of sessions.
write_configs() {
	cat >"$WORK/gatehouse.yaml" <<-YAML
		state_dir: "$WORK/state"
		admin: {listen: "127.0.0.1:0"}
		log: {level: warn}
		certificates:
		  bench:
		    source: files
		    files: [{cert: "$WORK/cert.pem", key: "$WORK/key.pem"}]
		    storage: "$WORK/state/certificates"
		backends:
		  echo: {address: "$ECHO_ADDR"}
		listeners:
		  - name: bench-tls
		    protocol: tcp
		    listen: ["127.0.0.1:$TLS_PORT"]
		    tls: {mode: implicit, certificates: bench}
		    backends: [echo]
		    health: {probe: tcp, interval: 10s}
		    timeouts: {connect: 2s, idle: 5m}
	YAML
	write_haproxy_config
	write_nginx_config
}

# write_haproxy_config: HAProxy prefers its own TLS 1.3 suite order, whose
# OpenSSL default starts with AES-256-GCM-SHA384; AES-128-GCM-SHA256 goes
# first, as the client (and so gatehouse and nginx) prefers it.
write_haproxy_config() {
	cat >"$WORK/haproxy.cfg" <<-CFG
		global
		    nbthread 1
		    maxconn 8000
		    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
		defaults
		    mode tcp
		    maxconn 8000
		    timeout connect 2s
		    timeout client 5m
		    timeout server 5m
		frontend tls
		    bind 127.0.0.1:$TLS_PORT ssl crt $WORK/both.pem
		    default_backend echo
		backend echo
		    server echo $ECHO_ADDR check inter 10s
	CFG
}

# write_nginx_config: nginx keeps its defaults (tickets on, no shared
# session cache), as HAProxy and gatehouse keep theirs.
write_nginx_config() {
	local load=""
	[[ -f $NGINX_STREAM_SO ]] && load="load_module $NGINX_STREAM_SO;"
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
		    ssl_certificate $WORK/cert.pem;
		    ssl_certificate_key $WORK/key.pem;
		    ssl_protocols TLSv1.2 TLSv1.3;
		    proxy_connect_timeout 2s;
		    proxy_timeout 5m;
		    server { listen 127.0.0.1:$TLS_PORT ssl; proxy_pass $ECHO_ADDR; }
		}
	CONF
}

# proxies lists the columns to run, in order.
proxies() {
	if ((HAVE_GATEHOUSE)); then
		echo gatehouse-gmp1
		((GATEHOUSE_DEFAULT)) && echo gatehouse
	fi
	echo haproxy nginx
}

# start_proxy starts proxy $1 and sets PROXY_PID and CPU_PIDS (the processes
# that do the handshakes: for nginx, the worker).
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
	CPU_PIDS=("$PROXY_PID")
	if [[ $name == nginx ]]; then
		mapfile -t CPU_PIDS < <(children "$PROXY_PID")
		((${#CPU_PIDS[@]} == 1)) || die "nginx: expected one worker, found ${#CPU_PIDS[@]}"
	fi
}

# wait_ready waits (bounded) until the TLS port accepts and a short TLS load
# gets through to the echo back-end with this run's certificate.
wait_ready() {
	local i out
	for ((i = 0; ; i++)); do
		((i < 100)) || return 1
		kill -0 "$PROXY_PID" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null && break
		sleep 0.1
	done
	for ((i = 0; i < 40; i++)); do
		out=$(tlsrate 1.3 -workers 1 -duration 100ms 2>&1) || true
		[[ $(kv errors "$out") == 0 && $(kv conns "$out") != 0 ]] && return 0
		sleep 0.25
	done
	log "last try: $out"
	return 1
}

# tlsrate runs the client load with TLS version $1 and further flags.
tlsrate() {
	local version=$1
	shift
	"$GB" tlsrate -target "127.0.0.1:$TLS_PORT" -servername "$SERVER_NAME" -cert "$WORK/cert.pem" \
		-version "$version" "$@"
}

# ---- measuring -------------------------------------------------------------

declare -A RES # RES[proxy:metric] = one figure per round, space-separated
declare -A NEG # NEG[proxy:load] = what the last round negotiated

# load_tls runs load $2 (full-1.3, resumed-1.2 …) through proxy $1 and
# records handshakes per second and the proxy's CPU-µs per handshake.
load_tls() {
	local name=$1 load=$2 c0 c1 out mark
	local mode=${load%-*} version=${load#*-}
	local -a flags=(-workers "$TLS_WORKERS" -duration "${TLS_SECONDS}s")
	[[ $mode == resumed ]] && flags+=(-resume)
	c0=$(cpu_seconds "${CPU_PIDS[@]}")
	if ! out=$(tlsrate "$version" "${flags[@]}" 2>&1); then
		log "$name: $load failed: $out"
		record "$name" "$load:rate" FAIL
		record "$name" "$load:cpu" FAIL
		return 0
	fi
	c1=$(cpu_seconds "${CPU_PIDS[@]}")
	if [[ $(kv conns "$out") == 0 ]]; then
		log "$name: $load: no handshake completed: $out"
		record "$name" "$load:rate" FAIL
		record "$name" "$load:cpu" FAIL
		return 0
	fi
	mark=$(marks "$mode" "$out")
	record "$name" "$load:rate" "$(kv rate "$out")$mark"
	record "$name" "$load:cpu" "$(calc "$c1" "$c0" "(a-b)*1e6/$(kv conns "$out")" %.0f)$mark"
	record client "$load:cpu" "$(kv client_cpu_us "$out")"
	NEG[$name:$load]="$(kv version "$out") $(kv suite "$out") $(kv curve "$out")"
	log "$name: $load: $out, proxy CPU ${c0}s -> ${c1}s"
}

# marks prints "!" when sessions of load output $2 failed and "*" when
# handshakes were not of kind $1 (full or resumed) or parameters differed.
marks() {
	local mode=$1 out=$2 m="" want=0
	[[ $(kv errors "$out") == 0 ]] || m+="!"
	[[ $mode == resumed ]] && want=$(kv conns "$out")
	[[ $(kv resumed "$out") == "$want" && $(kv other "$out") == 0 ]] || m+="*"
	printf '%s' "$m"
}

# bench_one runs every load against a fresh proxy $1 (round $2).
bench_one() {
	local name=$1 load
	log "== $name, round $2 of $ROUNDS"
	start_proxy "$name"
	for load in "${LOADS[@]}"; do
		load_tls "$name" "$load"
	done
	stop_pid "$PROXY_PID"
	show_log "$WORK/$name.log" "$name"
	show_log "$WORK/nginx-error.log" "$name"
	check_backend
}

# ---- the table -------------------------------------------------------------

# ratio prints a/b with two decimals, or "-" unless both are numbers.
ratio() {
	awk -v a="${1//[*!]/}" -v b="${2//[*!]/}" 'BEGIN{
		if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b+0 > 0) printf "%.2f", a/b; else printf "-"}'
}

# median prints the median of the figures in $1 with printf format $2; "-"
# if there are none, FAIL if any round failed, with the marks ("!", "*") of
# every round appended.
median() {
	local vals=$1 format=$2 mark=""
	[[ -n ${vals// /} ]] || { echo -; return; }
	[[ $vals != *FAIL* ]] || { echo FAIL; return; }
	[[ $vals != *'!'* ]] || mark+='!'
	[[ $vals != *'*'* ]] || mark+='*'
	tr ' ' '\n' <<<"$vals" | tr -d '!*' | grep . | sort -g |
		awk -v mark="$mark" -v format="$format" '{v[NR] = $1} END {
			if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf format "%s", m, mark }'
}

# table_line prints one line of the table: a label, nine cells. The label
# is padded by characters, not bytes ("µ" is two).
table_line() {
	local label=$1
	shift
	printf '%s%*s %9s %9s %9s %9s %8s %8s %8s %8s   %s\n' "$label" $((28 - ${#label})) "" "$@"
}

# row prints one metric's figures and ratios.
row() {
	local label=$1 m=$2 target=$3 p
	local -a v=()
	for p in gatehouse-gmp1 gatehouse haproxy nginx; do
		v+=("$(median "${RES[$p:$m]:-}" %.0f)")
	done
	table_line "$label" "${v[@]}" \
		"$(ratio "${v[0]}" "${v[2]}")" "$(ratio "${v[0]}" "${v[3]}")" \
		"$(ratio "${v[1]}" "${v[2]}")" "$(ratio "${v[1]}" "${v[3]}")" "$target"
}

# print_table prints two rows per load (rate, CPU) and one column per proxy,
# then the ratios of gatehouse (GOMAXPROCS=1 and default) to each peer.
print_table() {
	local load mode version
	printf "\nTLS handshake benchmark on %s cores, loopback, ECDSA P-256; %s; %s; %s; %s\n" "$(nproc)" \
		"$(haproxy -v | head -1 | cut -d' ' -f1-3)" "$(nginx -v 2>&1 | cut -d' ' -f3)" \
		"$(openssl version | cut -d' ' -f1-2)" "$(go version | cut -d' ' -f3)"
	table_line load "gh GMP=1" gatehouse HAProxy nginx gh1/HAP gh1/ngx gh/HAP gh/ngx target
	for load in "${LOADS[@]}"; do
		mode=${load%-*} version=${load#*-}
		row "TLS $version $mode handshakes/s" "$load:rate" "gh1/ngx >= 1.00"
		row "TLS $version $mode CPU-µs each" "$load:cpu" "reported (lower is better)"
	done
	print_notes
}

# print_notes explains the table and checks that every proxy negotiated the
# same parameters.
print_notes() {
	printf "\nmedians of %s rounds; %s workers for %ss per load; every connection exchanges 8 bytes\n" \
		"$ROUNDS" "$TLS_WORKERS" "$TLS_SECONDS"
	printf "with the echo back-end through the proxy, then closes. CPU is the proxy's own (nginx: its\n"
	printf "worker), per completed handshake, proxying included.\n"
	printf "'!' = some sessions failed; '*' = some handshakes were not of the intended kind (full/resumed)\n"
	printf "or negotiated other parameters (see the log above); FAIL = a load failed in some round.\n"
	printf "gh1 = gatehouse with GOMAXPROCS=1 (one core, as HAProxy nbthread 1 and one nginx worker);\n"
	printf "gh = gatehouse with the default GOMAXPROCS (%s).\n" "$(nproc)"
	printf "Reference (issue, same kind of machine): HAProxy 2.6/OpenSSL 3.0 1,500 full handshakes/s\n"
	printf "(553 CPU-µs each), nginx 1,800/s (464 CPU-µs).\n"
	print_client
	check_negotiated
}

# print_client prints the client's own CPU per handshake: on this machine
# the proxy, the client and the echo back-end share the cores, so the rates
# are bounded by all three, while CPU-µs each is the proxy's cost alone.
print_client() {
	local load
	printf "The client shares the machine: handshakes/s is bounded by its CPU too; its CPU-µs each\n"
	printf "(median over proxies and rounds):"
	for load in "${LOADS[@]}"; do
		printf " %s %s" "$load" "$(median "${RES[client:$load:cpu]:-}" %.0f)"
	done
	printf "\n"
}

# check_negotiated prints what each load negotiated, or every proxy's
# answer if they differ.
check_negotiated() {
	local load p first same
	printf "\nnegotiated (client view):\n"
	for load in "${LOADS[@]}"; do
		first="" same=1
		for p in $(proxies); do
			[[ -z ${NEG[$p:$load]:-} ]] && continue
			[[ -z $first ]] && first=${NEG[$p:$load]}
			[[ ${NEG[$p:$load]} == "$first" ]] || same=0
		done
		if ((same)); then
			printf '  %-12s %s at every proxy\n' "$load" "${first:--}"
			continue
		fi
		for p in $(proxies); do printf '  %-12s %-15s %s   DIFFERS\n' "$load" "$p" "${NEG[$p:$load]:--}"; done
	done
}

main() {
	install_peers
	mkdir -p "$WORK/state"
	warn_others
	build
	make_cert
	start_backend
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
