package kubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ProbeUserAgent is what a 1.35 kubelet sends on HTTP probes; Knative images
// reject health checks without the kube-probe/ prefix.
const ProbeUserAgent = "kube-probe/1.35"

// prober runs one container's probes against the pod IP, from the root
// namespace, which reaches it over the bridge. It never dials anything but
// the pod IP.
type prober struct {
	podIP     string
	netns     string
	container *corev1.Container
	// execArgv turns an exec probe command into the argv to run in the
	// pod's namespace.
	execArgv func(cmd []string) ([]string, error)
	env      []string
}

func probeTimeout(p *corev1.Probe) time.Duration {
	if p.TimeoutSeconds > 0 {
		return time.Duration(p.TimeoutSeconds) * time.Second
	}
	return time.Second
}

// run performs one probe attempt. A nil error is success.
func (pr *prober) run(ctx context.Context, p *corev1.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout(p))
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		return pr.httpGet(ctx, p.HTTPGet)
	case p.TCPSocket != nil:
		addr, err := pr.addr(p.TCPSocket.Host, p.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	case p.Exec != nil:
		return pr.exec(ctx, p.Exec.Command)
	case p.GRPC != nil:
		return pr.grpc(ctx, p.GRPC)
	}
	return errors.New("probe has no handler")
}

// addr checks the probe's host (only the pod IP is allowed) and resolves a
// named port against the container's ports.
func (pr *prober) addr(host string, port intstr.IntOrString) (string, error) {
	if host != "" && host != pr.podIP {
		return "", fmt.Errorf("probe host %q refused: only the pod IP is probed", host)
	}
	n, err := resolvePort(port, pr.container)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(pr.podIP, strconv.Itoa(n)), nil
}

func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port %d", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil && n > 0 && n <= 65535 {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, port.StrVal)
}

func (pr *prober) httpGet(ctx context.Context, g *corev1.HTTPGetAction) error {
	addr, err := pr.addr(g.Host, g.Port)
	if err != nil {
		return err
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u, err := url.Parse(scheme + "://" + addr + path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", ProbeUserAgent)
	}
	if _, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	}
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil, // never a proxy from the environment
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as the kubelet does
		},
		// Follow redirects only to the pod itself; a redirect elsewhere
		// counts as success, as with the kubelet.
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if r.URL.Hostname() != pr.podIP || len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

func (pr *prober) exec(ctx context.Context, command []string) error {
	if len(command) == 0 {
		return errors.New("exec probe without command")
	}
	argv, err := pr.execArgv(command)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", pr.netns}, argv...)...)
	cmd.Env = pr.env
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("exec probe %v: %w: %s", command, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (pr *prober) grpc(ctx context.Context, g *corev1.GRPCAction) error {
	if g.Port <= 0 || g.Port > 65535 {
		return fmt.Errorf("invalid gRPC probe port %d", g.Port)
	}
	// passthrough: dial the literal address, no resolver involved.
	conn, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(pr.podIP, strconv.Itoa(int(g.Port))),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(ProbeUserAgent))
	if err != nil {
		return err
	}
	defer conn.Close()
	svc := ""
	if g.Service != nil {
		svc = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC health status %s", resp.GetStatus())
	}
	return nil
}
