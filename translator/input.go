package translator

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"sigs.k8s.io/yaml"
)

// ConfigMapName is Sluice's own ConfigMap; its keys are listed in
// ConfigFromMap.
const ConfigMapName = "config-sluice"

// Input is a set of objects read from YAML: what `sluice translate` and the
// golden tests feed the translator.
type Input struct {
	Ingresses []*v1alpha1.Ingress
	Services  map[string]*corev1.Service
	Secrets   map[string]*corev1.Secret
	Slices    []*discoveryv1.EndpointSlice
	Config    Config
}

// Service implements Lookup.
func (in *Input) Service(ns, name string) (*corev1.Service, bool) {
	s, ok := in.Services[ns+"/"+name]
	return s, ok
}

// Secret implements Lookup.
func (in *Input) Secret(ns, name string) (*corev1.Secret, bool) {
	s, ok := in.Secrets[ns+"/"+name]
	return s, ok
}

// ParseInput reads a multi-document YAML (or JSON) stream of Ingress,
// Service, EndpointSlice, Secret and ConfigMap objects. Errors name the
// document and the object.
func ParseInput(data []byte) (*Input, error) {
	in := &Input{Services: map[string]*corev1.Service{}, Secrets: map[string]*corev1.Secret{}, Config: DefaultConfig()}
	// config-network and the CAs, applied over config-sluice at the end
	var network struct {
		on      bool
		routing *corev1.Secret
		bundles []*corev1.ConfigMap
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %v", doc, err)
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("document %d: %v", doc, err)
		}
		where := fmt.Sprintf("document %d (%s %s/%s)", doc, meta.Kind, meta.Metadata.Namespace, meta.Metadata.Name)
		if meta.Metadata.Name == "" {
			return nil, fmt.Errorf("%s: metadata.name: required", where)
		}
		if meta.Metadata.Namespace == "" {
			return nil, fmt.Errorf("%s: metadata.namespace: required", where)
		}
		key := meta.Metadata.Namespace + "/" + meta.Metadata.Name
		switch meta.Kind {
		case "Ingress":
			if !strings.HasPrefix(meta.APIVersion, v1alpha1.SchemeGroupVersion.Group+"/") {
				return nil, fmt.Errorf("%s: apiVersion: %q is not %s", where, meta.APIVersion, v1alpha1.SchemeGroupVersion)
			}
			var ing v1alpha1.Ingress
			if err := yaml.UnmarshalStrict(raw, &ing); err != nil {
				return nil, fmt.Errorf("%s: %v", where, err)
			}
			in.Ingresses = append(in.Ingresses, &ing)
		case "Service":
			var s corev1.Service
			if err := yaml.UnmarshalStrict(raw, &s); err != nil {
				return nil, fmt.Errorf("%s: %v", where, err)
			}
			in.Services[key] = &s
		case "Secret":
			var s corev1.Secret
			if err := yaml.UnmarshalStrict(raw, &s); err != nil {
				return nil, fmt.Errorf("%s: %v", where, err)
			}
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			for k, v := range s.StringData {
				s.Data[k] = []byte(v)
			}
			in.Secrets[key] = &s
			if s.Name == RoutingCertSecret {
				network.routing = &s
			}
		case "EndpointSlice":
			var s discoveryv1.EndpointSlice
			if err := yaml.UnmarshalStrict(raw, &s); err != nil {
				return nil, fmt.Errorf("%s: %v", where, err)
			}
			in.Slices = append(in.Slices, &s)
		case "ConfigMap":
			var cm corev1.ConfigMap
			if err := yaml.UnmarshalStrict(raw, &cm); err != nil {
				return nil, fmt.Errorf("%s: %v", where, err)
			}
			switch {
			case cm.Name == ConfigMapName:
				if in.Config, err = ConfigFromMap(cm.Data); err != nil {
					return nil, fmt.Errorf("%s: %v", where, err)
				}
			case cm.Name == "config-network":
				if network.on, err = SystemInternalTLS(cm.Data); err != nil {
					return nil, fmt.Errorf("%s: %v", where, err)
				}
			case hasKey(cm.Labels, TrustBundleLabel):
				network.bundles = append(network.bundles, &cm)
			}
		default:
			return nil, fmt.Errorf("%s: kind: %q is not one of Ingress, Service, EndpointSlice, Secret, ConfigMap", where, meta.Kind)
		}
	}
	var problems []string
	in.Config.SystemInternalTLS = network.on
	in.Config.InternalCA, problems = TrustBundle(network.routing, network.bundles)
	if len(problems) > 0 {
		return nil, fmt.Errorf("trust for system-internal-tls: %s", strings.Join(problems, "; "))
	}
	return in, nil
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// ConfigFromMap reads the config-sluice ConfigMap. Keys: external-http-port,
// external-https-port, internal-http-port, internal-https-port,
// listen-address, stream-idle-timeout, idle-timeout, connect-timeout
// (Go durations), default-certificate (namespace/name),
// local-gateway-domains (comma separated), access-log (stdout, stderr or
// off), access-log-format or access-log-json, access-log-probes (true or
// false), tls-min-version and tls-max-version (1.0 to 1.3),
// tls-cipher-suites (comma separated), server-header (overwrite,
// append-if-absent or pass-through), server-name, proxy-protocol (true or
// false), trusted-hops (a number), tracing-collector (host:port),
// tracing-protocol (grpc or http), tracing-sampling (percent) and
// tracing-service-name, and ext-authz-address, ext-authz-protocol (grpc or
// http), ext-authz-timeout, ext-authz-failure-mode (deny or allow),
// ext-authz-body-bytes, ext-authz-pack-as-bytes, ext-authz-path-prefix and
// ext-authz-headers, and
// cors-allow-origins, cors-allow-methods, cors-allow-headers,
// cors-expose-headers (comma separated), cors-max-age and
// cors-allow-credentials.
// Unknown keys are errors.
func ConfigFromMap(data map[string]string) (Config, error) {
	return ConfigFromMapOver(DefaultConfig(), data)
}

