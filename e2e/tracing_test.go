//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/translator"
)

// Tracing through real Envoy to an OTLP receiver in this test, over gRPC
// and over HTTP: spans arrive from the configured service, tagged with the
// route's ingress and the upstream cluster (which names the revision),
// and the backend gets an x-request-id.
func TestTracing(t *testing.T) {
	backend(t, "trace", 1)
	host := "trace.sluice-e2e.example.com"
	waitReady(t, createIngress(t, "trace", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("trace", 100, nil)))}}))
	rec := &spanReceiver{}

	// OTLP/gRPC.
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, rec)
	go func() { _ = gs.Serve(glis) }()
	t.Cleanup(gs.Stop)
	// OTLP/HTTP.
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: rec, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(hlis) }()
	t.Cleanup(func() { _ = hs.Close() })

	for _, c := range []struct{ protocol, addr, service string }{
		{translator.TracingGRPC, glis.Addr().String(), "sluice-e2e-grpc"},
		{translator.TracingHTTP, hlis.Addr().String(), "sluice-e2e-http"},
	} {
		setConfig(t, map[string]string{"tracing-collector": c.addr, "tracing-protocol": c.protocol,
			"tracing-sampling": "100", "tracing-service-name": c.service})
		eventually(t, 60*time.Second, "a span over "+c.protocol, func() error {
			_, e, _ := get(t, host, "/traced", nil)
			if len(e.Headers["X-Request-Id"]) != 1 {
				return fmt.Errorf("the backend got no x-request-id: %v", e.Headers)
			}
			time.Sleep(500 * time.Millisecond)
			return rec.has(c.service, "sluice-e2e/trace", "sluice-e2e/trace:80")
		})
	}
	setConfig(t, map[string]string{})
}

// spanReceiver records spans from OTLP/gRPC and OTLP/HTTP (protobuf).
type spanReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []span
}

type span struct{ service, ingress, upstream string }

func (r *spanReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *spanReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	var msg coltracepb.ExportTraceServiceRequest
	if req.URL.Path != "/v1/traces" || proto.Unmarshal(b, &msg) != nil {
		http.Error(w, "want protobuf on /v1/traces", http.StatusBadRequest)
		return
	}
	r.add(&msg)
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (r *spanReceiver) add(req *coltracepb.ExportTraceServiceRequest) {
	attr := func(kvs []*commonpb.KeyValue, key string) string {
		for _, kv := range kvs {
			if kv.GetKey() == key {
				return kv.GetValue().GetStringValue()
			}
		}
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := attr(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, span{service, attr(s.GetAttributes(), translator.IngressTag), attr(s.GetAttributes(), "upstream_cluster")})
			}
		}
	}
}

// has finds a span from service tagged with the ingress and an upstream
// cluster containing upstream.
func (r *spanReceiver) has(service, ingress, upstream string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.service == service && s.ingress == ingress && strings.Contains(s.upstream, upstream) {
			return nil
		}
	}
	return fmt.Errorf("no span from %s for %s via %s among %d: %+v", service, ingress, upstream, len(r.spans), r.spans[max(0, len(r.spans)-3):])
}
