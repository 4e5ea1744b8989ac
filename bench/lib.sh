#!/usr/bin/env bash
# Shell plumbing the benchmark scripts share: logging, background
# processes and their cleanup, waiting, arithmetic, reading /proc. Each
# script sources it and keeps what is its own. Callers set WORK (a temp
# directory) and the STARTED array before cleanup runs.
# shellcheck shell=bash disable=SC2034

log() { printf '%s\n' "$*" >&2; }

start_bg() {
	local out=$1
	shift
	"$@" >"$out" 2>&1 &
	BG_PID=$!
	STARTED+=("$BG_PID")
}

record() { RES[$1:$2]+=" $3"; }

# wait_line waits (bounded by $3 s) for a line matching $2 in file $1 while
# process $4 lives.
wait_line() {
	local file=$1 pattern=$2 secs=$3 pid=$4 i
	for ((i = 0; i < secs * 20; i++)); do
		grep -q -- "$pattern" "$file" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; return 1; }
		sleep 0.05
	done
	cat "$file" >&2
	return 1
}

# calc evaluates an awk expression over a and b, printing it with format $4.
calc() { awk -v a="$1" -v b="$2" "BEGIN{printf \"$4\", $3}"; }

# children prints the pids whose parent is $1.
children() {
	local f stat
	local -a fs
	for f in /proc/[0-9]*/stat; do
		{ read -r stat <"$f"; } 2>/dev/null || continue # gone meanwhile
		read -r -a fs <<<"${stat##*) }"
		[[ ${fs[1]} == "$1" ]] || continue
		f=${f#/proc/}
		echo "${f%/stat}"
	done
}

# kv prints the value of key $1 in the key=value line(s) $2.
kv() { grep -o -- "\b$1=[^ ]*" <<<"$2" | head -1 | cut -d= -f2; }

# show_log passes on what proxy $2 wrote to file $1 (warnings, errors), then
# empties the file for the next round.
show_log() {
	[[ -s $1 ]] || return 0
	head -5 "$1" | sed "s/^/$2 said: /" >&2
	: >"$1"
}

cleanup() {
	local pid
	for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
	rm -rf "$WORK"
}

stop_pid() {
	local pid=$1 i p
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	local -a keep=()
	for p in "${STARTED[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	STARTED=("${keep[@]}")
}

# cpu_seconds prints the summed utime+stime of the given pids, in seconds.
cpu_seconds() {
	local pid stat t=0
	local -a f
	for pid; do
		read -r stat <"/proc/$pid/stat"
		read -r -a f <<<"${stat##*) }"
		t=$((t + f[11] + f[12])) # fields 14 and 15 of proc(5), counted from state
	done
	awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.3f", t/hz}'
}

# free_port prints a port the kernel just handed out on 127.0.0.1.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
