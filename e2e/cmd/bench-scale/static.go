package main

// Envoy configurations without xDS, made from the translator's output for
// the benchmark's ingresses: the plain one the data-plane mode measures
// beside Sluice's Envoy, and the variants of variants.go.

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	_ "sluice.dev/sluice/internal/bootstrap" // the bootstrap's types, for protojson
	"sluice.dev/sluice/translator"
)

// static is what Sluice serves for the external HTTP listener, for n
// ingresses and the data-plane ones, as static resources.
type static struct {
	ext      *listenerv3.Listener
	hcm      *hcmv3.HttpConnectionManager        // ext's
	scopes   []*routev3.ScopedRouteConfiguration // ext's, route configurations inline
	plain    *routev3.RouteConfiguration         // the same routes, one virtual host per host
	clusters []*clusterv3.Cluster                // endpoints inline
}

// translateStatic translates as the controller does (access logs off),
// with the backend at backendIP.
func translateStatic(n int, backendIP string) (*static, error) {
	in := &translator.Input{Services: map[string]*corev1.Service{}, Config: translator.DefaultConfig()}
	in.Config.AccessLog = translator.AccessLogOff
	for i := 0; i < n; i++ {
		in.Ingresses = append(in.Ingresses, kingress(i))
		for _, s := range services(i) {
			in.Services[s.Namespace+"/"+s.Name] = s
		}
	}
	svc, slice, ings := dpObjects(backendIP)
	in.Services[svc.Namespace+"/"+svc.Name] = svc
	in.Slices = append(in.Slices, slice)
	in.Ingresses = append(in.Ingresses, ings...)
	res, err := translator.TranslateInput(in)
	if err != nil {
		return nil, err
	}
	for _, ing := range res.Ingresses {
		if !ing.Ready {
			return nil, fmt.Errorf("%s not served: %s: %s", ing.Name, ing.Reason, ing.Message)
		}
	}
	s := &static{}
	for _, l := range res.Output.Listeners {
		if l.Name == translator.ExternalHTTP {
			s.ext = l
		}
	}
	if s.ext == nil {
		return nil, fmt.Errorf("no %s listener", translator.ExternalHTTP)
	}
	s.hcm = &hcmv3.HttpConnectionManager{}
	if err := s.ext.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(s.hcm); err != nil {
		return nil, err
	}

	routes := map[string]*routev3.RouteConfiguration{}
	for _, r := range res.Output.Routes {
		routes[r.Name] = r
	}
	vhosts := map[string]*routev3.VirtualHost{}
	for _, sc := range res.Output.Scopes {
		host, ok := strings.CutPrefix(sc.Name, translator.ExternalHTTP+"/")
		if !ok {
			continue
		}
		rc := routes[sc.RouteConfigurationName]
		inline := proto.Clone(sc).(*routev3.ScopedRouteConfiguration)
		inline.RouteConfigurationName, inline.RouteConfiguration = "", rc
		s.scopes = append(s.scopes, inline)
		for _, vh := range rc.GetVirtualHosts() {
			if vh.Domains[0] != "*" && !slices.Contains(vh.Domains, host) {
				continue
			}
			key := rc.Name + " " + vh.Name
			if vh.Domains[0] == "*" {
				key += " " + host // the shared redirect: a virtual host per host
			}
			if vhosts[key] == nil {
				vhosts[key] = &routev3.VirtualHost{Name: key, Routes: vh.Routes}
			}
			vhosts[key].Domains = append(vhosts[key].Domains, host)
		}
	}
	s.plain = &routev3.RouteConfiguration{Name: "plain", IgnorePortInHostMatching: true, MostSpecificHeaderMutationsWins: true}
	for _, k := range slices.Sorted(maps.Keys(vhosts)) {
		s.plain.VirtualHosts = append(s.plain.VirtualHosts, vhosts[k])
	}

	cla := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, e := range res.Endpoints {
		cla[e.ClusterName] = e
	}
	for _, c := range res.Output.Clusters {
		c = proto.Clone(c).(*clusterv3.Cluster)
		if c.GetType() == clusterv3.Cluster_EDS {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
			c.EdsClusterConfig = nil
			c.LoadAssignment = cla[c.Name]
			if c.LoadAssignment == nil {
				c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: c.Name}
			}
		}
		s.clusters = append(s.clusters, c)
	}
	return s, nil
}

