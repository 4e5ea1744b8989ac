#!/usr/bin/env bash
# https.sh — HTTPS benchmark: gatehouse's Exchange-aware HTTPS frontend side
# by side with HAProxy (mode http, nbthread 1) and nginx (http, one worker),
# in one run on this machine, over loopback. Run from the repository root.
#
# Every proxy terminates TLS with the same ECDSA P-256 certificate and talks
# plain HTTP/1.1 with keep-alive to one nginx back-end in its own process;
# gatehouse runs with GOMAXPROCS=1 against one thread or worker of the others.
#
# Loads, each against every proxy in turn (and the back-end directly):
#   small   wrk -t2 -c64 on a 1 KiB file over keep-alive: requests/s, p99 ms
#   large   wrk -t2 -c64 on a 1 MiB file: MB/s (1 MB = 1e6 bytes)
#   pings   PINGS ActiveSync Pings held through the proxy by a back-end that
#           never answers them (another process): growth of the proxy's RSS
#           (smaps_rollup, nginx master+worker summed) divided by PINGS. The
#           Ping clients offer X25519 and P-256 only, like wrk, so that every
#           proxy does the same key exchange (OpenSSL 3.0 knows no ML-KEM).
# The ping load runs on a freshly started proxy, and the throughput loads on
# another fresh start, so that neither inherits the other's connections.
#
# gatehouse's frontend is driven by a small program built from this script
# (protocols/https.Frontend in a proxy.Server), so the figures are those of
# the frontend itself whatever the CLI's wiring.
#
# Knobs (environment): DURATION (10, seconds per wrk run), PINGS (5000),
# ROUNDS (3: every figure is the median of the rounds; each round runs every
# proxy in turn so that a burst of other work on the shared machine hurts no
# single column), SETTLE (3, seconds before memory is read).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
PINGS=${PINGS:-5000}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-3}
PATH=$PATH:/usr/sbin:/sbin

die() { log "https.sh: $*"; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/gatehouse-https-bench.XXXXXX)
chmod 755 "$WORK" # nginx's workers read the files as another user
STARTED=()

trap cleanup EXIT
trap 'exit 130' INT TERM

