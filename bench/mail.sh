#!/usr/bin/env bash
# mail.sh — POP3/IMAP benchmark: gatehouse's pop3 and imap frontends (log in at
# the edge, route by user, splice) side by side with HAProxy (mode tcp,
# nbthread 1) and nginx's mail proxy (worker_processes 1, with an auth_http
# responder), in front of one Dovecot, in one run over loopback, and once
# directly against Dovecot. Run from the repository root.
#
# Loads, each against every path in turn:
#   pop3 logins  CONCURRENCY clients for SECONDS: connect, USER/PASS, STAT, QUIT
#   imap logins  CONCURRENCY clients for SECONDS: connect, LOGIN, SELECT, LOGOUT
#                → logins per second, and the proxy's CPU-µs per login
#                (utime+stime from /proc/PID/stat; nginx: its worker)
#   imap fetch   FETCH_ROUNDS fetches of one 10 MiB message (BODY.PEEK[]) on
#                one logged-in session → MB/s (1 MB = 1e6 bytes)
# HAProxy cannot route by user; here it forwards to the one Dovecot, which is
# its best case. Every figure is the median of ROUNDS rounds, and each round
# runs every path in turn, so a burst of other work hurts no single column.
#
# Needs: dovecot-imapd, dovecot-pop3d, haproxy, nginx-light with
# libnginx-mod-mail, python3 (installed with apt-get when missing).
# Knobs (environment): SECONDS_PER_LOAD (5), CONCURRENCY (20), FETCH_ROUNDS (10),
# ROUNDS (3).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-5}
CONCURRENCY=${CONCURRENCY:-20}
FETCH_ROUNDS=${FETCH_ROUNDS:-10}
ROUNDS=${ROUNDS:-3}
PATH=$PATH:/usr/sbin:/sbin
NGINX_MAIL_SO=/usr/lib/nginx/modules/ngx_mail_module.so

die() { log "mail.sh: $*"; exit 1; }

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$BENCH_DIR/.."
WORK=$(mktemp -d /tmp/gh-mailbench.XXXXXX)
chmod 755 "$WORK"
STARTED=()

