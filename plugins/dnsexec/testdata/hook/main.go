// Command hook is the dnsexec tests' DNS program: "hook present|cleanup
// <fqdn> <value>" sets or clears the TXT record through
// pebble-challtestsrv's management API at $TESTHOOK_API. It appends its
// arguments and environment as one JSON line to $TESTHOOK_RECORD, and
// misbehaves on purpose when $TESTHOOK_MODE is "hang" (starts a child and
// never exits; the child's pid goes to $TESTHOOK_PIDFILE) or "fail". In mode
// "count" it takes 150 ms and records how many hooks were running at once
// (itself included), counted through a file each in $TESTHOOK_RECORD.running.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	running := 0
	if f := os.Getenv("TESTHOOK_RECORD"); f != "" && os.Getenv("TESTHOOK_MODE") == "count" {
		dir := f + ".running"
		os.MkdirAll(dir, 0o700)
		mine := filepath.Join(dir, strconv.Itoa(os.Getpid()))
		os.WriteFile(mine, nil, 0o600)
		entries, _ := os.ReadDir(dir)
		running = len(entries)
		time.Sleep(150 * time.Millisecond)
		os.Remove(mine)
	}
	if f := os.Getenv("TESTHOOK_RECORD"); f != "" {
		wd, _ := os.Getwd()
		line, _ := json.Marshal(map[string]any{"args": os.Args[1:], "env": os.Environ(), "cwd": wd, "running": running})
		out, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out.Write(append(line, '\n'))
		out.Close()
	}
	switch os.Getenv("TESTHOOK_MODE") {
	case "hang":
		child := exec.Command("sleep", "300")
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.WriteFile(os.Getenv("TESTHOOK_PIDFILE"), []byte(strconv.Itoa(child.Process.Pid)), 0o600)
		time.Sleep(300 * time.Second)
	case "fail":
		fmt.Fprintln(os.Stderr, "boom: provider said no")
		fmt.Print(strings.Repeat("x", 100000))
		os.Exit(2)
	}
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: hook present|cleanup <fqdn> <value>")
		os.Exit(2)
	}
	path := map[string]string{"present": "/set-txt", "cleanup": "/clear-txt"}[os.Args[1]]
	if path == "" {
		fmt.Fprintf(os.Stderr, "unknown action %q\n", os.Args[1])
		os.Exit(2)
	}
	body, _ := json.Marshal(map[string]string{"host": os.Args[2], "value": os.Args[3]})
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Post(os.Getenv("TESTHOOK_API")+path, "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, resp.Status)
		os.Exit(1)
	}
	fmt.Printf("%s %s done\n", os.Args[1], os.Args[2])
}
