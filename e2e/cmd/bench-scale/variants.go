package main

// The variants mode (-variants D): where a request's cost goes in Envoy.
// One static Envoy (static.go, one worker) per variant of the external
// HTTP listener's configuration, each under callgrind; each host gets D of
// load from one keep-alive client (a request at a time, so Envoy's work
// per request does not depend on how requests batch) while Envoy's
// instructions are counted. The counts barely depend on what else the
// machine does; wall-clock rounds on a shared 2-core machine vary by
// 15 %. Kernel time (the sockets) is not counted: it is the same for every
// variant. No stack is needed.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	skipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"sluice.dev/sluice/translator"
)

// variant is a connection manager made from Sluice's (s.hcm) and its
// scopes (s.scopes); make returns it with the scopes inline.
type variant struct {
	name string
	make func(s *static) *hcmv3.HttpConnectionManager
}

var variants = []variant{
	{"plain virtual hosts", func(s *static) *hcmv3.HttpConnectionManager { return s.plainHCM() }},
	{"scopes, key from :authority (one listener kind only)", func(s *static) *hcmv3.HttpConnectionManager {
		m := scoped(s, func(sc *routev3.ScopedRouteConfiguration) {
			k := sc.Key.Fragments[0]
			k.Type = &routev3.ScopedRouteConfiguration_Key_Fragment_StringKey{StringKey: strings.TrimPrefix(k.GetStringKey(), translator.ExternalHTTP+"/")}
		})
		m.EarlyHeaderMutationExtensions, m.HttpFilters = nil, withoutLua(m.HttpFilters)
		m.GetScopedRoutes().ScopeKeyBuilder.Fragments[0].GetHeaderValueExtractor().Name = ":authority"
		return m
	}},
	{"scopes, key by the early header mutation, no lower-casing", func(s *static) *hcmv3.HttpConnectionManager {
		m := scoped(s, nil)
		m.HttpFilters = withoutLua(m.HttpFilters)
		return m
	}},
	{"scopes, key by Lua on every request (before)", func(s *static) *hcmv3.HttpConnectionManager {
		m := scoped(s, luaEverywhere)
		m.EarlyHeaderMutationExtensions = nil
		m.GetScopedRoutes().ScopeKeyBuilder.Fragments[0].GetHeaderValueExtractor().ElementSeparator = ""
		return m
	}},
	{"scopes, early header mutation, Lua behind match_delegate", func(s *static) *hcmv3.HttpConnectionManager {
		m := scoped(s, luaEverywhere)
		m.HttpFilters[0] = matchDelegate(m.HttpFilters[0])
		return m
	}},
	{"scopes, early header mutation, Lua only without a route (Sluice)", func(s *static) *hcmv3.HttpConnectionManager { return scoped(s, nil) }},
}

// scoped is Sluice's connection manager with its scopes inline, each
// changed by change (if not nil) on a copy.
func scoped(s *static, change func(*routev3.ScopedRouteConfiguration)) *hcmv3.HttpConnectionManager {
	m := proto.Clone(s.hcm).(*hcmv3.HttpConnectionManager)
	list := &hcmv3.ScopedRouteConfigurationsList{}
	for _, sc := range s.scopes {
		sc = proto.Clone(sc).(*routev3.ScopedRouteConfiguration)
		if change != nil {
			change(sc)
		}
		list.ScopedRouteConfigurations = append(list.ScopedRouteConfigurations, sc)
	}
	m.GetScopedRoutes().ConfigSpecifier = &hcmv3.ScopedRoutes_ScopedRouteConfigurationsList{ScopedRouteConfigurationsList: list}
	return m
}

// luaEverywhere drops the route configuration's word that the Lua filter
// is not needed, so it runs for every request.
func luaEverywhere(sc *routev3.ScopedRouteConfiguration) {
	delete(sc.RouteConfiguration.TypedPerFilterConfig, "envoy.filters.http.lua")
}

// matchDelegate runs f only for an :authority with an upper-case letter.
func matchDelegate(f *hcmv3.HttpFilter) *hcmv3.HttpFilter {
	pack := func(m proto.Message) *anypb.Any { a, _ := anypb.New(m); return a }
	noUpper := &xdsmatcherv3.Matcher_MatcherList_Predicate{MatchType: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{
		SinglePredicate: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate{
			Input: &xdscorev3.TypedExtensionConfig{Name: "authority", TypedConfig: pack(&matcherv3.HttpRequestHeaderMatchInput{HeaderName: ":authority"})},
			Matcher: &xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_ValueMatch{ValueMatch: &xdsmatcherv3.StringMatcher{
				MatchPattern: &xdsmatcherv3.StringMatcher_SafeRegex{SafeRegex: &xdsmatcherv3.RegexMatcher{
					EngineType: &xdsmatcherv3.RegexMatcher_GoogleRe2{GoogleRe2: &xdsmatcherv3.RegexMatcher_GoogleRE2{}}, Regex: "[^A-Z]*"}},
			}},
		},
	}}
	skip := &xdsmatcherv3.Matcher_OnMatch{OnMatch: &xdsmatcherv3.Matcher_OnMatch_Action{Action: &xdscorev3.TypedExtensionConfig{
		Name: "skip", TypedConfig: pack(&skipv3.SkipFilter{})}}}
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.match_delegate", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(&matchingv3.ExtensionWithMatcher{
		ExtensionConfig: &corev3.TypedExtensionConfig{Name: f.Name, TypedConfig: f.GetTypedConfig()},
		XdsMatcher: &xdsmatcherv3.Matcher{MatcherType: &xdsmatcherv3.Matcher_MatcherList_{MatcherList: &xdsmatcherv3.Matcher_MatcherList{
			Matchers: []*xdsmatcherv3.Matcher_MatcherList_FieldMatcher{{Predicate: noUpper, OnMatch: skip}}}}},
	})}}
}