install_peers() {
	local missing=()
	command -v haproxy >/dev/null || missing+=(haproxy)
	command -v nginx >/dev/null || missing+=(nginx-light)
	command -v wrk >/dev/null || missing+=(wrk)
	command -v openssl >/dev/null || missing+=(openssl)
	((${#missing[@]} == 0)) && return 0
	log "installing ${missing[*]} ..."
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# build_runner builds the program that runs gatehouse's frontend, the
# holding back-end and the Ping clients.
build_runner() {
	mkdir -p "$WORK/runner"
	cat >"$WORK/runner/go.mod" <<-MOD
		module gatehouse-https-bench

		go 1.26.8

		require github.com/gatehouse-proxy/gatehouse v0.0.0

		replace github.com/gatehouse-proxy/gatehouse => $ROOT
	MOD
	cp "$ROOT/go.sum" "$WORK/runner/"
	write_runner >"$WORK/runner/main.go"
	(cd "$WORK/runner" && GOFLAGS=-mod=mod go build -o "$WORK/run" .) || die "the runner does not build"
}

write_runner() {
	cat <<-'GO'
		package main

		import (
			"bufio"
			stdtls "crypto/tls"
			"flag"
			"fmt"
			"io"
			"log/slog"
			"net"
			"net/http"
			"os"
			"strings"
			"sync"
			"sync/atomic"
			"time"

			"github.com/gatehouse-proxy/gatehouse/protocols/https"
			"github.com/gatehouse-proxy/gatehouse/proxy"
		)

		func main() {
			fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
			listen := fs.String("listen", "127.0.0.1:0", "listen address")
			backend := fs.String("backend", "", "back-end address")
			cert := fs.String("cert", "", "certificate and key PEM")
			target := fs.String("target", "", "proxy address")
			n := fs.Int("n", 5000, "Pings to hold")
			fs.Parse(os.Args[2:])
			var err error
			switch os.Args[1] {
			case "proxy":
				err = runProxy(*listen, *backend, *cert)
			case "hold":
				err = runHold(*listen)
			case "pings":
				err = runPings(*target, *n)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}

		func runProxy(listen, backend, pem string) error {
			cert, err := stdtls.LoadX509KeyPair(pem, pem)
			if err != nil {
				return err
			}
			quiet := slog.New(slog.DiscardHandler)
			pool := &proxy.Pool{Name: "bench", Backends: []*proxy.Backend{proxy.NewBackend("b", backend, 1)}}
			f := &https.Frontend{Pool: pool, TLSMode: "implicit", Log: quiet,
				EdgeTLS: &stdtls.Config{Certificates: []stdtls.Certificate{cert}, NextProtos: []string{"http/1.1"}}}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Println("LISTEN", ln.Addr())
			return (&proxy.Server{Name: "bench", Handler: f, Log: quiet}).Serve(ln)
		}

		// runHold is a back-end that holds every ActiveSync Ping until the
		// client goes away and answers anything else at once.
		func runHold(listen string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Println("LISTEN", ln.Addr())
			return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if strings.Contains(r.URL.RawQuery, "Cmd=Ping") {
					<-r.Context().Done()
					return
				}
				io.WriteString(w, "ok\n")
			}))
		}

		const ping = "POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=u%d&DeviceId=d%d&DeviceType=iPhone HTTP/1.1\r\n" +
			"Host: mail.example.com\r\nMS-ASProtocolVersion: 14.1\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n" +
			"Authorization: Basic dXNlcjpwYXNz\r\nContent-Length: 6\r\n\r\n<Ping>"

		// clientTLS offers X25519 and P-256 only: the OpenSSL 3.0 of HAProxy
		// and nginx here knows no ML-KEM, so every proxy does the same key
		// exchange.
		var clientTLS = &stdtls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
			CurvePreferences: []stdtls.CurveID{stdtls.X25519, stdtls.CurveP256}}

		// runPings opens n TLS connections to the proxy, sends a Ping on
		// each, says READY and keeps them until killed. A connection that
		// gets an answer or closes is counted as lost.
		func runPings(target string, n int) error {
			var failed, lost atomic.Int32
			var wg sync.WaitGroup
			sem := make(chan struct{}, 32)
			for i := range n {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					c, err := stdtls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", target, clientTLS)
					if err != nil {
						failed.Add(1)
						return
					}
					fmt.Fprintf(c, ping, i, i)
					go func() {
						bufio.NewReader(c).ReadByte()
						lost.Add(1)
					}()
				}()
			}
			wg.Wait()
			time.Sleep(time.Second)
			fmt.Printf("READY held=%d failed=%d lost=%d\n", n-int(failed.Load()), failed.Load(), lost.Load())
			select {}
		}
	GO
}

make_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=mail.example.com -addext subjectAltName=DNS:mail.example.com,IP:127.0.0.1 \
		-keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
	cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/both.pem"
	head -c 1024 /dev/urandom >"$WORK/www/1k"
	head -c 1048576 /dev/urandom >"$WORK/www/1m"
	chmod 644 "$WORK/www/1k" "$WORK/www/1m"
}

# start_backends starts the nginx file server and the holding back-end.
start_backends() {
	mkdir -p "$WORK/www" "$WORK/be"
	make_cert
	BE_PORT=$(free_port)
	cat >"$WORK/be/nginx.conf" <<-CONF
		daemon off;
		worker_processes 1;
		worker_rlimit_nofile 20000;
		pid $WORK/be/nginx.pid;
		error_log $WORK/be/error.log warn;
		events { worker_connections 16000; }
		http {
		    access_log off;
		    keepalive_requests 1000000;
		    server { listen 127.0.0.1:$BE_PORT; root $WORK/www; }
		}
	CONF
	start_bg "$WORK/be.out" nginx -p "$WORK/be" -e "$WORK/be/error.log" -c "$WORK/be/nginx.conf"
	start_bg "$WORK/hold.out" "$WORK/run" hold
	wait_line "$WORK/hold.out" '^LISTEN ' 10 "$BG_PID" || die "the holding back-end did not start"
	HOLD_ADDR=$(awk '/^LISTEN /{print $2; exit}' "$WORK/hold.out")
	FILES_PORT=$(free_port)
	PINGS_PORT=$(free_port)
}

