//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/translator"
)

// Access logs through real Envoy: on by default on stdout, Knative's
// probes left out; JSON fields; a text format using every command
// operator Sluice accepts (so Envoy accepts them all); a bad format
// refused by name with the last good one kept; and off.
func TestAccessLog(t *testing.T) {
	backend(t, "alog", 1)
	host := "alog.sluice-e2e.example.com"
	waitReady(t, createIngress(t, "alog", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("alog", 100, nil)))}}))
	logs := envoyLogs(t)
	seq := 0
	// request sends one request with a fresh path and returns the path.
	request := func(header map[string]string) string {
		seq++
		path := fmt.Sprintf("/alog-%d-%d", time.Now().UnixNano(), seq)
		if code, _, _ := get(t, host, path, header); code != 200 {
			t.Fatalf("GET %s: %d", path, code)
		}
		return path
	}
	// logged waits until requests made by send are logged in a line ok
	// accepts, six in a row on new connections (so by both Envoys, which
	// take a new config a moment apart), and returns the last line.
	logged := func(what string, send func() string, ok func(line string) error) string {
		t.Helper()
		var line string
		steadily(t, 30*time.Second, what, func() error {
			path := send()
			if line = logs.wait(path, 3*time.Second); line == "" {
				return fmt.Errorf("%s not logged", path)
			}
			return ok(line)
		})
		return line
	}
	hasMark := func(line string) error {
		if !strings.Contains(line, " mark=/alog-") {
			return fmt.Errorf("no mark in %q", line)
		}
		return nil
	}

	// On by default; a probe is not logged, requests after it are.
	probe := request(map[string]string{"K-Network-Probe": "probe"})
	logged("requests in the default format", func() string { return request(nil) }, func(line string) error {
		if !strings.Contains(line, `"GET /alog-`) || !strings.Contains(line, " 200 ") {
			return fmt.Errorf("default format line: %q", line)
		}
		return nil
	})
	if l := logs.find(probe); l != "" {
		t.Errorf("a Knative probe was logged: %q", l)
	}

	setConfig(t, map[string]string{"access-log-json": `{"path": "%REQ(:PATH)%", "status": "%RESPONSE_CODE%", "route": "%ROUTE_NAME%"}`})
	logged("JSON lines", func() string { return request(nil) }, func(line string) error {
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil || fields["status"] != float64(200) && fields["status"] != "200" ||
			!strings.HasPrefix(fmt.Sprint(fields["path"]), "/alog-") || !strings.Contains(fmt.Sprint(fields["route"]), "sluice-e2e/alog") {
			return fmt.Errorf("JSON line %q: %v %v", line, fields, err)
		}
		return nil
	})

	all := strings.Join(translator.LogOperators(), " ") + " mark=%REQ(:PATH)%"
	setConfig(t, map[string]string{"access-log-format": all, "access-log-probes": "true"})
	logged("lines with every command operator, probes too", func() string { return request(map[string]string{"K-Network-Probe": "probe"}) }, hasMark)

	// A bad format is refused by name; the last good config stays: every
	// line from now on has the mark.
	setConfig(t, map[string]string{"access-log-format": "%NOPE%"})
	eventually(t, 20*time.Second, "the controller refusing access-log-format", func() error {
		if !strings.Contains(controllerLogs(t), `access-log-format: at 0: \"%NOPE\" is not a command operator`) {
			return fmt.Errorf("no error naming the key in the controller's log")
		}
		return nil
	})
	for i := 0; i < 6; i++ {
		path := request(nil)
		if err := hasMark(logs.wait(path, 3*time.Second)); err != nil {
			t.Fatalf("after a refused format: %v", err)
		}
	}

	setConfig(t, map[string]string{"access-log": "off"})
	steadily(t, 30*time.Second, "access log off", func() error {
		path := request(nil)
		time.Sleep(time.Second)
		if l := logs.find(path); l != "" {
			return fmt.Errorf("still logged: %q", l)
		}
		return nil
	})
	setConfig(t, map[string]string{})
	logged("the default access log again", func() string { return request(nil) }, func(string) error { return nil })
}

// setConfig makes config-sluice hold data, and removes it when the test
// ends.
func setConfig(t *testing.T, data map[string]string) {
	t.Helper()
	ctx := context.Background()
	cms := kube.CoreV1().ConfigMaps(stack.SystemNS)
	cm, err := cms.Get(ctx, translator.ConfigMapName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: translator.ConfigMapName, Namespace: stack.SystemNS}, Data: data}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cms.Delete(context.Background(), translator.ConfigMapName, metav1.DeleteOptions{}) })
	case err != nil:
		t.Fatal(err)
	default:
		cm.Data = data
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// logFiles reads what the stack's Envoys wrote since it was made.
type logFiles struct {
	t     *testing.T
	files map[string]int64 // path -> size when made
}

func envoyLogs(t *testing.T) *logFiles {
	paths, _ := filepath.Glob(filepath.Join(st.Options().StateDir, "logs", "envoy-*.log"))
	if len(paths) == 0 {
		t.Fatal("no Envoy logs in the stack's state directory")
	}
	l := &logFiles{t: t, files: map[string]int64{}}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			l.files[p] = fi.Size()
		}
	}
	return l
}

// wait returns the first new line containing s once there is one, or ""
// after timeout.
func (l *logFiles) wait(s string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	line := l.find(s)
	for ; line == "" && time.Now().Before(deadline); line = l.find(s) {
		time.Sleep(50 * time.Millisecond)
	}
	return line
}

// find returns the first new line containing s, or "".
func (l *logFiles) find(s string) string {
	for p, from := range l.files {
		b, err := os.ReadFile(p)
		if err != nil || int64(len(b)) < from {
			continue
		}
		for _, line := range strings.Split(string(b[from:]), "\n") {
			if strings.Contains(line, s) {
				return line
			}
		}
	}
	return ""
}

// controllerLogs is what the stack's controllers wrote.
func controllerLogs(t *testing.T) string {
	paths, _ := filepath.Glob(filepath.Join(st.Options().StateDir, "logs", "sluice-*.log"))
	var sb strings.Builder
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		sb.Write(b)
	}
	return sb.String()
}

// steadily waits until f passes six times in a row: each call makes a new
// connection, so both Envoys have their say.
func steadily(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	eventually(t, timeout, what, func() error {
		for i := 0; i < 6; i++ {
			if err := f(); err != nil {
				return fmt.Errorf("after %d in a row: %w", i, err)
			}
		}
		return nil
	})
}
