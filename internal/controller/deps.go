package controller

import (
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
)

// deps maps Services and Secrets to the ingresses that reference them, so
// a change to one re-translates exactly those ingresses.
type deps struct {
	services map[string]sets.Set[string] // "ns/name" -> ingress keys
	secrets  map[string]sets.Set[string]
	// what each ingress referenced last, to undo it
	ingServices map[string][]types.NamespacedName
	ingSecrets  map[string][]types.NamespacedName
}

func newDeps() *deps {
	return &deps{
		services:    map[string]sets.Set[string]{},
		secrets:     map[string]sets.Set[string]{},
		ingServices: map[string][]types.NamespacedName{},
		ingSecrets:  map[string][]types.NamespacedName{},
	}
}

// set records what ingress key references now (nil, nil forgets it).
func (d *deps) set(key string, services, secrets []types.NamespacedName) {
	move(d.services, d.ingServices, key, services)
	move(d.secrets, d.ingSecrets, key, secrets)
}

func move(index map[string]sets.Set[string], last map[string][]types.NamespacedName, key string, now []types.NamespacedName) {
	for _, n := range last[key] {
		if s := index[n.String()]; s != nil {
			s.Delete(key)
			if s.Len() == 0 {
				delete(index, n.String())
			}
		}
	}
	if len(now) == 0 {
		delete(last, key)
		return
	}
	last[key] = now
	for _, n := range now {
		s := index[n.String()]
		if s == nil {
			s = sets.New[string]()
			index[n.String()] = s
		}
		s.Insert(key)
	}
}

func (d *deps) byService(key string) []string { return sets.List(d.services[key]) }
func (d *deps) bySecret(key string) []string  { return sets.List(d.secrets[key]) }
