package xds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// sotwCache serves the SotW watches of one type (deltaCache serves the
// delta ones): go-control-plane's LinearCache, or a fullStateCache.
type sotwCache interface {
	CreateWatch(*cache.Request, cache.Subscription, chan cache.Response) (func(), error)
	Fetch(context.Context, *cache.Request) (cache.Response, error)
	UpdateResources(update map[string]types.Resource, remove []string) error
}

// fullStateCache serves the SotW watches of scoped route configurations.
// Envoy reads every SotW SRDS response as the whole set (a scope left out
// is removed), but LinearCache sends SotW clients only the changed scopes
// of this type, and nothing for a removal. So they are answered here with
// every scope.
type fullStateCache struct {
	mu        sync.Mutex
	resources map[string]types.Resource
	version   string
	prefix    string // tells this process's versions from another's
	count     uint64
	watches   map[*fullWatch]bool
}

type fullWatch struct {
	req *cache.Request
	out chan cache.Response
}

func newFullStateCache() *fullStateCache {
	c := &fullStateCache{
		resources: map[string]types.Resource{},
		prefix:    strconv.FormatInt(time.Now().UnixNano(), 36) + "-",
		watches:   map[*fullWatch]bool{},
	}
	c.version = c.prefix + "0"
	return c
}

// UpdateResources applies a change and answers every open watch.
func (c *fullStateCache) UpdateResources(update map[string]types.Resource, remove []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.Copy(c.resources, update)
	for _, name := range remove {
		delete(c.resources, name)
	}
	c.count++
	c.version = c.prefix + strconv.FormatUint(c.count, 10)
	for w := range c.watches {
		w.out <- c.responseLocked(w.req)
	}
	clear(c.watches)
	return nil
}

// sotwFullState says whether Envoy reads a SotW response of typeURL as
// the whole set of that type.
func sotwFullState(typeURL string) bool {
	return typeURL == scopeType || cache.ResourceRequiresFullStateInSotw(typeURL)
}

// versionKey is the one entry of the returned resources this cache hands
// the server, which gives it back with the stream's next request: the
// version the stream last got. (The version_info Envoy echoes is the
// tracker's, not ours.)
const versionKey = "sluice.dev/full-state-version"

// CreateWatch answers at once when the stream has not had the current
// version, and otherwise on the next update.
func (c *fullStateCache) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sub.ReturnedResources()[versionKey] != c.version {
		out <- c.responseLocked(req)
		return func() {}, nil
	}
	w := &fullWatch{req: req, out: out}
	c.watches[w] = true
	return func() {
		c.mu.Lock()
		delete(c.watches, w)
		c.mu.Unlock()
	}, nil
}

func (c *fullStateCache) responseLocked(req *cache.Request) *fullResponse {
	names := slices.Sorted(maps.Keys(c.resources))
	res := make([]types.Resource, len(names))
	for i, n := range names {
		res[i] = c.resources[n]
	}
	return &fullResponse{req: req, version: c.version, resources: res}
}

// Fetch is not served: Sluice speaks gRPC streams only.
func (c *fullStateCache) Fetch(context.Context, *cache.Request) (cache.Response, error) {
	return nil, errors.New("fetch is not supported")
}

// fullResponse is a SotW response with every resource of the type.
type fullResponse struct {
	req       *cache.Request
	version   string
	resources []types.Resource

	once sync.Once
	resp *discovery.DiscoveryResponse
	err  error
}

func (r *fullResponse) GetDiscoveryResponse() (*discovery.DiscoveryResponse, error) {
	r.once.Do(func() {
		out := &discovery.DiscoveryResponse{VersionInfo: r.version, TypeUrl: r.req.GetTypeUrl()}
		for _, m := range r.resources {
			b, err := cache.MarshalResource(m)
			if err != nil {
				r.err = fmt.Errorf("%s: %w", cache.GetResourceName(m), err)
				return
			}
			out.Resources = append(out.Resources, &anypb.Any{TypeUrl: r.req.GetTypeUrl(), Value: b})
		}
		r.resp = out
	})
	return r.resp, r.err
}

func (r *fullResponse) GetRequest() *discovery.DiscoveryRequest { return r.req }
func (r *fullResponse) GetVersion() (string, error)             { return r.version, nil }
func (r *fullResponse) GetResponseVersion() string              { return r.version }
func (r *fullResponse) GetReturnedResources() map[string]string {
	return map[string]string{versionKey: r.version}
}
func (r *fullResponse) GetContext() context.Context { return context.Background() }
