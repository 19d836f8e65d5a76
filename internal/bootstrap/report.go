package bootstrap

import (
	"time"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	matcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	statsinputv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/stats/v3"
	otelsinkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/stat_sinks/open_telemetry/v3"
	detectorsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/tracers/opentelemetry/resource_detectors/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Envoy reports its memory and overload state to Sluice, which cannot ask
// for them: an OpenTelemetry stats sink on the xDS cluster, every
// ReportInterval, carrying only the stats named by ReportPrefixes (the
// sink's matcher drops the rest before they are encoded). The report names
// its Envoy by the resource attribute NodeAttr, from the environment
// (OTEL_RESOURCE_ATTRIBUTES, which the chart sets from the pod name, as it
// does --service-node), else BootstrapNodeAttr, the bootstrap's node id.
const (
	NodeAttr          = "sluice.node"
	BootstrapNodeAttr = "sluice.bootstrap.node"
	ReportInterval    = 5 * time.Second
)

// ReportPrefixes are the stats an Envoy reports.
var ReportPrefixes = []string{"overload.", "server.memory_"}

func reportSink(nodeID string) ([]*metricsv3.StatsSink, error) {
	var keep []*matcherv3.Matcher_MatcherList_Predicate
	input, err := xdsTyped("stat_full_name", &statsinputv3.StatFullNameMatchInput{})
	if err != nil {
		return nil, err
	}
	for _, p := range ReportPrefixes {
		keep = append(keep, &matcherv3.Matcher_MatcherList_Predicate{MatchType: &matcherv3.Matcher_MatcherList_Predicate_SinglePredicate_{
			SinglePredicate: &matcherv3.Matcher_MatcherList_Predicate_SinglePredicate{
				Input: input,
				Matcher: &matcherv3.Matcher_MatcherList_Predicate_SinglePredicate_ValueMatch{
					ValueMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}},
				},
			}}})
	}
	drop, err := xdsTyped("drop", &otelsinkv3.SinkConfig_DropAction{})
	if err != nil {
		return nil, err
	}
	env, err := typed("envoy.tracers.opentelemetry.resource_detectors.environment", &detectorsv3.EnvironmentResourceDetectorConfig{})
	if err != nil {
		return nil, err
	}
	static, err := typed("envoy.tracers.opentelemetry.resource_detectors.static_config",
		&detectorsv3.StaticConfigResourceDetectorConfig{Attributes: map[string]string{BootstrapNodeAttr: nodeID}})
	if err != nil {
		return nil, err
	}
	sink, err := anypb.New(&otelsinkv3.SinkConfig{
		ProtocolSpecifier: &otelsinkv3.SinkConfig_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSCluster}},
			Timeout:         durationpb.New(ReportInterval),
		}},
		ResourceDetectors:    []*corev3.TypedExtensionConfig{static, env},
		UseTagExtractedName:  wrapperspb.Bool(false),
		EmitTagsAsAttributes: wrapperspb.Bool(false),
		CustomMetricConversions: &matcherv3.Matcher{MatcherType: &matcherv3.Matcher_MatcherList_{MatcherList: &matcherv3.Matcher_MatcherList{
			Matchers: []*matcherv3.Matcher_MatcherList_FieldMatcher{{
				Predicate: &matcherv3.Matcher_MatcherList_Predicate{MatchType: &matcherv3.Matcher_MatcherList_Predicate_NotMatcher{
					NotMatcher: &matcherv3.Matcher_MatcherList_Predicate{MatchType: &matcherv3.Matcher_MatcherList_Predicate_OrMatcher{
						OrMatcher: &matcherv3.Matcher_MatcherList_Predicate_PredicateList{Predicate: keep},
					}},
				}},
				OnMatch: &matcherv3.Matcher_OnMatch{OnMatch: &matcherv3.Matcher_OnMatch_Action{Action: drop}},
			}},
		}}},
	})
	if err != nil {
		return nil, err
	}
	return []*metricsv3.StatsSink{{Name: "envoy.stat_sinks.open_telemetry", ConfigType: &metricsv3.StatsSink_TypedConfig{TypedConfig: sink}}}, nil
}

func typed(name string, m proto.Message) (*corev3.TypedExtensionConfig, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	return &corev3.TypedExtensionConfig{Name: name, TypedConfig: a}, nil
}

func xdsTyped(name string, m proto.Message) (*xdscorev3.TypedExtensionConfig, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	return &xdscorev3.TypedExtensionConfig{Name: name, TypedConfig: a}, nil
}
