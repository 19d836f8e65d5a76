//go:build e2e

package e2e

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"sigs.k8s.io/yaml"

	"sluice.dev/sluice/internal/controller"
	"sluice.dev/sluice/xds"
)

// monitoringSet turns on the chart's alerts and dashboard.
var monitoringSet = []string{"metrics.prometheusRule.enabled=true", "metrics.dashboard.enabled=true"}

// TestMonitoringRules runs promtool (built from its Go module by make
// tools) on the chart's PrometheusRule as rendered: the rules must load,
// and e2e/testdata/alerts.test.yaml says when each alert fires and when
// it must not.
func TestMonitoringRules(t *testing.T) {
	root := helmRoot(t)
	promtool := filepath.Join(root, "bin", "promtool")
	if _, err := os.Stat(promtool); err != nil {
		t.Fatalf("%s is missing; make tools builds it", promtool)
	}
	groups, rules := chartRules(t, chart(helmRender(t, "sluice", "knative-serving", monitoringSet)))
	b, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join(root, "e2e", "testdata", "alerts.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts.test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	// Every alert of the chart has a test.
	var alerts []string
	for _, r := range rules {
		alerts = append(alerts, r["alert"].(string))
	}
	for _, a := range alerts {
		if !strings.Contains(string(tests), "alertname: "+a+"\n") {
			t.Errorf("alert %s has no promtool test", a)
		}
	}
	if len(alerts) < 4 {
		t.Errorf("alerts %v: want NACKs, propagation, disconnected Envoys and no leader", alerts)
	}
}

// chartRules are the spec.groups of the chart's PrometheusRule, and the
// rules of every group.
func chartRules(t *testing.T, objs chart) (groups []any, rules []map[string]any) {
	t.Helper()
	rule := objs.get(t, "PrometheusRule", "sluice-controller")
	groups, _ = field(t, rule, "spec", "groups").([]any)
	for _, g := range groups {
		rs, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rs {
			rules = append(rules, r.(map[string]any))
		}
	}
	return groups, rules
}

// TestMonitoringNamesExist checks that every metric the dashboard and the
// alerts query is one the controller exports (its registry, as
// `sluice controller` builds it), so a renamed metric cannot leave a
// dashboard panel or an alert silently empty.
func TestMonitoringNamesExist(t *testing.T) {
	known := exportedMetrics(t)
	objs := chart(helmRender(t, "sluice", "knative-serving", monitoringSet))
	cm := objs.get(t, "ConfigMap", "sluice-dashboard")
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v: want grafana_dashboard=1 for Grafana's sidecar", cm.GetLabels())
	}
	data, _ := cm.Object["data"].(map[string]any)
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(data["sluice.json"].(string)), &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	exprs := map[string]string{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs["dashboard panel "+p.Title] += tg.Expr + "\n"
		}
	}
	if dash.UID == "" || len(exprs) < 10 {
		t.Errorf("dashboard uid %q, %d panels with queries", dash.UID, len(exprs))
	}
	_, rules := chartRules(t, objs)
	for _, r := range rules {
		exprs["alert "+r["alert"].(string)] += r["expr"].(string)
	}
	name := regexp.MustCompile(`\b((?:sluice|go|process)_[a-z_]+)`)
	used := 0
	for where, e := range exprs {
		for _, m := range name.FindAllStringSubmatch(e, -1) {
			used++
			n := m[1]
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if base, ok := strings.CutSuffix(n, suffix); ok && known[base] {
					n = base
				}
			}
			if !known[n] {
				t.Errorf("%s queries %s, which the controller does not export", where, m[1])
			}
		}
	}
	if used == 0 {
		t.Error("no metric names found in the queries")
	}
}

// exportedMetrics are the metric names the controller registers, whether
// or not they have a sample yet (a vector without labels has none).
func exportedMetrics(t *testing.T) map[string]bool {
	rec := &recorder{names: map[string]bool{}}
	controller.NewMetrics(rec)
	xds.New(zap.NewNop(), xds.Options{Registry: rec})
	rec.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if len(rec.names) < 10 || !rec.names["sluice_leader"] {
		t.Fatalf("registered metrics: %v", slices.Sorted(maps.Keys(rec.names)))
	}
	return rec.names
}

// recorder is a Registerer that keeps the names of what is registered.
type recorder struct{ names map[string]bool }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return true }
