// Package knative drives Knative Serving on the local stack the way its
// users do: Knative Services applied and their traffic changed with
// kubectl, requests sent through the gateway by host name. `make demo` and
// the tests of this package use it.
package knative

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingclient "knative.dev/serving/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/workload"
)

// BackendImage is the e2e backend (e2e/cmd/backend), as Serving runs it: it
// answers with its NAME and what it got.
const BackendImage = workload.KnativeBackendImage

// Cluster is Serving on a running stack, reached with kubectl and the
// Serving API.
type Cluster struct {
	Kubectl    string // bin/kubectl
	Kubeconfig string
	Gateway    string // host:port of the external HTTP listener
	Kube       kubernetes.Interface
	Serving    servingclient.Interface
	// Log, if set, receives each kubectl command line before it runs.
	Log io.Writer
}

// New connects to the stack's Serving.
func New(st *stack.Stack) (*Cluster, error) {
	sc, err := servingclient.NewForConfig(rest.CopyConfig(st.RESTConfig))
	if err != nil {
		return nil, err
	}
	return &Cluster{
		Kubectl:    filepath.Join(st.Options().BinDir, "kubectl"),
		Kubeconfig: st.Kubeconfig,
		Gateway:    st.External.HTTP,
		Kube:       st.Client,
		Serving:    sc,
	}, nil
}

// Run runs kubectl with the stack's kubeconfig; stdin, if not empty,
// is its input (for `apply -f -`).
func (c *Cluster) Run(ctx context.Context, stdin string, args ...string) (string, error) {
	if c.Log != nil {
		line := "kubectl " + strings.Join(quoteArgs(args), " ")
		if stdin != "" {
			line += " <<EOF\n" + strings.TrimRight(stdin, "\n") + "\nEOF"
		}
		fmt.Fprintln(c.Log, "  $ "+line)
	}
	cmd := exec.CommandContext(ctx, c.Kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"{}[]*$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

// ServiceYAML is a Knative Service running the backend as revision
// <name>-<rev>, saying NAME=rev; extra annotations go on the revision
// template (autoscaling settings, say).
func ServiceYAML(ns, name, rev string, annotations map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  template:\n    metadata:\n      name: %s-%s\n", name, ns, name, rev)
	if len(annotations) > 0 {
		b.WriteString("      annotations:\n")
		for k, v := range annotations {
			fmt.Fprintf(&b, "        %s: %q\n", k, v)
		}
	}
	fmt.Fprintf(&b, "    spec:\n      containers:\n        - image: %s\n          env:\n            - name: NAME\n              value: %s\n", BackendImage, rev)
	return b.String()
}

// Apply applies a Knative Service and waits until it is Ready at its new
// generation.
func (c *Cluster) Apply(ctx context.Context, manifest string) error {
	if _, err := c.Run(ctx, manifest, "apply", "-f", "-"); err != nil {
		return err
	}
	var meta struct {
		Metadata struct{ Name, Namespace string }
	}
	if err := yaml.Unmarshal([]byte(manifest), &meta); err != nil {
		return err
	}
	return c.WaitReady(ctx, meta.Metadata.Namespace, meta.Metadata.Name)
}

// Target is one entry of a Service's traffic.
type Target struct {
	Revision string `json:"revisionName,omitempty"`
	Latest   bool   `json:"latestRevision,omitempty"`
	Tag      string `json:"tag,omitempty"`
	Percent  int64  `json:"percent"`
}

// SetTraffic patches a Service's traffic, as `kn service update --traffic`
// does, and waits until the route serves it (Ready at the new generation).
func (c *Cluster) SetTraffic(ctx context.Context, ns, name string, targets ...Target) error {
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"traffic": targets}})
	if err != nil {
		return err
	}
	if _, err := c.Run(ctx, "", "patch", "ksvc", name, "-n", ns, "--type=merge", "-p", string(patch)); err != nil {
		return err
	}
	return c.WaitReady(ctx, ns, name)
}