func runVariants(root string, bins []string, n int, window time.Duration) error {
	if err := serveBackend("127.0.0.1"); err != nil {
		return err
	}
	s, err := translateStatic(n, "127.0.0.1")
	if err != nil {
		return err
	}
	bin := parseBin(bins[0], root, n).Bin
	dir := filepath.Join(root, ".stack", "variants")
	_ = os.RemoveAll(dir)
	var envoys []*envoyProc
	defer func() {
		for _, e := range envoys {
			e.stop()
		}
	}()
	for i, v := range variants {
		e := &envoyProc{Name: fmt.Sprintf("variant-%d", i), Admin: 29100 + i, Port: 39100 + i, BaseID: 8100 + i, Concurrency: 1}
		l, err := s.listener(v.make(s), e.Port)
		if err != nil {
			return err
		}
		wrapper := []string{"valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + filepath.Join(dir, e.Name+".cg")}
		if err := e.start(bin, filepath.Join(root, "bin", "envoy"), dir, l, s.clusters, wrapper); err != nil {
			return err
		}
		envoys = append(envoys, e)
	}
	for _, e := range envoys {
		if err := e.waitReady(10 * time.Minute); err != nil {
			return err
		}
	}
	fmt.Printf("%d Envoys under callgrind, %d KIngresses each; what each answers:\n", len(envoys), n)
	checks := []string{backendHost, redirectHost, strings.ToUpper(redirectHost), "Redirect." + dpNS + ".example.com:8080", "nosuch." + dpNS + ".example.com"}
	codes := map[int][]int{}
	for i, e := range envoys {
		for _, h := range checks {
			code, err := status(e.addr(), h)
			if err != nil {
				return err
			}
			codes[i] = append(codes[i], code)
		}
		fmt.Printf("   %-68s %v\n", variants[i].name, codes[i])
	}
	ir := map[string]float64{}
	for _, h := range dpHosts {
		for i, e := range envoys {
			per, reqs, err := countInstructions(e, dir, h.host, h.want, window)
			if err != nil {
				return err
			}
			ir[fmt.Sprint(i, h.name)] = per
			fmt.Printf("   %-8s %-68s %6d requests %8.0f instructions each\n", h.name, variants[i].name, reqs, per)
		}
	}
	fmt.Printf("\n| N = %d, instructions per request (callgrind, one worker) | redirect (Envoy answers) | backend (proxied) | upper-case host |\n|---|---:|---:|---|\n", n)
	for i, v := range variants {
		rel := func(h string) string {
			x, base := ir[fmt.Sprint(i, h)], ir[fmt.Sprint(0, h)]
			return fmt.Sprintf("%.1fk (%+.0f %%)", x/1000, 100*(x/base-1))
		}
		upper := "routed"
		if codes[i][2] != 301 || codes[i][3] != 301 {
			upper = fmt.Sprintf("%d: not routed", codes[i][2])
		}
		fmt.Printf("| %s | %s | %s | %s |\n", v.name, rel("redirect"), rel("backend"), upper)
	}
	return nil
}

// countInstructions loads e with host from one keep-alive client and
// counts Envoy's instructions over window: callgrind zeroes its counters,
// then dumps them while the load goes on (it acts on a command only while
// Envoy runs).
func countInstructions(e *envoyProc, dir, host string, want int, window time.Duration) (float64, int64, error) {
	var done atomic.Int64
	var failed atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: bench-variants\r\n\r\n")
	for range 1 {
		wg.Go(func() {
			c, err := net.Dial("tcp", e.addr())
			if err != nil {
				failed.Store(err)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, _, err := roundTrip(c, r, req)
				if err != nil || code != want {
					failed.Store(fmt.Errorf("%s on %s: %d %v", host, e.Name, code, err))
					return
				}
				done.Add(1)
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	ctl := func(args ...string) error {
		return exec.Command("callgrind_control", append(args, strconv.Itoa(e.pid()))...).Run()
	}
	time.Sleep(2 * time.Second) // warm up
	if err := ctl("-i", "on"); err != nil {
		return 0, 0, err
	}
	if err := ctl("-z"); err != nil {
		return 0, 0, err
	}
	c0 := done.Load()
	time.Sleep(window)
	before, _ := filepath.Glob(filepath.Join(dir, e.Name+".cg*"))
	if err := ctl("-d"); err != nil {
		return 0, 0, err
	}
	reqs := done.Load() - c0
	if err := ctl("-i", "off"); err != nil {
		return 0, 0, err
	}
	if err, _ := failed.Load().(error); err != nil {
		return 0, 0, err
	}
	after, _ := filepath.Glob(filepath.Join(dir, e.Name+".cg*"))
	for _, f := range after {
		if slices.Contains(before, f) {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, 0, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "summary: "); ok {
				total, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				return total / float64(reqs), reqs, err
			}
		}
	}
	return 0, 0, fmt.Errorf("no callgrind dump of %s in %s", e.Name, dir)
}