// plainHCM is Sluice's connection manager with the plain route
// configuration inline: no scopes, no scope key, no Lua filter.
func (s *static) plainHCM() *hcmv3.HttpConnectionManager {
	m := proto.Clone(s.hcm).(*hcmv3.HttpConnectionManager)
	m.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: s.plain}
	m.EarlyHeaderMutationExtensions = nil
	m.HttpFilters = withoutLua(m.HttpFilters)
	return m
}

func withoutLua(fs []*hcmv3.HttpFilter) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	for _, f := range fs {
		if f.Name != "envoy.filters.http.lua" {
			out = append(out, f)
		}
	}
	return out
}

// listener is the external HTTP listener on 127.0.0.1:port with m.
func (s *static) listener(m *hcmv3.HttpConnectionManager, port int) (*listenerv3.Listener, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	l := proto.Clone(s.ext).(*listenerv3.Listener)
	l.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
	l.AdditionalAddresses = nil
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	return l, nil
}

// envoyProc is an Envoy with static resources.
type envoyProc struct {
	Name                string
	Admin, Port         int // on 127.0.0.1
	BaseID, Concurrency int // Concurrency 0: Envoy's default
	cmd                 *exec.Cmd
	log                 *os.File
}

func (e *envoyProc) addr() string { return fmt.Sprintf("127.0.0.1:%d", e.Port) }
func (e *envoyProc) pid() int     { return e.cmd.Process.Pid }

// start runs envoyBin (after the wrapper command, if any) with the
// bootstrap `sluice bootstrap` gives the gateway's Envoys (overload
// manager and all), its dynamic resources replaced with l and clusters;
// files go to dir.
func (e *envoyProc) start(sluiceBin, envoyBin, dir string, l *listenerv3.Listener, clusters []*clusterv3.Cluster, wrapper []string) error {
	out, err := exec.Command(sluiceBin, "bootstrap", "--admin-address", fmt.Sprintf("127.0.0.1:%d", e.Admin), "--node-id", e.Name).Output()
	if err != nil {
		return fmt.Errorf("sluice bootstrap: %w", err)
	}
	js, err := yaml.YAMLToJSON(out)
	if err != nil {
		return err
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		return fmt.Errorf("the bootstrap: %w", err)
	}
	b.DynamicResources = nil
	b.StaticResources.Listeners = []*listenerv3.Listener{l}
	b.StaticResources.Clusters = append(b.StaticResources.Clusters, clusters...)
	if js, err = protojson.Marshal(b); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, e.Name+".json")
	if err := os.WriteFile(conf, js, 0o644); err != nil {
		return err
	}
	if e.log, err = os.Create(filepath.Join(dir, e.Name+".log")); err != nil {
		return err
	}
	args := []string{envoyBin, "-c", conf, "--base-id", strconv.Itoa(e.BaseID), "--log-level", "warn"}
	if e.Concurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(e.Concurrency))
	}
	args = append(wrapper, args...)
	e.cmd = exec.Command(args[0], args[1:]...)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the benchmark
	return e.cmd.Start()
}

func (e *envoyProc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", e.Admin))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.stop()
	return fmt.Errorf("Envoy %s was not ready in %v (log: %s)", e.Name, timeout, e.log.Name())
}

func (e *envoyProc) stop() {
	if e.cmd != nil && e.cmd.Process != nil {
		_ = e.cmd.Process.Kill()
		_ = e.cmd.Wait()
	}
	if e.log != nil {
		e.log.Close()
	}
}
