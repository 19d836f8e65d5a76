package translator

import (
	"os"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// No connection manager bounds a quiet stream unless stream-idle-timeout
// says so: no key, no value and 0s all turn Envoy's 5-minute default off,
// on every listener and filter chain.
func TestStreamIdleTimeout(t *testing.T) {
	data, err := os.ReadFile("testdata/tls.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cm   map[string]string
		want time.Duration
	}{
		{nil, 0},
		{map[string]string{"stream-idle-timeout": ""}, 0},
		{map[string]string{"stream-idle-timeout": "0s"}, 0},
		{map[string]string{"stream-idle-timeout": "90s"}, 90 * time.Second},
	} {
		in, err := ParseInput(data)
		if err != nil {
			t.Fatal(err)
		}
		if in.Config, err = ConfigFromMap(c.cm); err != nil {
			t.Fatal(err)
		}
		res, err := TranslateInput(in)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range res.Output.Listeners {
			chains := l.FilterChains
			if l.DefaultFilterChain != nil {
				chains = append(chains, l.DefaultFilterChain)
			}
			for _, fc := range chains {
				m := &hcmv3.HttpConnectionManager{}
				if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(m); err != nil {
					t.Fatal(err)
				}
				n++
				if got := m.StreamIdleTimeout; got == nil || got.AsDuration() != c.want {
					t.Errorf("%v: %s chain %q: stream_idle_timeout %v, want %v set", c.cm, l.Name, fc.Name, got, c.want)
				}
			}
		}
		if n < 4 {
			t.Errorf("%v: only %d connection managers, want the four listeners'", c.cm, n)
		}
	}
}
