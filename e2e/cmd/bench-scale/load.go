package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// load is what keep-alive clients got from one host for a while.
type load struct {
	Requests  int           `json:"requests"`
	Failed    int           `json:"failed"` // another status, or a broken connection
	PerSecond float64       `json:"requests_per_second"`
	P50, P99  time.Duration `json:"-"`
	P50us     float64       `json:"p50_us"`
	P99us     float64       `json:"p99_us"`
	// EnvoyCPUus is the Envoy process's CPU time per request.
	EnvoyCPUus float64 `json:"envoy_cpu_us_per_request"`
	// ClientCPUus is this process's (the clients' and the backend's).
	ClientCPUus float64 `json:"client_cpu_us_per_request"`
}

// hammer sends GET / for host to addr from clients keep-alive HTTP/1.1
// connections, one request at a time each, for d; a request counts when
// it is answered with want. The clients are raw HTTP/1.1 so that they
// cost little beside Envoy on a shared machine.
func hammer(addr, host string, want, clients int, d time.Duration) load {
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: bench-dataplane\r\n\r\n")
	var mu sync.Mutex
	var lat []time.Duration
	failed := 0
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for range clients {
		wg.Go(func() {
			mine := make([]time.Duration, 0, 1<<16)
			bad := 0
			var c net.Conn
			var r *bufio.Reader
			for time.Now().Before(deadline) {
				if c == nil {
					var err error
					if c, err = net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
						bad++
						time.Sleep(10 * time.Millisecond)
						continue
					}
					r = bufio.NewReaderSize(c, 16<<10)
				}
				t := time.Now()
				_ = c.SetDeadline(t.Add(5 * time.Second))
				code, keep, err := roundTrip(c, r, req)
				if err != nil || code != want {
					bad++
				} else {
					mine = append(mine, time.Since(t))
				}
				if err != nil || !keep {
					c.Close()
					c = nil
				}
			}
			if c != nil {
				c.Close()
			}
			mu.Lock()
			lat = append(lat, mine...)
			failed += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	l := load{Requests: len(lat), Failed: failed, PerSecond: float64(len(lat)) / d.Seconds()}
	if len(lat) > 0 {
		l.P50, l.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
		l.P50us, l.P99us = float64(l.P50.Microseconds()), float64(l.P99.Microseconds())
	}
	return l
}

// status is the status of one GET / for host.
func status(addr, host string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	code, _, err := roundTrip(c, bufio.NewReader(c), []byte("GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"))
	return code, err
}

// roundTrip writes req and reads one response: its status, and whether
// the connection stays open.
func roundTrip(c net.Conn, r *bufio.Reader, req []byte) (int, bool, error) {
	if _, err := c.Write(req); err != nil {
		return 0, false, err
	}
	tp := textproto.NewReader(r)
	line, err := tp.ReadLine()
	if err != nil {
		return 0, false, err
	}
	_, rest, _ := strings.Cut(line, " ")
	code, err := strconv.Atoi(strings.SplitN(rest, " ", 2)[0])
	if err != nil {
		return 0, false, fmt.Errorf("status line %q", line)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return 0, false, err
	}
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("no Content-Length in the %d response", code)
	}
	if _, err := io.CopyN(io.Discard, r, n); err != nil {
		return 0, false, err
	}
	return code, !strings.EqualFold(h.Get("Connection"), "close"), nil
}