cleanup() {
	local pid
	for pid in "${STARTED[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	sleep 0.5
	for pid in "${STARTED[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	[[ ${KEEP_WORK:-0} == 1 ]] || rm -rf "$WORK" # KEEP_WORK=1 keeps configs and logs
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_peers() {
	local need=()
	command -v dovecot >/dev/null || need+=(dovecot-imapd dovecot-pop3d)
	command -v haproxy >/dev/null || need+=(haproxy)
	command -v nginx >/dev/null || need+=(nginx-light)
	[[ -f $NGINX_MAIL_SO ]] || need+=(libnginx-mod-mail)
	command -v python3 >/dev/null || need+=(python3)
	((${#need[@]} == 0)) && return 0
	log "installing ${need[*]} ..."
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
}

# wait_port waits until something greets on 127.0.0.1:$1.
wait_port() {
	local i
	for ((i = 0; i < 100; i++)); do
		python3 - "$1" <<-'PY' 2>/dev/null && return 0
			import socket, sys
			s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
			s.settimeout(1)
			sys.exit(0 if s.recv(64) else 1)
		PY
		sleep 0.1
	done
	return 1
}

# ---- Dovecot ---------------------------------------------------------------

start_dovecot() {
	DV_POP3=$(free_port) DV_IMAP=$(free_port)
	mkdir -p "$WORK/dv" "$WORK/mail"
	# A user per client: POP3 locks a maildrop while a session holds it.
	local u i
	: >"$WORK/dv/passwd"
	for ((i = 0; i < CONCURRENCY; i++)); do
		u=bench$i
		echo "$u:{PLAIN}bench" >>"$WORK/dv/passwd"
		mkdir -p "$WORK/mail/$u/Maildir/"{cur,new,tmp}
		printf 'Subject: small\r\n\r\nhello\r\n' >"$WORK/mail/$u/Maildir/cur/1.M1P1.bench:2,S"
	done
	echo "big:{PLAIN}bench" >>"$WORK/dv/passwd"
	mkdir -p "$WORK/mail/big/Maildir/"{cur,new,tmp}
	python3 - "$WORK/mail/big/Maildir/cur/1.M2P1.bench:2,S" <<-'PY'
		import sys
		line = b"x" * 76 + b"\r\n"
		with open(sys.argv[1], "wb") as f:
		    f.write(b"Subject: big\r\n\r\n")
		    f.write(line * (10 * 1024 * 1024 // len(line)))
	PY
	chown -R 65534:65534 "$WORK/mail"
	# Login and mail processes are reused: the benchmark measures the
	# proxies, not Dovecot's fork per connection.
	cat >"$WORK/dv/dovecot.conf" <<-CONF
		base_dir = $WORK/dv/run
		state_dir = $WORK/dv/state
		instance_name = gh-mailbench-$$
		protocols = imap pop3
		listen = 127.0.0.1
		log_path = $WORK/dv/dovecot.log
		disable_plaintext_auth = no
		ssl = no
		mail_location = maildir:~/Maildir
		login_trusted_networks = 127.0.0.0/8
		passdb {
		  driver = passwd-file
		  args = scheme=PLAIN username_format=%u $WORK/dv/passwd
		}
		userdb {
		  driver = static
		  args = uid=65534 gid=65534 home=$WORK/mail/%u
		}
		service imap-login {
		  service_count = 0
		  process_min_avail = 2
		  inet_listener imap {
		    port = $DV_IMAP
		  }
		  inet_listener imaps {
		    port = 0
		  }
		}
		service imap {
		  service_count = 0
		  process_min_avail = 2
		}
		service pop3 {
		  service_count = 0
		  process_min_avail = 2
		}
		service pop3-login {
		  service_count = 0
		  process_min_avail = 2
		  inet_listener pop3 {
		    port = $DV_POP3
		  }
		  inet_listener pop3s {
		    port = 0
		  }
		}
	CONF
	start_bg "$WORK/dv/out" dovecot -F -c "$WORK/dv/dovecot.conf"
	wait_port "$DV_IMAP" || { cat "$WORK/dv/out" "$WORK/dv/dovecot.log" >&2; die "dovecot did not start"; }
	log "dovecot: pop3 127.0.0.1:$DV_POP3, imap 127.0.0.1:$DV_IMAP"
}

# ---- the proxies -----------------------------------------------------------

# Each proxy listens on two ports: POP3 and IMAP. PORTS_<name> holds them.
write_configs() {
	GH_POP3=$(free_port) GH_IMAP=$(free_port)
	HA_POP3=$(free_port) HA_IMAP=$(free_port)
	NG_POP3=$(free_port) NG_IMAP=$(free_port)
	AUTH_PORT=$(free_port)
	cat >"$WORK/gatehouse.yaml" <<-YAML
		admin: {listen: "off"}
		log: {level: warn}
		backends:
		  dovecot-pop3: {address: "127.0.0.1:$DV_POP3"}
		  dovecot-imap: {address: "127.0.0.1:$DV_IMAP"}
		listeners:
		  - name: bench-pop3
		    protocol: pop3
		    listen: ["127.0.0.1:$GH_POP3"]
		    backends: [dovecot-pop3]
		    health: {probe: pop3, interval: 10s}
		  - name: bench-imap
		    protocol: imap
		    listen: ["127.0.0.1:$GH_IMAP"]
		    backends: [dovecot-imap]
		    health: {probe: imap, interval: 10s}
	YAML
	cat >"$WORK/haproxy.cfg" <<-CFG
		global
		    nbthread 1
		    maxconn 4000
		defaults
		    mode tcp
		    timeout connect 2s
		    timeout client 5m
		    timeout server 5m
		listen pop3
		    bind 127.0.0.1:$HA_POP3
		    server dovecot 127.0.0.1:$DV_POP3
		listen imap
		    bind 127.0.0.1:$HA_IMAP
		    server dovecot 127.0.0.1:$DV_IMAP
	CFG
	cat >"$WORK/nginx.conf" <<-CONF
		load_module $NGINX_MAIL_SO;
		worker_processes 1;
		daemon off;
		pid $WORK/nginx.pid;
		error_log $WORK/nginx.err warn;
		events { worker_connections 4096; }
		mail {
		    auth_http 127.0.0.1:$AUTH_PORT/auth;
		    proxy_pass_error_message on;
		    server { listen 127.0.0.1:$NG_POP3; protocol pop3; pop3_auth plain; }
		    server { listen 127.0.0.1:$NG_IMAP; protocol imap; imap_auth login plain; }
		}
	CONF
}

# start_authhttp runs nginx's auth_http responder: every login goes to the
# one Dovecot, by protocol.
start_authhttp() {
	cat >"$WORK/authhttp.py" <<-'PY'
		import http.server, sys
		port, pop3, imap = sys.argv[1:4]
		class H(http.server.BaseHTTPRequestHandler):
		    def do_GET(self):
		        self.send_response(200)
		        self.send_header("Auth-Status", "OK")
		        self.send_header("Auth-Server", "127.0.0.1")
		        self.send_header("Auth-Port", pop3 if self.headers["Auth-Protocol"] == "pop3" else imap)
		        self.end_headers()
		    def log_message(self, *a):
		        pass
		http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()
	PY
	start_bg "$WORK/auth.out" python3 "$WORK/authhttp.py" "$AUTH_PORT" "$DV_POP3" "$DV_IMAP"
}

# start_proxy NAME starts one proxy and sets PROXY_PID (the process whose CPU
# is counted), POP3_PORT and IMAP_PORT; "direct" starts nothing.
start_proxy() {
	case $1 in
	direct)
		PROXY_PID="" POP3_PORT=$DV_POP3 IMAP_PORT=$DV_IMAP
		return 0 ;;
	gatehouse)
		start_bg "$WORK/gatehouse.out" bin/gatehouse run -config "$WORK/gatehouse.yaml"
		PROXY_PID=$BG_PID POP3_PORT=$GH_POP3 IMAP_PORT=$GH_IMAP ;;
	haproxy)
		start_bg "$WORK/haproxy.out" haproxy -db -f "$WORK/haproxy.cfg"
		PROXY_PID=$BG_PID POP3_PORT=$HA_POP3 IMAP_PORT=$HA_IMAP ;;
	nginx)
		start_bg "$WORK/nginx.out" nginx -c "$WORK/nginx.conf"
		PROXY_PID=$BG_PID POP3_PORT=$NG_POP3 IMAP_PORT=$NG_IMAP ;;
	esac
	if ! wait_port "$IMAP_PORT" || ! wait_port "$POP3_PORT"; then
		cat "$WORK/$1.out" >&2
		return 1
	fi
	if [[ $1 == nginx ]]; then
		PROXY_PID=$(pgrep -P "$PROXY_PID" | head -1) # the worker does the work
	fi
}

stop_proxy() {
	[[ -n ${BG_PID:-} && $1 != direct ]] || return 0
	kill -TERM "$BG_PID" 2>/dev/null || true
	wait "$BG_PID" 2>/dev/null || true
}

# cpu_ticks prints utime+stime of a process in clock ticks (0 for none).
cpu_ticks() {
	[[ -n $1 ]] || { echo 0; return; }
	awk '{print $14 + $15}' "/proc/$1/stat"
}

# ---- the load generator ----------------------------------------------------

# load MODE PORT prints one number: logins/s (pop3, imap) or MB/s (fetch).
load() {
	python3 - "$@" "$SECONDS_PER_LOAD" "$CONCURRENCY" "$FETCH_ROUNDS" <<-'PY'
		import asyncio, sys, time
		mode, port, secs, conc, rounds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

		async def pop3(stop, user):
		    n = 0
		    while time.monotonic() < stop:
		        r, w = await asyncio.open_connection("127.0.0.1", port)
		        assert (await r.readline()).startswith(b"+OK")
		        w.write(b"USER %s\r\nPASS bench\r\n" % user)
		        assert (await r.readline()).startswith(b"+OK")
		        assert (await r.readline()).startswith(b"+OK"), "login failed"
		        w.write(b"STAT\r\nQUIT\r\n")
		        assert (await r.readline()).startswith(b"+OK")
		        await r.readline()
		        w.close()
		        n += 1
		    return n

		async def tagged(r, tag):
		    while True:
		        line = await r.readline()
		        if not line:
		            raise EOFError
		        if line.startswith(tag + b" "):
		            return line

		async def imap(stop, user):
		    n = 0
		    while time.monotonic() < stop:
		        r, w = await asyncio.open_connection("127.0.0.1", port)
		        assert (await r.readline()).startswith(b"* OK")
		        w.write(b"a LOGIN %s bench\r\n" % user)
		        assert (await tagged(r, b"a")).startswith(b"a OK"), "login failed"
		        w.write(b"b SELECT INBOX\r\nc LOGOUT\r\n")
		        await tagged(r, b"b")
		        await tagged(r, b"c")
		        w.close()
		        n += 1
		    return n

		async def fetch():
		    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
		    await r.readline()
		    w.write(b"a LOGIN big bench\r\nb SELECT INBOX\r\n")
		    await tagged(r, b"a")
		    await tagged(r, b"b")
		    total, start = 0, time.monotonic()
		    for i in range(rounds):
		        w.write(b"f FETCH 1 BODY.PEEK[]\r\n")
		        head = await r.readline()
		        size = int(head[head.rindex(b"{") + 1:head.rindex(b"}")])
		        await r.readexactly(size)
		        await tagged(r, b"f")
		        total += size
		    secs = time.monotonic() - start
		    w.write(b"z LOGOUT\r\n")
		    w.close()
		    return total / secs / 1e6

		async def main():
		    if mode == "fetch":
		        return await fetch()
		    stop = time.monotonic() + secs
		    start = time.monotonic()
		    f = pop3 if mode == "pop3" else imap
		    counts = await asyncio.gather(*(f(stop, b"bench%d" % i) for i in range(conc)))
		    return sum(counts) / (time.monotonic() - start)

		print("%.1f" % asyncio.run(main()))
	PY
}

# ---- the run ---------------------------------------------------------------

PATHS=(direct gatehouse haproxy nginx)
declare -A RESULTS # "path load" → space-separated figures, one per round

measure() {
	local p=$1 m port before after rate logins
	for m in pop3 imap fetch; do
		port=$IMAP_PORT
		[[ $m == pop3 ]] && port=$POP3_PORT
		before=$(cpu_ticks "$PROXY_PID")
		rate=$(load "$m" "$port") || { log "$p $m failed"; rate=""; }
		after=$(cpu_ticks "$PROXY_PID")
		RESULTS["$p $m"]+="$rate "
		if [[ $m != fetch && -n $rate && -n $PROXY_PID ]]; then
			logins=$(awk -v r="$rate" -v s="$SECONDS_PER_LOAD" 'BEGIN{print r*s}')
			RESULTS["$p $m-cpu"]+="$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$logins" 'BEGIN{printf "%.0f", t/hz*1e6/n}') "
		fi
	done
}

median() {
	tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{if(NR) print a[int((NR+1)/2)]; else print "-"}'
}

main() {
	install_peers
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	local have_gatehouse=1
	if ! go build -o bin/gatehouse ./cmd/gatehouse; then
		log "mail.sh: gatehouse does not build: its columns stay empty"
		have_gatehouse=0
	fi
	start_dovecot
	write_configs
	start_authhttp
	local r p failed=0
	for ((r = 1; r <= ROUNDS; r++)); do
		for p in "${PATHS[@]}"; do
			log "round $r: $p"
			if [[ $p == gatehouse ]] && ((!have_gatehouse)); then
				failed=1
				continue
			fi
			if ! start_proxy "$p"; then
				log "mail.sh: $p did not start (does gatehouse know protocol pop3/imap yet?)"
				failed=1
				continue
			fi
			measure "$p"
			stop_proxy "$p"
		done
	done
	printf '\n%-10s %14s %14s %14s %14s %14s\n' path "pop3 logins/s" "cpu-µs/login" "imap logins/s" "cpu-µs/login" "fetch MB/s"
	for p in "${PATHS[@]}"; do
		printf '%-10s %14s %14s %14s %14s %14s\n' "$p" \
			"$(median "${RESULTS["$p pop3"]:-}")" "$(median "${RESULTS["$p pop3-cpu"]:-}")" \
			"$(median "${RESULTS["$p imap"]:-}")" "$(median "${RESULTS["$p imap-cpu"]:-}")" \
			"$(median "${RESULTS["$p fetch"]:-}")"
	done
	printf '\ntargets: gatehouse logins/s >= 1.0 x nginx; fetch MB/s >= 0.95 x haproxy (CONCURRENCY=%s, %ss per load, median of %s rounds)\n' \
		"$CONCURRENCY" "$SECONDS_PER_LOAD" "$ROUNDS"
	return "$failed"
}

main "$@"