// ConfigFromMapOver is ConfigFromMap with other defaults (the controller's
// flags).
func ConfigFromMapOver(c Config, data map[string]string) (Config, error) {
	ports := map[string]*uint32{}
	for _, np := range c.Ports() {
		ports[np.Key] = np.Port
	}
	durations := map[string]*time.Duration{
		"ext-authz-timeout":   &c.ExtAuthzTimeout,
		"stream-idle-timeout": &c.StreamIdleTimeout,
		"idle-timeout":        &c.IdleTimeout,
		"connect-timeout":     &c.ConnectTimeout,
		"cors-max-age":        &c.CORSMaxAge,
	}
	strs := map[string]*string{
		"listen-address":        &c.ListenAddress,
		"default-certificate":   &c.DefaultCertificate,
		"access-log":            &c.AccessLog,
		"access-log-json":       &c.AccessLogJSON,
		"tls-min-version":       &c.TLSMinVersion,
		"tls-max-version":       &c.TLSMaxVersion,
		"server-header":         &c.ServerHeader,
		"server-name":           &c.ServerName,
		"tracing-collector":     &c.TracingCollector,
		"tracing-protocol":      &c.TracingProtocol,
		"tracing-service-name":  &c.TracingServiceName,
		"ext-authz-address":     &c.ExtAuthzAddress,
		"ext-authz-protocol":    &c.ExtAuthzProtocol,
		"ext-authz-path-prefix": &c.ExtAuthzPathPrefix,
	}
	bools := map[string]*bool{
		"access-log-probes":       &c.AccessLogProbes,
		"proxy-protocol":          &c.ProxyProtocol,
		"cors-allow-credentials":  &c.CORSAllowCredentials,
		"ext-authz-pack-as-bytes": &c.ExtAuthzPackAsBytes,
	}
	lists := map[string]*[]string{
		"tls-cipher-suites":   &c.TLSCipherSuites,
		"cors-allow-origins":  &c.CORSAllowOrigins,
		"cors-allow-methods":  &c.CORSAllowMethods,
		"cors-allow-headers":  &c.CORSAllowHeaders,
		"cors-expose-headers": &c.CORSExposeHeaders,
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := strings.TrimSpace(data[k])
		switch {
		case ports[k] != nil:
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return c, fmt.Errorf("data.%s: %q is not a port", k, v)
			}
			*ports[k] = uint32(n)
		case durations[k] != nil:
			if v == "" {
				continue // no value: the default
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				return c, fmt.Errorf("data.%s: %v", k, err)
			}
			*durations[k] = d
		case strs[k] != nil:
			*strs[k] = v
		case bools[k] != nil:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return c, fmt.Errorf("data.%s: %q is not true or false", k, v)
			}
			*bools[k] = b
		case k == "access-log-format":
			c.AccessLogFormat = data[k] // spaces are part of the format
		case lists[k] != nil:
			*lists[k] = commaList(v, false)
		case k == "local-gateway-domains":
			c.LocalGatewayDomains = commaList(v, true)
		case k == "ext-authz-failure-mode":
			switch v {
			case "deny", "allow":
				c.ExtAuthzFailOpen = v == "allow"
			default:
				return c, fmt.Errorf("data.%s: %q is not deny or allow", k, v)
			}
		case k == "ext-authz-body-bytes":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return c, fmt.Errorf("data.%s: %q is not a number of bytes", k, v)
			}
			c.ExtAuthzBodyBytes = uint32(n)
		case k == "ext-authz-headers":
			c.ExtAuthzHeaders = commaList(v, true)
		case k == "tracing-sampling":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return c, fmt.Errorf("data.%s: %q is not a percentage", k, v)
			}
			c.TracingSampling = f
		case k == "trusted-hops":
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return c, fmt.Errorf("data.%s: %q is not a number of proxies (0-255)", k, v)
			}
			c.TrustedHops = uint32(n)
		default:
			return c, fmt.Errorf("data.%s: unknown key", k)
		}
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("data: %v", err)
	}
	return c, nil
}

// commaList splits a comma-separated value, dropping empty entries.
func commaList(v string, lower bool) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			if lower {
				e = strings.ToLower(e)
			}
			out = append(out, e)
		}
	}
	return out
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