// WaitReady waits until a Service is Ready and has observed its latest
// generation, then returns; its route is served by then (Serving waits for
// the KIngress, and Sluice marks that Ready only once every Envoy has it).
func (c *Cluster) WaitReady(ctx context.Context, ns, name string) error {
	var last *servingv1.Service
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := c.Serving.ServingV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = s
		return s.Status.ObservedGeneration == s.Generation && s.IsReady(), nil
	})
	if err != nil {
		why := "not found"
		if last != nil {
			why = "conditions:"
			for _, cond := range last.Status.Conditions {
				why += fmt.Sprintf(" %s=%s (%s: %s)", cond.Type, cond.Status, cond.Reason, cond.Message)
			}
		}
		return fmt.Errorf("Knative Service %s/%s not Ready: %s", ns, name, why)
	}
	return nil
}

// Host is a Service's external host; with a tag, the tag's.
func Host(ns, name, tag string) string {
	if tag != "" {
		name = tag + "-" + name
	}
	return fmt.Sprintf("%s.%s.%s", name, ns, stack.ServingDomain)
}

// Reply is what the backend answers.
type Reply struct {
	Name    string              `json:"name"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
}

// Client sends requests to the gateway by host name: every host resolves
// to the gateway, as a wildcard DNS entry for the domain would do.
func (c *Cluster) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, c.Gateway)
		},
		MaxIdleConnsPerHost: 16,
	}}
}

// Get sends one GET to host (through the gateway) with the given headers
// and returns the status and the backend's reply.
func Get(ctx context.Context, hc *http.Client, host, path string, header map[string]string) (int, Reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		return 0, Reply{}, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, Reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, Reply{}, err
	}
	var r Reply
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &r); err != nil {
			return resp.StatusCode, r, fmt.Errorf("reply %q: %w", b, err)
		}
	}
	return resp.StatusCode, r, nil
}

// Tally sends n GETs to host and counts the answers by revision (the
// backend's NAME); failures count under "error" and "status <code>".
func Tally(ctx context.Context, hc *http.Client, host string, header map[string]string, n int) map[string]int {
	out := map[string]int{}
	for range n {
		code, r, err := Get(ctx, hc, host, "/", header)
		switch {
		case err != nil:
			out["error"]++
		case code != http.StatusOK:
			out[fmt.Sprintf("status %d", code)]++
		default:
			out[r.Name]++
		}
	}
	return out
}

// Prober keeps calling a host from several clients until Stop.
type Prober struct {
	stop   chan struct{}
	done   sync.WaitGroup
	mu     sync.Mutex
	counts map[string]int
}

// StartProber starts workers clients, each sending one GET after another.
func (c *Cluster) StartProber(host string, workers int) *Prober {
	p := &Prober{stop: make(chan struct{}), counts: map[string]int{}}
	for range workers {
		p.done.Go(func() {
			hc := c.Client(30 * time.Second)
			for {
				select {
				case <-p.stop:
					return
				default:
				}
				part := Tally(context.Background(), hc, host, nil, 1)
				p.mu.Lock()
				for k, v := range part {
					p.counts[k] += v
				}
				p.mu.Unlock()
			}
		})
	}
	return p
}

// Stop ends the clients and returns the answers by revision, as Tally.
func (p *Prober) Stop() map[string]int {
	close(p.stop)
	p.done.Wait()
	return p.counts
}

// Failed counts the answers of a tally that are not from these revisions.
func Failed(counts map[string]int, revisions ...string) int {
	n := 0
	for k, v := range counts {
		if !slices.Contains(revisions, k) {
			n += v
		}
	}
	return n
}

// WaitScaledToZero waits until a revision has no pod left.
func (c *Cluster) WaitScaledToZero(ctx context.Context, ns, revision string, timeout time.Duration) error {
	sel := metav1.ListOptions{LabelSelector: "serving.knative.dev/revision=" + revision}
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, false, func(ctx context.Context) (bool, error) {
		l, err := c.Kube.CoreV1().Pods(ns).List(ctx, sel)
		return err == nil && len(l.Items) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("revision %s did not scale to zero within %v: %w", revision, timeout, err)
	}
	return nil
}
