package kubelet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
)

// ipam hands out pod IPs from one IPv4 subnet. It goes round-robin so a
// freed address is not handed out again right away: endpoints and proxies
// may still point at it for a moment.
type ipam struct {
	mu      sync.Mutex
	base    uint32 // network address
	size    uint32 // number of addresses in the subnet
	gateway uint32
	next    uint32 // offset to try first
	used    map[uint32]bool
}

func newIPAM(subnet *net.IPNet, gateway net.IP) (*ipam, error) {
	ip4 := subnet.IP.To4()
	ones, bits := subnet.Mask.Size()
	if ip4 == nil || bits != 32 {
		return nil, fmt.Errorf("pod subnet %s: only IPv4 is supported", subnet)
	}
	if ones > 30 || ones < 8 {
		return nil, fmt.Errorf("pod subnet %s: prefix must be between /8 and /30", subnet)
	}
	gw := gateway.To4()
	if gw == nil || !subnet.Contains(gw) {
		return nil, fmt.Errorf("gateway %s is not an IPv4 address in %s", gateway, subnet)
	}
	return &ipam{
		base:    binary.BigEndian.Uint32(ip4.Mask(subnet.Mask)),
		size:    1 << (32 - ones),
		gateway: binary.BigEndian.Uint32(gw),
		next:    2,
		used:    map[uint32]bool{},
	}, nil
}

// usable rules out the network and broadcast addresses, the gateway, and any
// address ending in .0, .1 or .255, which tools tend to treat specially.
func (a *ipam) usable(ip uint32) bool {
	off := ip - a.base
	if off == 0 || off >= a.size-1 || ip == a.gateway {
		return false
	}
	last := ip & 0xff
	return last != 0 && last != 1 && last != 255
}

func (a *ipam) allocate() (net.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := uint32(0); i < a.size; i++ {
		off := (a.next + i) % a.size
		ip := a.base + off
		if a.usable(ip) && !a.used[ip] {
			a.used[ip] = true
			a.next = (off + 1) % a.size
			return toIP(ip), nil
		}
	}
	return nil, errors.New("pod subnet exhausted")
}

// reserve takes a specific address, e.g. the one a pod had before a restart
// of the kubelet, if it is usable and free.
func (a *ipam) reserve(ip net.IP) bool {
	ip4 := ip.To4()
	if ip4 == nil {
		return false
	}
	v := binary.BigEndian.Uint32(ip4)
	if v-a.base >= a.size {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.usable(v) || a.used[v] {
		return false
	}
	a.used[v] = true
	return true
}

func (a *ipam) release(ip net.IP) {
	ip4 := ip.To4()
	if ip4 == nil {
		return
	}
	a.mu.Lock()
	delete(a.used, binary.BigEndian.Uint32(ip4))
	a.mu.Unlock()
}

func toIP(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}
