package translator

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// CORS for every ingress (what net-contour's cors-policy sets): Envoy
// answers preflights itself and adds the CORS response headers for the
// allowed origins. The policy sits on each ingress's route configuration;
// the filter runs after the scope key (the policy is found through the
// route) and before authorization, so a preflight never asks.

const corsFilter = "envoy.filters.http.cors"

// corsHTTPFilter is the connection managers' CORS filter, nil when off.
func corsHTTPFilter(cfg *Config) *hcmv3.HttpFilter {
	if len(cfg.CORSAllowOrigins) == 0 {
		return nil
	}
	return &hcmv3.HttpFilter{Name: corsFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&corsv3.Cors{})}}
}

// corsPolicy is the per-filter config of a route configuration, nil when
// off.
func corsPolicy(cfg *Config) *anypb.Any {
	if len(cfg.CORSAllowOrigins) == 0 {
		return nil
	}
	p := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(cfg.CORSAllowMethods, ","),
		AllowHeaders:  strings.Join(cfg.CORSAllowHeaders, ","),
		ExposeHeaders: strings.Join(cfg.CORSExposeHeaders, ","),
	}
	if cfg.CORSAllowCredentials {
		p.AllowCredentials = wrapperspb.Bool(true)
	}
	if cfg.CORSMaxAge > 0 {
		p.MaxAge = strconv.FormatInt(int64(cfg.CORSMaxAge.Seconds()), 10)
	}
	for _, o := range cfg.CORSAllowOrigins {
		m := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}, IgnoreCase: true}
		if o == "*" {
			m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}
		}
		p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, m)
	}
	return mustAny(p)
}

// withCORS puts the policy on a route configuration.
func withCORS(rc *routev3.RouteConfiguration, cfg *Config) *routev3.RouteConfiguration {
	if p := corsPolicy(cfg); p != nil {
		rc.TypedPerFilterConfig[corsFilter] = p
	}
	return rc
}

func (c *Config) checkCORS() error {
	if len(c.CORSAllowOrigins) == 0 {
		if len(c.CORSAllowMethods)+len(c.CORSAllowHeaders)+len(c.CORSExposeHeaders) > 0 || c.CORSMaxAge != 0 || c.CORSAllowCredentials {
			return fmt.Errorf("cors-allow-origins: required by the other cors- keys")
		}
		return nil
	}
	for _, o := range c.CORSAllowOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			return fmt.Errorf("cors-allow-origins: %q is not * or an origin like https://example.com", o)
		}
	}
	for _, m := range c.CORSAllowMethods {
		if !httpguts.ValidHeaderFieldName(m) { // a method is a token, as a header name is
			return fmt.Errorf("cors-allow-methods: %q is not a method", m)
		}
	}
	for key, hs := range map[string][]string{"cors-allow-headers": c.CORSAllowHeaders, "cors-expose-headers": c.CORSExposeHeaders} {
		for _, h := range hs {
			if h != "*" && !httpguts.ValidHeaderFieldName(h) {
				return fmt.Errorf("%s: %q is not a header name", key, h)
			}
		}
	}
	if c.CORSMaxAge < 0 {
		return fmt.Errorf("cors-max-age: %v must not be negative", c.CORSMaxAge)
	}
	return nil
}
