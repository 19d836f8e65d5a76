package xds

import (
	"context"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

type named struct {
	name string
	it   *item
}

// deltaResponse is one delta response; returned is the stream's map.
type deltaResponse struct {
	req      *cache.DeltaRequest
	version  string
	items    []named
	removed  []string
	returned map[string]string

	once sync.Once
	resp *discovery.DeltaDiscoveryResponse
	err  error
}

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discovery.DeltaDiscoveryResponse, error) {
	r.once.Do(func() {
		out := &discovery.DeltaDiscoveryResponse{
			TypeUrl: r.req.GetTypeUrl(), SystemVersionInfo: r.version, RemovedResources: r.removed,
			Resources: make([]*discovery.Resource, 0, len(r.items)),
		}
		for _, x := range r.items {
			b, err := x.it.marshaled()
			if err != nil {
				r.err = err
				return
			}
			out.Resources = append(out.Resources, &discovery.Resource{
				Name: x.name, Version: x.it.version,
				Resource: &anypb.Any{TypeUrl: r.req.GetTypeUrl(), Value: b},
			})
		}
		r.resp = out
	})
	return r.resp, r.err
}

func (r *deltaResponse) GetDeltaRequest() *discovery.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                 { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string                        { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string              { return r.returned }
func (r *deltaResponse) GetReturnedResources() map[string]string           { return r.returned }
func (r *deltaResponse) GetContext() context.Context                       { return context.Background() }
