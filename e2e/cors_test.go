//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// CORS through real Envoy: with allowed origins set, Envoy answers a
// preflight itself and marks responses to allowed origins; other origins
// get no CORS headers; "*" allows any; a refused origin keeps the last
// good policy; without the keys nothing changes.
func TestCORS(t *testing.T) {
	backend(t, "corsy", 1)
	host := "corsy.sluice-e2e.example.com"
	createIngress(t, "corsy", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("corsy", 100, nil)))}})

	app := "https://app.example.com"
	preflight := func(origin string) (int, http.Header) {
		req, err := http.NewRequest(http.MethodOptions, "http://"+host+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		c, _, h := send(t, client(st.External.HTTP), req)
		return c, h
	}
	// allowed checks a preflight and a GET from origin.
	allowed := func(origin, wantAllow string) error {
		c, h := preflight(origin)
		if wantAllow != "" {
			if c != http.StatusOK || h.Get("X-Backend") != "" {
				return fmt.Errorf("preflight from %s: %d (backend %q), want Envoy's 200", origin, c, h.Get("X-Backend"))
			}
			if h.Get("Access-Control-Allow-Origin") != wantAllow || h.Get("Access-Control-Allow-Methods") != "GET,POST" ||
				h.Get("Access-Control-Max-Age") != "600" {
				return fmt.Errorf("preflight from %s: %v", origin, h)
			}
		}
		c, _, h = get(t, host, "/", map[string]string{"Origin": origin})
		if c != http.StatusOK || h.Get("Access-Control-Allow-Origin") != wantAllow {
			return fmt.Errorf("GET from %s: %d, Access-Control-Allow-Origin %q, want %q", origin, c, h.Get("Access-Control-Allow-Origin"), wantAllow)
		}
		return nil
	}
	policy := map[string]string{"cors-allow-origins": app, "cors-allow-methods": "GET,POST", "cors-max-age": "10m"}
	setConfig(t, policy)
	steadily(t, 30*time.Second, "CORS for "+app+" only", func() error {
		if err := allowed(app, app); err != nil {
			return err
		}
		return allowed("https://evil.example.com", "")
	})

	policy["cors-allow-origins"] = "https://app.example.com/path"
	setConfig(t, policy)
	// Refused by name; until then a check of the old policy proves nothing.
	eventually(t, 20*time.Second, "the controller refusing cors-allow-origins", func() error {
		if !strings.Contains(controllerLogs(t), `cors-allow-origins: \"https://app.example.com/path\" is not * or an origin`) {
			return fmt.Errorf("no error naming the key in the controller's log")
		}
		return nil
	})
	steadily(t, 30*time.Second, "the last good policy kept", func() error { return allowed(app, app) })

	policy["cors-allow-origins"] = "*"
	setConfig(t, policy)
	steadily(t, 30*time.Second, "any origin", func() error { return allowed("https://evil.example.com", "https://evil.example.com") })

	setConfig(t, map[string]string{})
	steadily(t, 30*time.Second, "no CORS again", func() error {
		c, _, h := get(t, host, "/", map[string]string{"Origin": app})
		if c != http.StatusOK || h.Get("Access-Control-Allow-Origin") != "" {
			return fmt.Errorf("%d, Access-Control-Allow-Origin %q", c, h.Get("Access-Control-Allow-Origin"))
		}
		return nil
	})
}