# write_configs writes HAProxy's and nginx's configurations: one listener
# for the file back-end, one for the holding back-end.
write_configs() {
	cat >"$WORK/haproxy.cfg" <<-CFG
		global
		    nbthread 1
		    maxconn 9000
		    tune.ssl.default-dh-param 2048
		defaults
		    mode http
		    maxconn 9000
		    option http-keep-alive
		    http-reuse safe
		    timeout connect 2s
		    timeout client 5m
		    timeout server 5m
		    timeout http-keep-alive 5m
		frontend files
		    bind 127.0.0.1:$FILES_PORT ssl crt $WORK/both.pem alpn http/1.1
		    default_backend files
		backend files
		    server nginx 127.0.0.1:$BE_PORT
		frontend pings
		    bind 127.0.0.1:$PINGS_PORT ssl crt $WORK/both.pem alpn http/1.1
		    default_backend pings
		backend pings
		    server hold $HOLD_ADDR
	CFG
	mkdir -p "$WORK/px"
	cat >"$WORK/px/nginx.conf" <<-CONF
		daemon off;
		master_process on;
		worker_processes 1;
		worker_rlimit_nofile 20000;
		pid $WORK/px/nginx.pid;
		error_log $WORK/px/error.log warn;
		events { worker_connections 16000; }
		http {
		    access_log off;
		    keepalive_requests 1000000;
		    keepalive_timeout 5m;
		    proxy_http_version 1.1;
		    proxy_set_header Connection "";
		    proxy_read_timeout 5m;
		    ssl_certificate $WORK/cert.pem;
		    ssl_certificate_key $WORK/key.pem;
		    upstream files { server 127.0.0.1:$BE_PORT; keepalive 64; }
		    upstream pings { server $HOLD_ADDR; }
		    server { listen 127.0.0.1:$FILES_PORT ssl; location / { proxy_pass http://files; } }
		    server { listen 127.0.0.1:$PINGS_PORT ssl; location / { proxy_pass http://pings; } }
		}
	CONF
}

# start_proxy starts proxy $1 and sets PROXY_PID and MEM_PIDS.
start_proxy() {
	local name=$1
	case $name in
	gatehouse)
		start_bg "$WORK/gh-files.log" env GOMAXPROCS=1 "$WORK/run" proxy -listen "127.0.0.1:$FILES_PORT" \
			-backend "127.0.0.1:$BE_PORT" -cert "$WORK/both.pem"
		PROXY_PID=$BG_PID
		start_bg "$WORK/gh-pings.log" env GOMAXPROCS=1 "$WORK/run" proxy -listen "127.0.0.1:$PINGS_PORT" \
			-backend "$HOLD_ADDR" -cert "$WORK/both.pem"
		PINGS_PID=$BG_PID
		;;
	haproxy)
		start_bg "$WORK/haproxy.log" haproxy -db -f "$WORK/haproxy.cfg"
		PROXY_PID=$BG_PID PINGS_PID=$BG_PID
		;;
	nginx)
		start_bg "$WORK/nginx.log" nginx -p "$WORK/px" -e "$WORK/px/error.log" -c "$WORK/px/nginx.conf"
		PROXY_PID=$BG_PID PINGS_PID=$BG_PID
		;;
	esac
	wait_ready "$FILES_PORT" || die "$name did not become ready"
	MEM_PIDS=("$PINGS_PID")
	if [[ $name == nginx ]]; then
		mapfile -t workers < <(pgrep -P "$PROXY_PID")
		MEM_PIDS+=("${workers[@]}")
	fi
}

# stop_proxy stops every process of the proxy.
stop_proxy() {
	stop_pid "$PROXY_PID"
	[[ $PINGS_PID == "$PROXY_PID" ]] || stop_pid "$PINGS_PID"
}

wait_ready() {
	local i
	for ((i = 0; i < 100; i++)); do
		curl -skf -o /dev/null --max-time 1 "https://127.0.0.1:$1/1k" && return 0
		sleep 0.1
	done
	return 1
}

declare -A RES

rss_kib() {
	local pid
	for pid; do cat "/proc/$pid/smaps_rollup"; done | awk '/^Rss:/{r+=$2} END{print r+0}'
}

# load_pings holds PINGS Pings through proxy $1 and records KiB per Ping.
load_pings() {
	local name=$1 before after out
	[[ $name == direct ]] && return 0
	before=$(rss_kib "${MEM_PIDS[@]}")
	start_bg "$WORK/pings.out" "$WORK/run" pings -target "127.0.0.1:$PINGS_PORT" -n "$PINGS"
	local pid=$BG_PID
	if ! wait_line "$WORK/pings.out" '^READY ' 180 "$pid"; then
		stop_pid "$pid"
		record "$name" ping FAIL
		return 0
	fi
	sleep "$SETTLE"
	after=$(rss_kib "${MEM_PIDS[@]}")
	out=$(cat "$WORK/pings.out")
	stop_pid "$pid"
	if ! grep -q 'failed=0 lost=0' <<<"$out"; then
		log "$name: Pings were not all held: $out"
		record "$name" ping FAIL
		return 0
	fi
	record "$name" ping "$(awk -v a="$after" -v b="$before" -v n="$PINGS" 'BEGIN{printf "%.1f", (a-b)/n}')"
	log "$name: $PINGS Pings held: RSS $before -> $after KiB"
}

# load_wrk runs wrk against proxy $1 for file $2 and records requests/s,
# p99 (ms) and MB/s under the metric prefix $3.
load_wrk() {
	local name=$1 file=$2 prefix=$3 url out
	url="https://127.0.0.1:$FILES_PORT/$file"
	[[ $name == direct ]] && url="http://127.0.0.1:$BE_PORT/$file"
	out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "$url" 2>&1) || { log "$out"; record "$name" "$prefix-rps" FAIL; return 0; }
	local rps p99 mbs
	rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
	p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}' <<<"$out")
	mbs=$(awk '/^Transfer\/sec:/{v=$2; if (v ~ /GB$/) {sub(/GB/,"",v); v*=1073.741824} else if (v ~ /MB$/) {sub(/MB/,"",v); v*=1.048576} else if (v ~ /KB$/) {sub(/KB/,"",v); v*=0.001024}; printf "%.0f", v}' <<<"$out")
	if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
		log "$name $file: errors: $(grep 'Non-2xx\|Socket errors' <<<"$out")"
		rps="$rps!"
	fi
	record "$name" "$prefix-rps" "$rps"
	record "$name" "$prefix-p99" "$p99"
	record "$name" "$prefix-mbs" "$mbs"
	log "$name $file: $rps req/s, p99 $p99 ms, $mbs MB/s"
}

