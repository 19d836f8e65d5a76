package status

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/apis"

	"sluice.dev/sluice/xds"
)

func node(id, replica string, extra ...string) *core.Node {
	f := map[string]any{xds.ReplicaKey: replica}
	for i := 0; i+1 < len(extra); i += 2 {
		f[extra[i]] = extra[i+1]
	}
	md, _ := structpb.NewStruct(f)
	return &core.Node{Id: id, Metadata: md}
}

func res(typeURL, name string, cs adminv3.ClientResourceStatus, st statusv3.ConfigStatus, nack string) *statusv3.ClientConfig_GenericXdsConfig {
	g := &statusv3.ClientConfig_GenericXdsConfig{TypeUrl: typeURL, Name: name, VersionInfo: "v1", ClientStatus: cs, ConfigStatus: st}
	if nack != "" {
		g.ErrorState = &adminv3.UpdateFailureState{Details: nack}
	}
	return g
}

const (
	acked  = adminv3.ClientResourceStatus_ACKED
	nacked = adminv3.ClientResourceStatus_NACKED
	asked  = adminv3.ClientResourceStatus_REQUESTED
	synced = statusv3.ConfigStatus_SYNCED
	stale  = statusv3.ConfigStatus_STALE
	errSt  = statusv3.ConfigStatus_ERROR
	unsent = statusv3.ConfigStatus_NOT_SENT
)

func answer() *statusv3.ClientStatusResponse {
	return &statusv3.ClientStatusResponse{Config: []*statusv3.ClientConfig{
		{Node: node("envoy-1", "sluice-1", xds.PressureKey, "0.970", xds.RefusingKey, "stop_accepting_requests"), GenericXdsConfigs: []*statusv3.ClientConfig_GenericXdsConfig{
			res(resource.ListenerType, "external-http", acked, synced, ""),
			res(resource.RouteType, "ingress/demo/hello", acked, stale, ""),
			res(resource.RouteType, "ingress/demo/bad", nacked, errSt, "route: duplicate\n  name"),
			res(resource.ScopedRouteType, "external-http/hello.demo.example.com", acked, synced, ""),
			res(resource.ClusterType, "demo/hello:80", asked, unsent, ""),
		}},
		{Node: node("envoy-0", "sluice-0", xds.PressureKey, "0.420", xds.RefusingKey, ""), GenericXdsConfigs: []*statusv3.ClientConfig_GenericXdsConfig{
			res(resource.ListenerType, "external-http", acked, synced, ""),
			res(resource.RouteType, "ingress/demo/hello", acked, synced, ""),
			res(resource.ScopedRouteType, "external-http/hello.demo.example.com", acked, synced, ""),
			res(resource.ScopedRouteType, "external-http/other.example.com", acked, synced, ""),
		}},
		{Node: node("", "10.0.0.9:18000", xds.ReplicaErrorKey, "connection refused")},
	}}
}

func TestFleet(t *testing.T) {
	f := FromCSDS(answer(), answer()) // an Envoy answered for twice counts once
	if len(f.Envoys) != 2 || f.Envoys[0].Node != "envoy-0" || len(f.Unreachable) != 1 {
		t.Fatalf("envoys %+v unreachable %+v", f.Envoys, f.Unreachable)
	}
	states := func(e Envoy) string {
		var s []string
		for _, t := range e.Types {
			s = append(s, t.Type+"="+t.State)
		}
		return strings.Join(s, " ")
	}
	if got, want := states(f.Envoys[0]), "LDS=SYNCED SRDS=SYNCED RDS=SYNCED CDS=- EDS=- SDS=-"; got != want {
		t.Errorf("envoy-0: %s, want %s", got, want)
	}
	if got, want := states(f.Envoys[1]), "LDS=SYNCED SRDS=SYNCED RDS=REJECTED CDS=NOT SENT EDS=- SDS=-"; got != want {
		t.Errorf("envoy-1: %s, want %s", got, want)
	}
	var b bytes.Buffer
	if err := Write(&b, f, "table"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ENVOY    REPLICA   HEAP                                    LDS         SRDS        RDS                    CDS                    EDS  SDS\n",
		"envoy-0  sluice-0  42%                                     SYNCED (1)  SYNCED (2)  SYNCED (1)             -                      -    -\n",
		"envoy-1  sluice-1  97% REFUSING (stop_accepting_requests)  SYNCED (1)  SYNCED (1)  REJECTED (0/2 synced)  NOT SENT (0/1 synced)  -    -\n",
		"envoy-1      RDS   ingress/demo/bad  route: duplicate name",
		"unreachable replica 10.0.0.9:18000: connection refused",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := Write(&b, f, "json"); err != nil {
		t.Fatal(err)
	}
	var back Fleet
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back.Envoys) != 2 || back.Envoys[1].Types[2].Rejected[0].Error == "" {
		t.Errorf("json: %v\n%s", err, b.String())
	}
	if err := Write(&b, f, "xml"); err == nil {
		t.Error("an unknown format was accepted")
	}
}

func TestForIngress(t *testing.T) {
	ing := &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "hello", Generation: 3},
		Spec:       v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{Hosts: []string{"Hello.demo.example.com"}}}},
	}
	ing.Status.ObservedGeneration = 2
	ing.Status.SetConditions(apis.Conditions{{Type: apis.ConditionReady, Status: corev1.ConditionUnknown, Reason: "Pending", Message: "envoy-1 behind"}})
	in := ForIngress(FromCSDS(answer()), ing)
	if len(in.Envoys) != 2 || !in.Envoys[0].Serving || in.Envoys[1].Serving || in.Envoys[1].State != Stale {
		t.Fatalf("%+v", in.Envoys)
	}
	if n := len(in.Envoys[0].Resources); n != 2 { // its routes and its host's scope, not other.example.com
		t.Errorf("envoy-0 resources %+v", in.Envoys[0].Resources)
	}
	var b bytes.Buffer
	if err := Write(&b, in, "yaml"); err != nil || !strings.Contains(b.String(), "serving: false") {
		t.Errorf("yaml: %v\n%s", err, b.String())
	}
	b.Reset()
	_ = Write(&b, in, "table")
	for _, want := range []string{"demo/hello  3           2         Unknown  Pending", "message: envoy-1 behind", "generation 3 is not Ready yet: the status is of generation 2",
		"envoy-1  sluice-1  no: refusing (stop_accepting_requests)  RDS ingress/demo/hello STALE, SRDS external-http/hello.demo.example.com SYNCED"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	// An Envoy that holds everything but refuses requests does not serve.
	refusing := answer()
	refusing.Config[1].Node = node("envoy-0", "sluice-0", xds.RefusingKey, "reject_incoming_connections")
	if in := ForIngress(FromCSDS(refusing), ing); in.Envoys[0].State != Synced || in.Envoys[0].Serving {
		t.Errorf("a refusing Envoy holding the ingress: %+v", in.Envoys[0])
	}
	gone := ForIngress(FromCSDS(&statusv3.ClientStatusResponse{Config: answer().Config[:1]}), &v1alpha1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "new"}})
	if gone.Envoys[0].State != Missing || gone.Ready != "Unknown" {
		t.Errorf("an ingress no Envoy has: %+v", gone)
	}
}
