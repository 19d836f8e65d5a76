package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// TestGrpcurl runs the README's grpcurl commands against the xDS port and
// checks what they show: the services, health, and per Envoy what it
// ACKed, with the resources.
func TestGrpcurl(t *testing.T) {
	bin := filepath.Join(st.Options().BinDir, "grpcurl")
	addr := fmt.Sprintf("127.0.0.1:%d", st.Options().Ports.XDS)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"-plaintext"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	backend(t, "csds", 1)
	host := "csds.sluice-e2e.example.com"
	createIngress(t, "csds", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("csds", 100, nil)))}})

	list := run(addr, "list")
	for _, svc := range []string{"envoy.service.discovery.v3.AggregatedDiscoveryService", "envoy.service.status.v3.ClientStatusDiscoveryService", "grpc.health.v1.Health"} {
		if !strings.Contains(list, svc) {
			t.Errorf("list lacks %s:\n%s", svc, list)
		}
	}
	if h := run(addr, "grpc.health.v1.Health/Check"); !strings.Contains(h, "SERVING") {
		t.Errorf("health: %s", h)
	}
	var status struct {
		Config []struct {
			Node              struct{ ID string }
			GenericXdsConfigs []struct {
				TypeURL, Name, ClientStatus, ConfigStatus string
				XdsConfig                                 json.RawMessage
			}
		}
	}
	out := run("-d", `{"exclude_resource_contents":true}`, addr, "envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus")
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		t.Fatalf("CSDS output: %v\n%s", err, out)
	}
	if len(status.Config) == 0 {
		t.Fatal("CSDS shows no Envoy")
	}
	for _, c := range status.Config {
		synced := 0
		for _, g := range c.GenericXdsConfigs {
			if g.ClientStatus == "ACKED" && g.ConfigStatus == "SYNCED" {
				synced++
			}
		}
		if synced == 0 {
			t.Errorf("CSDS: Envoy %s has nothing ACKED and SYNCED", c.Node.ID)
		}
	}
	node := status.Config[0].Node.ID
	dump := run("-d", `{"node_matchers":[{"node_id":{"exact":"`+node+`"}}]}`, addr, "envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus")
	if !strings.Contains(dump, host) {
		t.Errorf("CSDS dump for %s lacks the route of %s", node, host)
	}
}
