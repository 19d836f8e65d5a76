package translator

import (
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// External authorization (Envoy's ext_authz): every request asks an
// authorization service first, over gRPC (with the ingress's namespace,
// name and visibility as context) or HTTP. Knative's probes, the hash
// probe and ACME HTTP-01 challenges are never asked, nor the HTTPS
// redirect.

// ExtAuthzCluster is the cluster of the authorization service.
const ExtAuthzCluster = "sluice-ext-authz"

const extAuthzFilter = "envoy.filters.http.ext_authz"

// Protocols of the authorization service (Config.ExtAuthzProtocol).
const (
	ExtAuthzGRPC = "grpc"
	ExtAuthzHTTP = "http"
)

// extAuthz is the connection managers' ext_authz filter, nil when off.
func extAuthz(cfg *Config) *hcmv3.HttpFilter {
	if cfg.ExtAuthzAddress == "" {
		return nil
	}
	f := &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    cfg.ExtAuthzFailOpen,
	}
	timeout := durationpb.New(cfg.ExtAuthzTimeout)
	if cfg.ExtAuthzProtocol == ExtAuthzHTTP {
		hs := &extauthzv3.HttpService{
			ServerUri: &corev3.HttpUri{Uri: "http://" + cfg.ExtAuthzAddress,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: ExtAuthzCluster}, Timeout: timeout},
			PathPrefix: cfg.ExtAuthzPathPrefix,
		}
		if len(cfg.ExtAuthzHeaders) > 0 {
			m := &matcherv3.ListStringMatcher{}
			for _, h := range cfg.ExtAuthzHeaders {
				m.Patterns = append(m.Patterns, &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h}, IgnoreCase: true})
			}
			hs.AuthorizationRequest = &extauthzv3.AuthorizationRequest{AllowedHeaders: m}
		}
		f.Services = &extauthzv3.ExtAuthz_HttpService{HttpService: hs}
	} else {
		f.Services = &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ExtAuthzCluster}},
			Timeout:         timeout,
		}}
	}
	if cfg.ExtAuthzBodyBytes > 0 {
		f.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: cfg.ExtAuthzBodyBytes, AllowPartialMessage: true,
			PackAsBytes: cfg.ExtAuthzPackAsBytes}
	}
	return &hcmv3.HttpFilter{Name: extAuthzFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(f)}}
}

// extAuthzRoute is a route's ext_authz setting: off for probes and ACME
// challenges, else the ingress as context. nil when ext_authz is off.
func extAuthzRoute(cfg *Config, namespace, name, visibility, prefix string, probe bool) map[string]*anypb.Any {
	if cfg.ExtAuthzAddress == "" {
		return nil
	}
	per := &extauthzv3.ExtAuthzPerRoute{}
	if probe || isChallenge(prefix) {
		per.Override = &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}
	} else {
		per.Override = &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
			ContextExtensions: map[string]string{"namespace": namespace, "name": name, "visibility": visibility}}}
	}
	return map[string]*anypb.Any{extAuthzFilter: mustAny(per)}
}

// extAuthzOff turns ext_authz off on a route that answers by itself.
func extAuthzOff(r *routev3.Route) {
	r.TypedPerFilterConfig = map[string]*anypb.Any{extAuthzFilter: mustAny(&extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}})}
}

// checkExtAuthz reports the first ext_authz setting Envoy would refuse.
func (c *Config) checkExtAuthz() error {
	if c.ExtAuthzAddress == "" {
		return nil
	}
	if err := checkHostPort("ext-authz-address", c.ExtAuthzAddress); err != nil {
		return err
	}
	switch c.ExtAuthzProtocol {
	case ExtAuthzGRPC, ExtAuthzHTTP:
	default:
		return fmt.Errorf("ext-authz-protocol: %q is not %s or %s", c.ExtAuthzProtocol, ExtAuthzGRPC, ExtAuthzHTTP)
	}
	if c.ExtAuthzTimeout <= 0 || c.ExtAuthzTimeout > time.Minute {
		return fmt.Errorf("ext-authz-timeout: %v is not between 0 and 1m", c.ExtAuthzTimeout)
	}
	if c.ExtAuthzPathPrefix != "" && (c.ExtAuthzProtocol != ExtAuthzHTTP || !strings.HasPrefix(c.ExtAuthzPathPrefix, "/")) {
		return fmt.Errorf("ext-authz-path-prefix: %q needs ext-authz-protocol http and a leading /", c.ExtAuthzPathPrefix)
	}
	if len(c.ExtAuthzHeaders) > 0 && c.ExtAuthzProtocol != ExtAuthzHTTP {
		return fmt.Errorf("ext-authz-headers: only for ext-authz-protocol http (gRPC gets every header)")
	}
	if c.ExtAuthzPackAsBytes && (c.ExtAuthzProtocol != ExtAuthzGRPC || c.ExtAuthzBodyBytes == 0) {
		return fmt.Errorf("ext-authz-pack-as-bytes: only for ext-authz-protocol grpc with ext-authz-body-bytes")
	}
	return nil
}
