package translator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Result is a whole translation of an Input: what the controller would
// serve for it, and the fate of every ingress.
type Result struct {
	Output    *Output
	Endpoints []*endpointv3.ClusterLoadAssignment
	Ingresses []IngressResult
}

// IngressResult says whether one ingress is served, and if not why.
type IngressResult struct {
	Name   string `json:"name"`
	Hash   string `json:"hash,omitempty"`
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	// Message names the field at fault.
	Message string `json:"message,omitempty"`
}

// TranslateInput translates every ingress of in, as the controller would.
func TranslateInput(in *Input) (*Result, error) {
	if err := in.Config.Validate(); err != nil {
		return nil, err
	}
	def, err := DefaultSecret(&in.Config, in)
	if err != nil {
		return nil, err
	}
	t := NewTable(in.Config, def)
	for _, ing := range in.Ingresses {
		t.Set(Translate(ing, in, &in.Config))
	}
	res := &Result{Output: t.Build()}
	for _, ing := range in.Ingresses {
		key := ing.Namespace + "/" + ing.Name
		p, _ := t.Get(key)
		r := IngressResult{Name: key, Hash: p.Hash, Ready: true}
		if e := t.Status(key); e != nil {
			r = IngressResult{Name: key, Reason: e.Reason, Message: e.Message}
		}
		res.Ingresses = append(res.Ingresses, r)
	}
	sort.Slice(res.Ingresses, func(i, j int) bool { return res.Ingresses[i].Name < res.Ingresses[j].Name })
	for _, c := range res.Output.Clusters {
		if b := res.Output.Backends[c.Name]; !b.External {
			res.Endpoints = append(res.Endpoints, LoadAssignment(c.Name, b, in.Slices))
		}
	}
	return res, nil
}

// Redacted returns a copy of a secret with its private key replaced, for
// printing.
func Redacted(s *tlsv3.Secret) *tlsv3.Secret {
	c := proto.Clone(s).(*tlsv3.Secret)
	if tc := c.GetTlsCertificate(); tc != nil && tc.PrivateKey != nil {
		tc.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "[redacted]"}}
	}
	return c
}

// Render prints a Result grouped by resource type, as YAML or JSON. Envoy
// resources are in protojson with Envoy's own field names.
func Render(r *Result, format string) ([]byte, error) {
	doc := map[string]any{}
	add := func(key string, msgs []proto.Message) error {
		list := make([]json.RawMessage, 0, len(msgs))
		for _, m := range msgs {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
			if err != nil {
				return err
			}
			// protojson's spacing is unstable on purpose: compact it.
			var buf bytes.Buffer
			if err := json.Compact(&buf, b); err != nil {
				return err
			}
			list = append(list, buf.Bytes())
		}
		doc[key] = list
		return nil
	}
	o := r.Output
	groups := []struct {
		key  string
		msgs []proto.Message
	}{
		{"listeners", asMessages(o.Listeners)},
		{"routes", asMessages(o.Routes)},
		{"scopes", asMessages(o.Scopes)},
		{"clusters", asMessages(o.Clusters)},
		{"endpoints", asMessages(r.Endpoints)},
	}
	secrets := make([]proto.Message, 0, len(o.Secrets))
	for _, s := range o.Secrets {
		secrets = append(secrets, Redacted(s))
	}
	groups = append(groups, struct {
		key  string
		msgs []proto.Message
	}{"secrets", secrets})
	for _, g := range groups {
		if err := add(g.key, g.msgs); err != nil {
			return nil, err
		}
	}
	doc["ingresses"] = r.Ingresses
	// encoding/json sorts map keys: stable output.
	js, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	switch format {
	case "json":
		return append(js, '\n'), nil
	case "yaml", "":
		return yaml.JSONToYAML(js)
	}
	return nil, fmt.Errorf("output format %q: want yaml or json", format)
}

func asMessages[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}
