package translator

import (
	"fmt"
	"strings"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// checkValues rejects the values Validate lets through but Envoy would
// refuse. One of them in the shared route configuration or listener would
// make Envoy NACK the update for every ingress, so they must stop here.
func checkValues(ing *v1alpha1.Ingress) *Error {
	for i, rule := range ing.Spec.Rules {
		if v := rule.Visibility; v != v1alpha1.IngressVisibilityExternalIP && v != v1alpha1.IngressVisibilityClusterLocal {
			return errorf(ReasonInvalid, "spec.rules[%d].visibility: %q is not ExternalIP or ClusterLocal", i, v)
		}
		for j, h := range rule.Hosts {
			if !validHost(h) {
				return errorf(ReasonInvalid, "spec.rules[%d].hosts[%d]: %q is not a host name", i, j, h)
			}
		}
		for j, path := range rule.HTTP.Paths {
			field := fmt.Sprintf("spec.rules[%d].http.paths[%d]", i, j)
			if path.RewriteHost != "" && !validHost(path.RewriteHost) {
				return errorf(ReasonInvalid, "%s.rewriteHost: %q is not a host name", field, path.RewriteHost)
			}
			for name := range path.Headers {
				if !validHeaderName(name) {
					return errorf(ReasonInvalid, "%s.headers: %q is not a header name", field, name)
				}
			}
			if err := checkAppend(path.AppendHeaders, field+".appendHeaders"); err != nil {
				return err
			}
			for k, split := range path.Splits {
				if err := checkAppend(split.AppendHeaders, fmt.Sprintf("%s.splits[%d].appendHeaders", field, k)); err != nil {
					return err
				}
			}
		}
	}
	for i, t := range ing.Spec.TLS {
		if len(t.Hosts) == 0 {
			return errorf(ReasonInvalid, "spec.tls[%d].hosts: required (certificates are chosen by SNI)", i)
		}
		for j, h := range t.Hosts {
			// Envoy's server_names take a wildcard only as a "*." prefix.
			if !validHost(h) || strings.Contains(strings.TrimPrefix(h, "*."), "*") || strings.Contains(h, ":") {
				return errorf(ReasonInvalid, "spec.tls[%d].hosts[%d]: %q is not a TLS server name", i, j, h)
			}
		}
	}
	return nil
}

func checkAppend(h map[string]string, field string) *Error {
	for k, v := range h {
		if !validHeaderName(k) || strings.EqualFold(k, "host") {
			return errorf(ReasonInvalid, "%s: %q is not a header Envoy can set", field, k)
		}
		if !validHeaderValue(v) {
			return errorf(ReasonInvalid, "%s[%s]: value has control characters", field, k)
		}
	}
	return nil
}

// validHost allows DNS names, "*" wildcards, IPv6 brackets and a port.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range []byte(h) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._*:[]", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderName is an RFC 9110 token; that also rules out pseudo-headers.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	for _, c := range []byte(s) {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
