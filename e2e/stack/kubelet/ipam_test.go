package kubelet

import (
	"net"
	"testing"
)

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIPAMSkipsReservedAddresses(t *testing.T) {
	a, err := newIPAM(mustCIDR(t, "10.9.8.0/24"), net.ParseIP("10.9.8.1"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for {
		ip, err := a.allocate()
		if err != nil {
			break
		}
		if seen[ip.String()] {
			t.Fatalf("%s handed out twice while live", ip)
		}
		seen[ip.String()] = true
	}
	if len(seen) != 253 { // .2 .. .254
		t.Fatalf("got %d addresses, want 253", len(seen))
	}
	for _, bad := range []string{"10.9.8.0", "10.9.8.1", "10.9.8.255"} {
		if seen[bad] {
			t.Errorf("%s must never be allocated", bad)
		}
	}
}

func TestIPAMGatewayElsewhere(t *testing.T) {
	a, err := newIPAM(mustCIDR(t, "10.9.0.0/16"), net.ParseIP("10.9.0.7"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		ip, err := a.allocate()
		if err != nil {
			t.Fatal(err)
		}
		last := ip.To4()[3]
		if ip.Equal(net.ParseIP("10.9.0.7")) || last == 0 || last == 1 || last == 255 {
			t.Fatalf("allocated reserved address %s", ip)
		}
		if !mustCIDR(t, "10.9.0.0/16").Contains(ip) {
			t.Fatalf("%s outside the subnet", ip)
		}
	}
}

func TestIPAMNoQuickReuse(t *testing.T) {
	a, err := newIPAM(mustCIDR(t, "10.9.8.0/24"), net.ParseIP("10.9.8.1"))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := a.allocate()
	a.release(first)
	second, _ := a.allocate()
	if second.Equal(first) {
		t.Fatalf("released %s was handed out again right away", first)
	}
	// Once the subnet wrapped around it is free again.
	for {
		ip, err := a.allocate()
		if err != nil {
			t.Fatal("subnet exhausted before reusing the released address")
		}
		if ip.Equal(first) {
			break
		}
	}
}

func TestIPAMExhaustedAndRelease(t *testing.T) {
	a, err := newIPAM(mustCIDR(t, "10.9.8.0/29"), net.ParseIP("10.9.8.1"))
	if err != nil {
		t.Fatal(err)
	}
	var got []net.IP
	for {
		ip, err := a.allocate()
		if err != nil {
			break
		}
		got = append(got, ip)
	}
	if len(got) != 5 { // .2 .. .6
		t.Fatalf("got %v, want .2-.6", got)
	}
	a.release(got[2])
	ip, err := a.allocate()
	if err != nil || !ip.Equal(got[2]) {
		t.Fatalf("after release got %v, %v; want %s", ip, err, got[2])
	}
}

func TestIPAMReserve(t *testing.T) {
	a, err := newIPAM(mustCIDR(t, "10.9.8.0/24"), net.ParseIP("10.9.8.1"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ip   string
		want bool
	}{
		{"10.9.8.50", true},
		{"10.9.8.50", false}, // already taken
		{"10.9.8.1", false},  // gateway
		{"10.9.8.255", false},
		{"10.9.8.0", false},
		{"10.9.9.5", false}, // outside
		{"10.9.7.5", false},
		{"fd00::5", false},
	}
	for _, c := range cases {
		if got := a.reserve(net.ParseIP(c.ip)); got != c.want {
			t.Errorf("reserve(%s) = %v, want %v", c.ip, got, c.want)
		}
	}
	for i := 0; i < 252; i++ {
		ip, err := a.allocate()
		if err != nil {
			t.Fatal(err)
		}
		if ip.Equal(net.ParseIP("10.9.8.50")) {
			t.Fatal("reserved address allocated again")
		}
	}
}

func TestIPAMRejectsBadConfig(t *testing.T) {
	if _, err := newIPAM(mustCIDR(t, "10.9.8.0/24"), net.ParseIP("10.9.9.1")); err == nil {
		t.Error("gateway outside the subnet accepted")
	}
	if _, err := newIPAM(mustCIDR(t, "fd00::/64"), net.ParseIP("fd00::1")); err == nil {
		t.Error("IPv6 subnet accepted")
	}
}
