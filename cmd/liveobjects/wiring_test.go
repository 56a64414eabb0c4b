package main

import (
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/transport/qsm"
)

// TestServesUplink: a mount attaches to a hosted service listening on
// every address only when the uplink it was told to dial is this
// machine's; a service on another host with the same port is dialed.
func TestServesUplink(t *testing.T) {
	ap := netip.MustParseAddrPort
	local := func(a netip.Addr) bool { return a == netip.MustParseAddr("198.18.0.1") || a.IsLoopback() }
	cases := []struct {
		listen, want string
		ok           bool
	}{
		{"127.0.0.1:12347", "127.0.0.1:12347", true},
		{"127.0.0.1:12347", "127.0.0.1:12348", false},
		{"0.0.0.0:12347", "127.0.0.1:12347", true},
		{"0.0.0.0:12347", "198.18.0.1:12347", true},
		{"0.0.0.0:12347", "198.18.0.2:12347", false}, // another machine
		{"198.18.0.1:12347", "127.0.0.1:12347", false},
	}
	for _, c := range cases {
		if got := servesUplink(ap(c.listen), ap(c.want), local); got != c.ok {
			t.Errorf("listening at %s, dialing %s: attach %v, want %v", c.listen, c.want, got, c.ok)
		}
	}
}

// TestIsLocalAddr checks the machine's own addresses against its
// interfaces, and an address no test network here uses.
func TestIsLocalAddr(t *testing.T) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ia := range addrs {
		p, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		if !isLocalAddr(p.Addr()) {
			t.Errorf("%v is an address of this machine, but not seen as local", p.Addr())
		}
	}
	for _, s := range []string{"127.0.0.1", "0.0.0.0", "::1"} {
		if !isLocalAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s not seen as local", s)
		}
	}
	if a := netip.MustParseAddr("198.19.255.254"); isLocalAddr(a) {
		t.Errorf("%v seen as local", a)
	}
}

// TestQSMDefaultsMatchRoot: a standalone 'qsm service' or 'qsm
// coordinator' with no flags, and the qsm commands' default service, are
// where a fresh root's QSM definitions look for them.
func TestQSMDefaultsMatchRoot(t *testing.T) {
	d := qsm.DefaultConfig()
	for _, c := range []struct{ name, qsm, root string }{
		{"uplink_address", d.UplinkAddress, registry.DefaultQSMUplink},
		{"uplink_port", strconv.Itoa(d.UplinkPort), registry.DefaultQSMUplinkPort},
		{"port", strconv.Itoa(d.Port), registry.DefaultQSMPort},
		{"gms_address", d.GMSAddress, registry.DefaultQSMGMS},
	} {
		if c.qsm != c.root {
			t.Errorf("%s: QSM's default is %s, a fresh root's %s", c.name, c.qsm, c.root)
		}
	}
}
