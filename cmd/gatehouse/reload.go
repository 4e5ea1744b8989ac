package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cmdReload asks a running gatehouse to reload its configuration: by
// signal (SIGHUP to the process in -pidfile) or through the admin API.
func cmdReload(args []string) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	pidFile := fs.String("pidfile", "", "signal the process whose id is in this file")
	admin := fs.String("admin", "127.0.0.1:9900", "admin listener to POST /api/reload to (when no -pidfile)")
	token := fs.String("token", os.Getenv("GATEHOUSE_ADMIN_TOKEN"), "admin bearer token (default $GATEHOUSE_ADMIN_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *pidFile != "" {
		return signalReload(*pidFile)
	}
	return apiReload(*admin, *token)
}

func signalReload(pidFile string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reload:", err)
		return 1
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil {
		err = syscall.Kill(pid, syscall.SIGHUP)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reload:", err)
		return 1
	}
	fmt.Printf("sent SIGHUP to %d (the outcome is in its log)\n", pid)
	return 0
}

func apiReload(admin, token string) int {
	scheme := "http"
	if !strings.HasPrefix(admin, "127.") && !strings.HasPrefix(admin, "localhost") && !strings.HasPrefix(admin, "[::1]") {
		scheme = "https" // a non-loopback admin listener always speaks TLS
	}
	req, err := http.NewRequest(http.MethodPost, scheme+"://"+admin+"/api/reload", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reload:", err)
		return 2
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reload:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Print(string(body))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
