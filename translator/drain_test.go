package translator

import (
	"os"
	"testing"

	"google.golang.org/protobuf/proto"
)

// The README promises which config-sluice keys change the listeners (so
// Envoy drains connections) and which never do. Each key is changed alone
// on the tls golden input, and the listeners compared.
func TestWhichKeysTouchListeners(t *testing.T) {
	data, err := os.ReadFile("testdata/tls.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	build := func(cm map[string]string) *Output {
		t.Helper()
		in, err := ParseInput(data)
		if err != nil {
			t.Fatal(err)
		}
		if in.Config, err = ConfigFromMap(cm); err != nil {
			t.Fatal(err)
		}
		res, err := TranslateInput(in)
		if err != nil {
			t.Fatal(err)
		}
		return res.Output
	}
	sameListeners := func(a, b *Output) bool {
		if len(a.Listeners) != len(b.Listeners) {
			return false
		}
		for i := range a.Listeners {
			if !proto.Equal(a.Listeners[i], b.Listeners[i]) {
				return false
			}
		}
		return true
	}
	base := build(nil)
	// config-network's system-internal-tls and its CAs: clusters and a
	// secret only.
	in, err := ParseInput(data)
	if err != nil {
		t.Fatal(err)
	}
	in.Config.SystemInternalTLS, in.Config.InternalCA = true, in.Secrets["demo/route-6d0c1a8e-4b1f-4a55-9e0e-1f1f0b5f3c11"].Data["tls.crt"]
	if res, err := TranslateInput(in); err != nil || !sameListeners(base, res.Output) {
		t.Errorf("system-internal-tls changes the listeners (%v); the README says it never does", err)
	}
	for key, value := range map[string]string{
		"connect-timeout":       "2s",
		"local-gateway-domains": "gw.example.com",
	} {
		if !sameListeners(base, build(map[string]string{key: value})) {
			t.Errorf("%s changes the listeners; the README says it never does", key)
		}
	}
	for key, value := range map[string]string{
		"external-http-port":  "9080",
		"listen-address":      "0.0.0.0,::",
		"idle-timeout":        "1h",
		"stream-idle-timeout": "1m",
		"access-log":          "off",
		"access-log-format":   "%START_TIME%",
		"access-log-probes":   "true",
		"tls-min-version":     "1.3",
		"tls-cipher-suites":   "ECDHE-ECDSA-AES128-GCM-SHA256",
		"server-header":       "pass-through",
		"server-name":         "edge",
		"proxy-protocol":      "true",
		"trusted-hops":        "2",
		"tracing-collector":   "127.0.0.1:4317",
		"ext-authz-address":   "127.0.0.1:9000",
		"cors-allow-origins":  "*",
	} {
		if sameListeners(base, build(map[string]string{key: value})) {
			t.Errorf("%s leaves the listeners alone: the README lists it as draining (or the key does nothing)", key)
		}
	}
}
