//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// csdsEntry is one Envoy (or unreachable replica) in a CSDS answer, as
// grpcurl prints it.
type csdsEntry struct {
	Node struct {
		ID       string
		Metadata map[string]string
	}
	GenericXdsConfigs []struct {
		TypeURL, Name, ClientStatus, ConfigStatus string
		XdsConfig                                 json.RawMessage
	}
}

func grpcurl(t *testing.T, args ...string) string {
	t.Helper()
	bin := filepath.Join(st.Options().BinDir, "grpcurl")
	// The stack's xDS is mutual TLS: grpcurl presents the Envoys' client
	// certificate where the README's commands say -plaintext.
	tlsArgs := []string{"-plaintext"}
	if st.Options().XDSTLS {
		f := st.XDSTLSFiles("xds-client")
		tlsArgs = []string{"-cacert", f.CA, "-cert", f.Cert, "-key", f.Key}
	}
	out, err := exec.Command(bin, append(tlsArgs, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func xdsAddr(replica int) string {
	return fmt.Sprintf("127.0.0.1:%d", st.Options().Ports.XDS+replica)
}

// fleetStatus runs the README's CSDS command against one replica and
// returns, per Envoy, the replica it is connected to.
func fleetStatus(t *testing.T, replica int) (map[string]string, []csdsEntry) {
	t.Helper()
	out := grpcurl(t, "-max-msg-sz", "268435456", "-d", `{"exclude_resource_contents":true}`, xdsAddr(replica), "envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus")
	var status struct{ Config []csdsEntry }
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		t.Fatalf("CSDS output: %v\n%s", err, out)
	}
	on := map[string]string{}
	for _, c := range status.Config {
		if e := c.Node.Metadata["sluice.dev/replica-error"]; e != "" {
			t.Errorf("sluice-%d reports replica %s unreachable: %s", replica, c.Node.Metadata["sluice.dev/replica"], e)
			continue
		}
		if _, dup := on[c.Node.ID]; dup {
			t.Errorf("sluice-%d lists %s twice", replica, c.Node.ID)
		}
		on[c.Node.ID] = c.Node.Metadata["sluice.dev/replica"]
	}
	return on, status.Config
}

// TestGrpcurl runs the README's grpcurl commands against the xDS port of
// each replica and checks what they show: the services, health, and every
// Envoy of the fleet once, with the replica it is connected to and what it
// ACKed, whichever replica answers.
func TestGrpcurl(t *testing.T) {
	backend(t, "csds", 1)
	host := "csds.sluice-e2e.example.com"
	createIngress(t, "csds", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("csds", 100, nil)))}})

	for replica := range 2 {
		addr := xdsAddr(replica)
		list := grpcurl(t, addr, "list")
		for _, svc := range []string{"envoy.service.discovery.v3.AggregatedDiscoveryService", "envoy.service.status.v3.ClientStatusDiscoveryService", "grpc.health.v1.Health"} {
			if !strings.Contains(list, svc) {
				t.Errorf("sluice-%d: list lacks %s:\n%s", replica, svc, list)
			}
		}
		if h := grpcurl(t, addr, "grpc.health.v1.Health/Check"); !strings.Contains(h, "SERVING") {
			t.Errorf("sluice-%d: health: %s", replica, h)
		}
		on, configs := fleetStatus(t, replica)
		if len(on) != 2 || on["envoy-0"] == "" || on["envoy-1"] == "" {
			t.Fatalf("sluice-%d: CSDS shows %v, want envoy-0 and envoy-1 with their replicas", replica, on)
		}
		for _, c := range configs {
			synced := 0
			for _, g := range c.GenericXdsConfigs {
				if g.ClientStatus == "ACKED" && g.ConfigStatus == "SYNCED" {
					synced++
				}
			}
			if synced == 0 {
				t.Errorf("sluice-%d: CSDS: Envoy %s has nothing ACKED and SYNCED", replica, c.Node.ID)
			}
		}
		// Each replica's own count agrees with where CSDS places the Envoys.
		for r := range 2 {
			want := 0
			for _, rep := range on {
				if rep == fmt.Sprintf("sluice-%d", r) {
					want++
				}
			}
			if n := connectedEnvoys(t, r); n != want {
				t.Errorf("sluice-%d: CSDS places %d Envoys on sluice-%d, which counts %d (%v)", replica, want, r, n, on)
			}
		}
		// The dump of one Envoy, through either replica, has the route.
		for _, node := range []string{"envoy-0", "envoy-1"} {
			dump := grpcurl(t, "-d", `{"node_matchers":[{"node_id":{"exact":"`+node+`"}}]}`, addr, "envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus")
			if !strings.Contains(dump, host) {
				t.Errorf("sluice-%d: CSDS dump for %s (on %s) lacks the route of %s", replica, node, on[node], host)
			}
		}
	}
}

// TestCSDSPinnedEnvoys pins two more Envoys to one replica and asks the
// other: it still lists them, on the replica they are pinned to.
func TestCSDSPinnedEnvoys(t *testing.T) {
	for pinned := range 2 {
		t.Run(fmt.Sprintf("sluice-%d", pinned), func(t *testing.T) {
			other := 1 - pinned
			var names []string
			for k := range 2 {
				name := fmt.Sprintf("pinned-%d-%d", pinned, k)
				_, stop, err := st.StartEnvoy(context.Background(), name, pinned)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(stop)
				names = append(names, name)
			}
			for _, asked := range []int{other, pinned} {
				eventually(t, 10*time.Second, fmt.Sprintf("sluice-%d lists %v on sluice-%d", asked, names, pinned), func() error {
					on, _ := fleetStatus(t, asked)
					for _, n := range names {
						if on[n] != fmt.Sprintf("sluice-%d", pinned) {
							return fmt.Errorf("CSDS of sluice-%d: %v", asked, on)
						}
					}
					if on["envoy-0"] == "" || on["envoy-1"] == "" {
						return fmt.Errorf("CSDS of sluice-%d lacks the stack's Envoys: %v", asked, on)
					}
					return nil
				})
			}
			if n := connectedEnvoys(t, other); n > 2 {
				t.Errorf("sluice-%d counts %d Envoys, though two more are pinned to sluice-%d", other, n, pinned)
			}
		})
	}
}
