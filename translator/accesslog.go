package translator

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"knative.dev/networking/pkg/http/header"
)

// Access logs: one line per request on Envoy's stdout (or stderr), in
// Envoy's default text format, a text format of the operator's, or JSON.
// Knative's own probes are left out unless asked for.

// Where access logs go (Config.AccessLog).
const (
	AccessLogStdout = "stdout"
	AccessLogStderr = "stderr"
	AccessLogOff    = "off"
)

// accessLogs is the connection managers' access log, or nil when off.
func accessLogs(cfg *Config) []*accesslogv3.AccessLog {
	var format *corev3.SubstitutionFormatString
	switch {
	case cfg.AccessLogFormat != "":
		f := cfg.AccessLogFormat
		if !strings.HasSuffix(f, "\n") {
			f += "\n" // Envoy adds no line end of its own
		}
		format = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: f}}}}
	case cfg.AccessLogJSON != "":
		fields, _ := jsonLogFields(cfg.AccessLogJSON) // validated with the config
		s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for k, v := range fields {
			s.Fields[k] = structpb.NewStringValue(v)
		}
		format = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s}}
	}
	var logger *accesslogv3.AccessLog
	switch cfg.AccessLog {
	case AccessLogStdout:
		l := &streamv3.StdoutAccessLog{}
		if format != nil {
			l.AccessLogFormat = &streamv3.StdoutAccessLog_LogFormat{LogFormat: format}
		}
		logger = &accesslogv3.AccessLog{Name: "envoy.access_loggers.stdout", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(l)}}
	case AccessLogStderr:
		l := &streamv3.StderrAccessLog{}
		if format != nil {
			l.AccessLogFormat = &streamv3.StderrAccessLog_LogFormat{LogFormat: format}
		}
		logger = &accesslogv3.AccessLog{Name: "envoy.access_loggers.stderr", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(l)}}
	default:
		return nil
	}
	if !cfg.AccessLogProbes {
		// Knative's prober marks its requests with K-Network-Probe.
		logger.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_HeaderFilter{
			HeaderFilter: &accesslogv3.HeaderFilter{Header: &routev3.HeaderMatcher{
				Name:                 header.ProbeKey,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
				InvertMatch:          true,
			}}}}
	}
	return []*accesslogv3.AccessLog{logger}
}

// checkAccessLog reports the first access log setting Envoy would refuse.
func (c *Config) checkAccessLog() error {
	switch c.AccessLog {
	case AccessLogStdout, AccessLogStderr, AccessLogOff, "": // "": a Config built by hand, off
	default:
		return fmt.Errorf("access-log: %q is not %s, %s or %s", c.AccessLog, AccessLogStdout, AccessLogStderr, AccessLogOff)
	}
	if c.AccessLogFormat != "" && c.AccessLogJSON != "" {
		return fmt.Errorf("access-log-format and access-log-json: set one, not both")
	}
	if err := checkLogFormat(c.AccessLogFormat); err != nil {
		return fmt.Errorf("access-log-format: %v", err)
	}
	if c.AccessLogJSON != "" {
		fields, err := jsonLogFields(c.AccessLogJSON)
		if err != nil {
			return fmt.Errorf("access-log-json: %v", err)
		}
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := checkLogFormat(fields[k]); err != nil {
				return fmt.Errorf("access-log-json: field %q: %v", k, err)
			}
		}
	}
	return nil
}

// jsonLogFields reads a JSON object of field names to formats.
func jsonLogFields(s string) (map[string]string, error) {
	var fields map[string]string
	if err := json.Unmarshal([]byte(s), &fields); err != nil {
		return nil, fmt.Errorf("want a JSON object of field names to formats (strings): %v", err)
	}
	if len(fields) == 0 {
		return nil, fmt.Errorf("no fields")
	}
	return fields, nil
}

// checkLogFormat checks the command operators of an Envoy format string:
// %NAME%, %NAME(arg)% or %NAME(arg):LENGTH%, and %% for a percent sign.
// Envoy rejects the whole listener for an unknown one, so they are checked
// here against those Envoy 1.40 accepts (e2e TestAccessLog loads them all).
func checkLogFormat(f string) error {
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		if i+1 < len(f) && f[i+1] == '%' {
			i++
			continue
		}
		j := i + 1
		for j < len(f) && (f[j] >= 'A' && f[j] <= 'Z' || f[j] >= '0' && f[j] <= '9' || f[j] == '_') {
			j++
		}
		name := f[i+1 : j]
		needsArg, known := logOperators[name]
		if !known {
			return fmt.Errorf("at %d: %q is not a command operator Sluice knows (write %%%% for a percent sign)", i, "%"+name)
		}
		if j < len(f) && f[j] == '(' {
			end := strings.IndexByte(f[j:], ')')
			if end < 0 {
				return fmt.Errorf("at %d: %%%s( is not closed", i, name)
			}
			if end == 1 {
				return fmt.Errorf("at %d: %%%s() needs an argument", i, name)
			}
			j += end + 1
		} else if needsArg {
			return fmt.Errorf("at %d: %%%s needs an argument, as in %%%s(...)%%", i, name, name)
		}
		if j < len(f) && f[j] == ':' {
			k := j + 1
			for k < len(f) && f[k] >= '0' && f[k] <= '9' {
				k++
			}
			if k == j+1 {
				return fmt.Errorf("at %d: a length after %%%s...: must be digits", i, name)
			}
			j = k
		}
		if j >= len(f) || f[j] != '%' {
			return fmt.Errorf("at %d: %%%s is not closed with %%", i, name)
		}
		i = j
	}
	return nil
}