median() {
	tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR]=$1} END{if (NR==0) print "-"; else print v[int((NR+1)/2)]}'
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "-" }'
}

report() {
	local p m
	printf '\n%-10s %12s %10s %12s %14s\n' proxy "1KiB req/s" "p99 ms" "1MiB MB/s" "KiB/held Ping"
	for p in direct gatehouse haproxy nginx; do
		printf '%-10s %12s %10s %12s %14s\n' "$p" "$(median "${RES[$p:small-rps]:-}")" \
			"$(median "${RES[$p:small-p99]:-}")" "$(median "${RES[$p:large-mbs]:-}")" "$(median "${RES[$p:ping]:-}")"
	done
	local g h n
	g=$(median "${RES[gatehouse:small-rps]:-}") h=$(median "${RES[haproxy:small-rps]:-}") n=$(median "${RES[nginx:small-rps]:-}")
	printf '\ngatehouse/haproxy req/s: %s (target >= 0.8)   gatehouse/nginx req/s: %s (target >= 0.8)\n' "$(ratio "$g" "$h")" "$(ratio "$g" "$n")"
	g=$(median "${RES[gatehouse:large-mbs]:-}") h=$(median "${RES[haproxy:large-mbs]:-}")
	printf 'gatehouse/haproxy MB/s: %s (target >= 1.0)\n' "$(ratio "$g" "$h")"
	printf 'gatehouse KiB per held Ping: %s (target <= 32)\n' "$(median "${RES[gatehouse:ping]:-}")"
}

main() {
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	install_peers
	build_runner
	start_backends
	write_configs
	local round p
	for ((round = 1; round <= ROUNDS; round++)); do
		log "round $round of $ROUNDS"
		for p in direct gatehouse haproxy nginx; do
			if [[ $p != direct ]]; then
				start_proxy "$p"
				load_pings "$p"
				stop_proxy # the throughput loads get a fresh proxy too
				start_proxy "$p"
			fi
			load_wrk "$p" 1k small
			load_wrk "$p" 1m large
			[[ $p == direct ]] || stop_proxy
		done
	done
	report
}

main "$@"
