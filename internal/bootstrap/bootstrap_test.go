package bootstrap

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestBuild(t *testing.T) {
	b, err := Build(Options{XDSAddress: "127.0.0.1:18000", NodeID: "envoy-0", NodeCluster: "sluice-gateway", AdminAddress: "127.0.0.1:9901"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("bootstrap does not validate: %v", err)
	}
	if got := b.DynamicResources.AdsConfig.ApiType; got != corev3.ApiConfigSource_DELTA_GRPC {
		t.Errorf("ADS api type = %v, want delta by default", got)
	}
	if b.Node.Id != "envoy-0" || b.Node.Cluster != "sluice-gateway" {
		t.Errorf("node = %v", b.Node)
	}
	y, err := YAML(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"port_value: 18000", "cluster_name: sluice-xds", "type: STATIC"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("bootstrap YAML lacks %q:\n%s", want, y)
		}
	}
	sotw, _ := Build(Options{XDSAddress: "sluice.knative-serving:18000", NodeID: "a", NodeCluster: "b", AdminAddress: "127.0.0.1:9901", SotW: true})
	if sotw.DynamicResources.AdsConfig.ApiType != corev3.ApiConfigSource_GRPC {
		t.Error("SotW not honoured")
	}
	if !strings.Contains(sotw.StaticResources.Clusters[0].GetType().String(), "STRICT_DNS") {
		t.Error("a DNS name must give a STRICT_DNS cluster")
	}
	multi, err := Build(Options{XDSAddress: "127.0.0.1:18000, 127.0.0.1:18001", NodeID: "a", NodeCluster: "b", AdminAddress: "127.0.0.1:9901"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(multi.StaticResources.Clusters[0].LoadAssignment.Endpoints[0].LbEndpoints); n != 2 {
		t.Errorf("two replicas gave %d xDS endpoints", n)
	}
}

func TestBuildErrors(t *testing.T) {
	for _, o := range []Options{
		{XDSAddress: "nohost", NodeID: "a", NodeCluster: "b", AdminAddress: "127.0.0.1:1"},
		{XDSAddress: "127.0.0.1:0", NodeID: "a", NodeCluster: "b", AdminAddress: "127.0.0.1:1"},
		{XDSAddress: "127.0.0.1:1", NodeCluster: "b", AdminAddress: "127.0.0.1:1"},
		{XDSAddress: "127.0.0.1:1", NodeID: "a", NodeCluster: "b", AdminAddress: ""},
	} {
		if _, err := Build(o); err == nil {
			t.Errorf("Build(%+v) gave no error", o)
		}
	}
}

// The overload manager: a connection bound with idle timeouts scaled by
// it, a heap bound adding its own actions, nothing when both are 0; a
// connection bound alone is refused (Envoy would never shed).
func TestOverload(t *testing.T) {
	base := Options{XDSAddress: "127.0.0.1:18000", NodeID: "a", NodeCluster: "b", AdminAddress: "127.0.0.1:9901"}
	for _, c := range []struct {
		conns, heap      uint64
		monitors, action int
	}{{0, 0, 0, 0}, {0, 1 << 30, 1, 3}, {1000, 1 << 30, 2, 3}} {
		o := base
		o.MaxConnections, o.MaxHeapBytes = c.conns, c.heap
		b, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ValidateAll(); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		om := b.OverloadManager
		if c.monitors == 0 {
			if om != nil {
				t.Errorf("no bounds gave an overload manager: %v", om)
			}
			continue
		}
		if len(om.ResourceMonitors) != c.monitors || len(om.Actions) != c.action {
			t.Errorf("%+v: %d monitors and %d actions, want %d and %d", c, len(om.ResourceMonitors), len(om.Actions), c.monitors, c.action)
		}
		if r := om.Actions[0]; r.Name != "envoy.overload_actions.reduce_timeouts" || len(r.Triggers) != c.monitors {
			t.Errorf("%+v: first action %s with %d triggers", c, r.Name, len(r.Triggers))
		}
		// Heap pressure never turns traffic away (overload.go).
		for _, a := range om.Actions {
			if strings.Contains(a.Name, "stop_accepting") || strings.Contains(a.Name, "reject_incoming") {
				t.Errorf("%+v: action %s refuses traffic", c, a.Name)
			}
		}
		if c.heap > 0 && om.GetBufferFactoryConfig().GetMinimumAccountToTrackPowerOfTwo() != 21 {
			t.Errorf("%+v: reset_high_memory_stream without streams tracked from 1 MiB: %v", c, om.GetBufferFactoryConfig())
		}
	}
	o := base
	o.MaxConnections = 1000
	if _, err := Build(o); err == nil || !strings.Contains(err.Error(), "max-heap-bytes") {
		t.Errorf("a connection bound alone: %v", err)
	}
}

// xDS over mutual TLS: the client certificate and CA from files, the
// server's names from the xDS addresses (DNS names and IPs told apart).
func TestTLS(t *testing.T) {
	o := Options{XDSAddress: "sluice.knative-serving.svc:18000,10.0.0.5:18000", NodeID: "a", NodeCluster: "b", AdminAddress: "127.0.0.1:9901",
		TLS: TLSFiles{Cert: "/tls/tls.crt", Key: "/tls/tls.key", CA: "/tls/ca.crt", SDSDir: "/etc/sluice"}}
	b, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	y, _ := YAML(b)
	for _, want := range []string{"path: /etc/sluice/sluice-xds-client.yaml", "path: /etc/sluice/sluice-xds-ca.yaml", "san_type: DNS", "san_type: IP_ADDRESS",
		"sni: sluice.knative-serving.svc", "tls_minimum_protocol_version: TLSv1_3"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("bootstrap lacks %q", want)
		}
	}
	files, err := SDSFiles(o.TLS)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/etc/sluice/sluice-xds-client.yaml": "filename: /tls/tls.crt",
		"/etc/sluice/sluice-xds-ca.yaml":     "filename: /tls/ca.crt",
	} {
		if !strings.Contains(string(files[path]), want) || !strings.Contains(string(files[path]), "path: /tls") {
			t.Errorf("%s: %s", path, files[path])
		}
	}
	o.TLS.SDSDir = ""
	if _, err := Build(o); err == nil {
		t.Error("TLS without the SDS directory was accepted")
	}
}