// logOperators are the command operators Envoy 1.40 accepts, and whether
// each needs an argument.
var logOperators = map[string]bool{
	"REQ": true, "RESP": true, "TRAILER": true, "DYNAMIC_METADATA": true, "FILTER_STATE": true,
	"UPSTREAM_FILTER_STATE": true, "ENVIRONMENT": true,
	"START_TIME": false, "START_TIME_LOCAL": false, "EMIT_TIME": false,
	"PROTOCOL": false, "UPSTREAM_PROTOCOL": false,
	"RESPONSE_CODE": false, "RESPONSE_CODE_DETAILS": false, "CONNECTION_TERMINATION_DETAILS": false,
	"RESPONSE_FLAGS": false, "RESPONSE_FLAGS_LONG": false,
	"REQUEST_HEADERS_BYTES": false, "RESPONSE_HEADERS_BYTES": false, "RESPONSE_TRAILERS_BYTES": false,
	"BYTES_RECEIVED": false, "BYTES_SENT": false,
	"UPSTREAM_WIRE_BYTES_SENT": false, "UPSTREAM_WIRE_BYTES_RECEIVED": false,
	"UPSTREAM_HEADER_BYTES_SENT": false, "UPSTREAM_HEADER_BYTES_RECEIVED": false,
	"DOWNSTREAM_WIRE_BYTES_SENT": false, "DOWNSTREAM_WIRE_BYTES_RECEIVED": false,
	"DOWNSTREAM_HEADER_BYTES_SENT": false, "DOWNSTREAM_HEADER_BYTES_RECEIVED": false,
	"DURATION": false, "REQUEST_DURATION": false, "REQUEST_TX_DURATION": false,
	"RESPONSE_DURATION": false, "RESPONSE_TX_DURATION": false,
	"DOWNSTREAM_HANDSHAKE_DURATION": false, "ROUNDTRIP_DURATION": false,
	"UPSTREAM_HOST": false, "UPSTREAM_HOST_NAME": false, "UPSTREAM_CLUSTER": false, "UPSTREAM_CLUSTER_RAW": false,
	"UPSTREAM_LOCAL_ADDRESS": false, "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": false, "UPSTREAM_LOCAL_PORT": false,
	"UPSTREAM_REMOTE_ADDRESS": false, "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": false, "UPSTREAM_REMOTE_PORT": false,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT": false, "UPSTREAM_TRANSPORT_FAILURE_REASON": false, "UPSTREAM_CONNECTION_ID": false,
	"UPSTREAM_TLS_CIPHER": false, "UPSTREAM_TLS_VERSION": false, "UPSTREAM_TLS_SESSION_ID": false,
	"UPSTREAM_PEER_SUBJECT": false, "UPSTREAM_PEER_ISSUER": false,
	"DOWNSTREAM_LOCAL_ADDRESS": false, "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": false, "DOWNSTREAM_LOCAL_PORT": false,
	"DOWNSTREAM_REMOTE_ADDRESS": false, "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": false, "DOWNSTREAM_REMOTE_PORT": false,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS": false, "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": false,
	"DOWNSTREAM_DIRECT_REMOTE_PORT": false,
	"DOWNSTREAM_PEER_URI_SAN":       false, "DOWNSTREAM_LOCAL_URI_SAN": false, "DOWNSTREAM_PEER_DNS_SAN": false,
	"DOWNSTREAM_TLS_VERSION": false, "DOWNSTREAM_TLS_CIPHER": false, "DOWNSTREAM_TLS_SESSION_ID": false,
	"DOWNSTREAM_PEER_SUBJECT": false, "DOWNSTREAM_PEER_ISSUER": false, "DOWNSTREAM_PEER_FINGERPRINT_256": false,
	"DOWNSTREAM_PEER_SERIAL": false, "DOWNSTREAM_PEER_CERT_V_START": false, "DOWNSTREAM_PEER_CERT_V_END": false,
	"CONNECTION_ID": false, "STREAM_ID": false, "TRACE_ID": false, "UNIQUE_ID": false,
	"REQUESTED_SERVER_NAME": false, "ROUTE_NAME": false, "VIRTUAL_CLUSTER_NAME": false,
	"HOSTNAME": false, "LOCAL_REPLY_BODY": false, "FILTER_CHAIN_NAME": false, "ACCESS_LOG_TYPE": false,
}

// LogOperators lists the command operators checkLogFormat accepts, with an
// argument where one is needed: e2e tests load them all into real Envoy.
func LogOperators() []string {
	var out []string
	for name, needsArg := range logOperators {
		if needsArg {
			name += "(x-sluice-test)"
		}
		out = append(out, "%"+name+"%")
	}
	sort.Strings(out)
	return out
}
