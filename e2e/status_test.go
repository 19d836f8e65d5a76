//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/e2e/workload"
	"sluice.dev/sluice/internal/status"
)

// sluiceStatus runs `bin/sluice status` against the stack with the Envoys'
// client certificate.
func sluiceStatus(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(st.Options().BinDir, "sluice")
	if st.Options().XDSTLS {
		f := st.XDSTLSFiles("xds-client")
		args = append([]string{"--xds-tls-cert", f.Cert, "--xds-tls-key", f.Key, "--xds-tls-ca", f.CA}, args...)
	}
	cmd := exec.Command(bin, append([]string{"status", "--kubeconfig", st.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("sluice status %v: %v: %s", args, err, errb.String())
	}
	return out.String(), nil
}

func statusJSON(t *testing.T, v any, args ...string) error {
	t.Helper()
	out, err := sluiceStatus(t, append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// TestStatusCommand runs `sluice status` against the two replicas and two
// Envoys: the fleet from one replica and from each, the table, one
// KIngress served by both Envoys, then with one Envoy frozen (SIGSTOP) an
// update it has not taken, and the ingress an Envoy rejected.
func TestStatusCommand(t *testing.T) {
	backend(t, "status", 1)
	host := "status.sluice-e2e.example.com"
	spec := func(path string) v1alpha1.IngressSpec {
		return v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath(path, split("status", 100, nil)))}}
	}
	createIngress(t, "status", spec(""))
	envoys := []string{"envoy-0", "envoy-1"}

	// The fleet, as one replica sees it and as each replica does.
	for _, servers := range []string{xdsAddr(0), xdsAddr(1), xdsAddr(0) + "," + xdsAddr(1)} {
		eventually(t, 15*time.Second, "every type SYNCED on both Envoys from "+servers, func() error {
			var f status.Fleet
			if err := statusJSON(t, &f, "--server", servers); err != nil {
				return err
			}
			if len(f.Envoys) != 2 || f.Envoys[0].Node != envoys[0] || f.Envoys[1].Node != envoys[1] || len(f.Unreachable) > 0 {
				return fmt.Errorf("envoys %+v unreachable %+v", f.Envoys, f.Unreachable)
			}
			for _, e := range f.Envoys {
				if !strings.HasPrefix(e.Replica, "sluice-") {
					return fmt.Errorf("%s: replica %q", e.Node, e.Replica)
				}
				for _, ts := range e.Types {
					if ts.Type != "SDS" && ts.State != status.Synced {
						return fmt.Errorf("%s %s: %+v", e.Node, ts.Type, ts)
					}
				}
			}
			if want := strings.Count(servers, ",") + 1; len(f.Scope) != want {
				return fmt.Errorf("scope %v: want %d answers", f.Scope, want)
			}
			return nil
		})
	}
	// Envoys report their heap every 5 s, to either replica.
	var table string
	eventually(t, 30*time.Second, "envoy-0's heap in the table", func() (err error) {
		if table, err = sluiceStatus(t, "--server", xdsAddr(1)); err == nil && !strings.Contains(table, "%") {
			err = fmt.Errorf("no heap pressure:\n%s", table)
		}
		return err
	})
	t.Logf("sluice status:\n%s", table)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 3 || strings.Join(strings.Fields(lines[0]), " ") != "ENVOY REPLICA HEAP LDS SRDS RDS CDS EDS SDS" ||
		!strings.HasPrefix(lines[1], "envoy-0 ") || !strings.HasPrefix(lines[2], "envoy-1 ") || !strings.Contains(lines[1], "SYNCED (") ||
		!regexp.MustCompile(`^envoy-0 +sluice-[01] +[0-9]+% `).MatchString(lines[1]) {
		t.Errorf("table:\n%s", table)
	}

	// One KIngress: both Envoys serve it.
	var in status.Ingress
	if err := statusJSON(t, &in, "--server", xdsAddr(0), ns+"/status"); err != nil {
		t.Fatal(err)
	}
	if !in.Current || len(in.Envoys) != 2 || !in.Envoys[0].Serving || !in.Envoys[1].Serving {
		t.Fatalf("%+v", in)
	}
	if n := len(in.Envoys[0].Resources); n < 2 { // its routes and its host's scopes
		t.Errorf("resources of the ingress on envoy-0: %+v", in.Envoys[0].Resources)
	}

	// envoy-1 frozen: an update reaches envoy-0 only; status names envoy-1.
	if err := st.Kill("envoy-1", syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = st.Kill("envoy-1", syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	cur, err := kn.NetworkingV1alpha1().Ingresses(ns).Get(context.Background(), "status", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec = spec("/v2")
	if _, err := kn.NetworkingV1alpha1().Ingresses(ns).Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "envoy-0 serving the update, envoy-1 not", func() error {
		var in status.Ingress
		if err := statusJSON(t, &in, "--server", xdsAddr(0), ns+"/status"); err != nil {
			return err
		}
		if len(in.Envoys) != 2 || !in.Envoys[0].Serving || in.Envoys[1].Serving || in.Current {
			return fmt.Errorf("%+v", in)
		}
		if in.Envoys[1].State != status.Stale {
			return fmt.Errorf("envoy-1: %s, want STALE", in.Envoys[1].State)
		}
		return nil
	})
	// Its status names the Envoy it waits for once it has waited
	// --name-pending-after (5 s).
	eventually(t, 20*time.Second, "the KIngress's status naming envoy-1", func() error {
		ing, err := kn.NetworkingV1alpha1().Ingresses(ns).Get(context.Background(), "status", metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := ing.Status.GetCondition(v1alpha1.IngressConditionReady)
		if ing.Status.ObservedGeneration != ing.Generation || c == nil || !c.IsUnknown() || c.Reason != "EnvoysBehind" || c.Message != "not served yet by 1 Envoy: envoy-1" {
			return fmt.Errorf("generation %d, status %+v", ing.Generation, ing.Status)
		}
		return nil
	})
	out, _ := sluiceStatus(t, "--server", xdsAddr(0), ns+"/status")
	t.Logf("one Envoy frozen:\n%s", out)
	if !strings.Contains(out, "envoy-1") || !strings.Contains(out, " no ") || !strings.Contains(out, "EnvoysBehind") || !strings.Contains(out, "not served yet by 1 Envoy: envoy-1") {
		t.Errorf("table:\n%s", out)
	}
	thaw()
	eventually(t, 30*time.Second, "both Envoys serving after the thaw", func() error {
		var in status.Ingress
		if err := statusJSON(t, &in, "--server", xdsAddr(0), ns+"/status"); err != nil {
			return err
		}
		if !in.Current || !in.Envoys[0].Serving || !in.Envoys[1].Serving {
			return fmt.Errorf("%+v", in)
		}
		return nil
	})

	// An ingress Envoy rejects: its Ready condition says why.
	b := workload.Ingress(ns, "status-bad", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext("status-bad.sluice-e2e.example.com", httpPath("", split("status", 100, nil)))}})
	b.Annotations[nackAnnotation] = "true"
	if _, err := kn.NetworkingV1alpha1().Ingresses(ns).Create(context.Background(), b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteIngress(t, "status-bad") })
	eventually(t, 30*time.Second, "status-bad shown rejected", func() error {
		var in status.Ingress
		if err := statusJSON(t, &in, "--server", xdsAddr(0), ns+"/status-bad"); err != nil {
			return err
		}
		if in.Ready != "False" || in.Reason != "EnvoyRejected" || !strings.Contains(in.Message, "rejected") {
			return fmt.Errorf("%+v", in)
		}
		return nil
	})
	out, _ = sluiceStatus(t, "--server", xdsAddr(0), ns+"/status-bad")
	t.Logf("rejected:\n%s", out)
	full, _ := sluiceStatus(t, "--server", xdsAddr(0))
	t.Logf("fleet after the rejection:\n%s", full)

	// Bad input is an error naming it.
	for _, args := range [][]string{{"--server", xdsAddr(0), "no-slash"}, {"--server", xdsAddr(0), ns + "/missing"}, {"--server", xdsAddr(0), "-o", "xml"},
		{"--server", "127.0.0.1:1"}} {
		if _, err := sluiceStatus(t, args...); err == nil {
			t.Errorf("sluice status %v succeeded", args)
		} else {
			t.Logf("refused: %v", err)
		}
	}
}
