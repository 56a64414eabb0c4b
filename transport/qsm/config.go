package qsm

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config holds the settings of every QSM role. The names of the settings
// in a root's services definition (a Configuration of name/value pairs) are
// given with each field; ParseConfig reads them. The defaults work out of
// the box with the coordinator, a service and its clients on one machine.
type Config struct {
	// QSM ("qsm") switches the protocol stack on; a definition with it
	// false describes no service.
	QSM bool
	// Application ("qsm_application") marks an in-process client instance.
	Application bool
	// Controller ("qsm_controller") marks the coordinator role.
	Controller bool
	// UplinkController ("uplink_controller") lets a local service accept
	// in-process clients.
	UplinkController bool
	// UplinkAddress ("uplink_address") is the host the local service
	// listens on for in-process clients, and that clients dial.
	UplinkAddress string
	// UplinkPort ("uplink_port") is the TCP port for in-process clients;
	// 0 picks a free port.
	UplinkPort int
	// UplinkSubnet ("uplink_subnet") selects the adapter for the uplink
	// when UplinkAddress is empty; "" means loopback.
	UplinkSubnet string
	// Subnet ("subnet") selects the adapter for multicast traffic: an
	// address prefix such as "198.18.0.0/24", an interface name, or "" for
	// loopback.
	Subnet string
	// Port ("port") is the UDP port that region multicast flows to.
	Port int
	// GMSAddress ("gms_address") is host:port of the coordinator's
	// membership service; the coordinator listens there.
	GMSAddress string
	// Multicast ("multicast") is the prefix that region multicast
	// addresses are taken from; it must lie in 239.0.0.0/8.
	Multicast netip.Prefix
	// MTU ("mtu") is the largest UDP payload a datagram carries; small
	// events are packed into datagrams up to this size.
	MTU int
	// MaxEvent ("max_event") is the largest event a client may publish;
	// larger events are split into fragments of MTU size.
	MaxEvent int
	// Window ("credits") is the flow-control window: the most messages a
	// sender keeps unstable (sent but not yet held by every member of a
	// region) per region before it holds further publishes back.
	Window int
	// ClientCredits ("client_credits") is the most publishes one
	// in-process client (all its memberships together) may have in flight
	// to its service.
	ClientCredits int
	// Rate ("rate") caps the messages a service multicasts per second,
	// 0 for no cap.
	Rate int
	// TokenRate ("token_rate") is how many token rounds per second each
	// region and partition ring starts (at most: a round starts when the
	// last one is back).
	TokenRate int
	// PartitionSize ("partition_size") is the number of nodes in one token
	// ring; larger regions become a ring of such rings.
	PartitionSize int
	// MaxGroups ("max_groups") is the most groups one node (service) may
	// belong to at once; the coordinator refuses a node that asks for
	// more, since every view lists the groups of every region.
	MaxGroups int
	// HeartbeatInterval ("heartbeat_interval", a Go duration or
	// milliseconds) is how often services report to the coordinator.
	HeartbeatInterval time.Duration
	// MissedHeartbeats ("missed_heartbeats") is how many intervals of
	// silence make the coordinator remove a node.
	MissedHeartbeats int
	// ViewDelay ("view_delay") is how long the coordinator gathers
	// changes before it issues the next view.
	ViewDelay time.Duration
	// DeliveryQueue ("delivery_queue") is the most bytes a service queues
	// for one client; above it, incoming data is refused and repaired later,
	// which slows the senders down.
	DeliveryQueue int
	// DropRate ("drop_rate") drops this fraction of received datagrams at
	// random, for fault injection; 0 in normal use.
	DropRate float64
	// Name ("name") names the node in views; "" uses host name and port.
	Name string
	// NoOffload ("no_offload") sends and reads data datagrams one by one.
	// By default a run of datagrams of one size to one address goes to
	// the kernel as one buffer that it cuts into datagrams (UDP_SEGMENT),
	// and datagrams that arrive together are read as one buffer (UDP_GRO),
	// where the kernel can; elsewhere they go one by one anyway.
	NoOffload bool
	// UplinkLocal ("uplink_local") lets the service also accept clients on
	// a local socket named after its uplink address (an abstract Unix
	// socket, so only processes in the same network namespace reach it).
	// A client that dials that address takes the local socket when it is
	// there and TCP otherwise. Frames skip the loopback TCP stack
	// (BenchmarkUplinkLink runs both links side by side). Linux only.
	UplinkLocal bool
	// Key ("key_file": a file holding it; white space around it is
	// ignored) is a secret shared by the coordinator and every service:
	// with it, every datagram carries an authentication tag and the
	// coordinator link starts with a handshake that proves both ends hold
	// it, so that a host without the key can neither join nor forge
	// traffic (see dgAuth). Nil: integrity checks only. At least
	// MinKeySize bytes.
	Key []byte
}

// DefaultConfig returns settings that work on one machine: coordinator on
// 127.0.0.1:60300, service uplink on 127.0.0.1:60100, multicast on the
// loopback adapter on port 60200. These are also the ports of the QSM
// definitions in a fresh root, so that standalone services and those a
// root declares find each other.
func DefaultConfig() Config {
	return Config{
		QSM:               true,
		UplinkController:  true,
		UplinkAddress:     "127.0.0.1",
		UplinkPort:        60100,
		Subnet:            "",
		Port:              60200,
		GMSAddress:        "127.0.0.1:60300",
		Multicast:         netip.MustParsePrefix("239.255.64.0/18"),
		MTU:               1472,
		MaxEvent:          1 << 20,
		Window:            8192,
		ClientCredits:     1024,
		Rate:              0,
		TokenRate:         100,
		PartitionSize:     5,
		MaxGroups:         65536,
		HeartbeatInterval: 500 * time.Millisecond,
		MissedHeartbeats:  4,
		ViewDelay:         5 * time.Millisecond,
		DeliveryQueue:     32 << 20,
		UplinkLocal:       true,
	}
}

// UplinkAddr returns host:port of the uplink (the address clients dial).
func (c Config) UplinkAddr() string {
	return net.JoinHostPort(c.UplinkAddress, strconv.Itoa(c.UplinkPort))
}

// FailureTimeout is how long a node may stay silent before the coordinator
// removes it: HeartbeatInterval x MissedHeartbeats.
func (c Config) FailureTimeout() time.Duration {
	return c.HeartbeatInterval * time.Duration(c.MissedHeartbeats)
}

// Validate checks the settings and returns an error naming the first bad
// one.
func (c Config) Validate() error {
	bad := func(name, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadConfig, name, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Port <= 0 || c.Port > 65535:
		return bad("port", "%d is not a UDP port (want 1-65535)", c.Port)
	case c.UplinkPort < 0 || c.UplinkPort > 65535:
		return bad("uplink_port", "%d is not a TCP port (want 0-65535)", c.UplinkPort)
	case !c.Multicast.IsValid() || !c.Multicast.Addr().Is4() || !netip.MustParsePrefix("239.0.0.0/8").Contains(c.Multicast.Addr()) || c.Multicast.Bits() < 8 || c.Multicast.Bits() > 30:
		return bad("multicast", "%v must be a prefix inside 239.0.0.0/8 between /8 and /30", c.Multicast)
	case c.MTU < 256 || c.MTU > 65000:
		return bad("mtu", "%d out of range (want 256-65000)", c.MTU)
	case c.MaxEvent < 1 || c.MaxEvent > 64<<20:
		return bad("max_event", "%d out of range (want 1 B-64 MiB)", c.MaxEvent)
	case c.Window < 16 || c.Window > 1<<20:
		return bad("credits", "%d out of range (want 16-1048576)", c.Window)
	case c.ClientCredits < 1 || c.ClientCredits > 1<<20:
		return bad("client_credits", "%d out of range (want 1-1048576)", c.ClientCredits)
	case c.Rate < 0:
		return bad("rate", "%d is negative", c.Rate)
	case c.TokenRate < 1 || c.TokenRate > 10000:
		return bad("token_rate", "%d out of range (want 1-10000)", c.TokenRate)
	case c.PartitionSize < 2 || c.PartitionSize > 64:
		return bad("partition_size", "%d out of range (want 2-64)", c.PartitionSize)
	case c.MaxGroups < 1 || c.MaxGroups > 1<<20:
		return bad("max_groups", "%d out of range (want 1-1048576)", c.MaxGroups)
	case c.HeartbeatInterval < time.Millisecond:
		return bad("heartbeat_interval", "%v is too short (want at least 1ms)", c.HeartbeatInterval)
	case c.MissedHeartbeats < 1:
		return bad("missed_heartbeats", "%d must be at least 1", c.MissedHeartbeats)
	case c.ViewDelay < 0:
		return bad("view_delay", "%v is negative", c.ViewDelay)
	case c.DeliveryQueue < 64<<10:
		return bad("delivery_queue", "%d is too small (want at least 65536)", c.DeliveryQueue)
	case c.DropRate < 0 || c.DropRate >= 1:
		return bad("drop_rate", "%v out of range (want 0 <= rate < 1)", c.DropRate)
	case len(c.Key) > 0 && len(c.Key) < MinKeySize:
		return bad("key_file", "key of %d bytes is too short (want at least %d; make one with: head -c 32 /dev/urandom | base64 > qsm.key)", len(c.Key), MinKeySize)
	case c.GMSAddress == "":
		return bad("gms_address", "empty (want host:port of the coordinator)")
	}
	if _, _, err := net.SplitHostPort(c.GMSAddress); err != nil {
		return bad("gms_address", "%q is not host:port", c.GMSAddress)
	}
	return nil
}

// configKeys lists every setting ParseConfig accepts, for error messages.
var configKeys = []string{
	"qsm", "qsm_application", "qsm_controller", "uplink_controller", "uplink_address",
	"uplink_port", "uplink_subnet", "subnet", "port", "gms_address", "multicast", "mtu",
	"max_event", "credits", "client_credits", "rate", "token_rate", "partition_size",
	"max_groups", "heartbeat_interval", "missed_heartbeats", "view_delay", "delivery_queue", "drop_rate", "name",
	"no_offload", "uplink_local", "key_file",
}

// SettingNames returns the names of every setting ParseConfig accepts.
func SettingNames() []string { return slices.Clone(configKeys) }

// ParseConfig builds a Config from name/value pairs, as found in a
// Configuration parameter of a root's services definition, starting from
// DefaultConfig. Names are matched without regard to case; "asm_application"
// is accepted for "qsm_application" as in the original definitions. An
// unknown name or a bad value is an error that names it.
func ParseConfig(params map[string]string) (Config, error) {
	c := DefaultConfig()
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := strings.TrimSpace(params[k])
		if err := c.set(strings.ToLower(strings.TrimSpace(k)), v); err != nil {
			return Config{}, err
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) set(k, v string) error {
	wrap := func(err error) error {
		return fmt.Errorf("%w: %s=%q: %v", ErrBadConfig, k, v, err)
	}
	boolv := func(p *bool) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return wrap(fmt.Errorf("want true or false"))
		}
		*p = b
		return nil
	}
	intv := func(p *int) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return wrap(fmt.Errorf("want a whole number"))
		}
		*p = n
		return nil
	}
	durv := func(p *time.Duration) error {
		if n, err := strconv.Atoi(v); err == nil {
			*p = time.Duration(n) * time.Millisecond
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return wrap(fmt.Errorf("want a duration such as 500ms or a number of milliseconds"))
		}
		*p = d
		return nil
	}
	switch k {
	case "qsm":
		return boolv(&c.QSM)
	case "qsm_application", "asm_application":
		return boolv(&c.Application)
	case "qsm_controller":
		return boolv(&c.Controller)
	case "uplink_controller":
		return boolv(&c.UplinkController)
	case "uplink_address":
		c.UplinkAddress = v
	case "uplink_port":
		return intv(&c.UplinkPort)
	case "uplink_subnet":
		c.UplinkSubnet = v
	case "subnet":
		c.Subnet = v
	case "port":
		return intv(&c.Port)
	case "gms_address":
		c.GMSAddress = v
	case "multicast":
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return wrap(fmt.Errorf("want a prefix such as 239.255.64.0/18"))
		}
		c.Multicast = p.Masked()
	case "mtu":
		return intv(&c.MTU)
	case "max_event":
		return intv(&c.MaxEvent)
	case "credits":
		return intv(&c.Window)
	case "client_credits":
		return intv(&c.ClientCredits)
	case "rate":
		return intv(&c.Rate)
	case "token_rate":
		return intv(&c.TokenRate)
	case "partition_size":
		return intv(&c.PartitionSize)
	case "max_groups":
		return intv(&c.MaxGroups)
	case "heartbeat_interval":
		return durv(&c.HeartbeatInterval)
	case "missed_heartbeats":
		return intv(&c.MissedHeartbeats)
	case "view_delay":
		return durv(&c.ViewDelay)
	case "delivery_queue":
		return intv(&c.DeliveryQueue)
	case "drop_rate":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return wrap(fmt.Errorf("want a fraction such as 0.05"))
		}
		c.DropRate = f
	case "name":
		c.Name = v
	case "no_offload":
		return boolv(&c.NoOffload)
	case "uplink_local":
		return boolv(&c.UplinkLocal)
	case "key_file":
		if v == "" {
			c.Key = nil
			return nil
		}
		b, err := os.ReadFile(v)
		if err != nil {
			return wrap(err)
		}
		c.Key = bytes.TrimSpace(b)
		if len(c.Key) == 0 {
			return wrap(fmt.Errorf("the file is empty (want a secret of at least %d bytes)", MinKeySize))
		}
	default:
		return fmt.Errorf("%w: unknown setting %q (known: %s)", ErrBadConfig, k, strings.Join(configKeys, ", "))
	}
	return nil
}

// multicastInterface finds the adapter and IPv4 address that Subnet
// selects: "" means loopback; otherwise an interface name, or a prefix
// that one of the interface addresses lies in.
func multicastInterface(subnet string) (*net.Interface, netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("qsm: list interfaces: %w", err)
	}
	var prefix netip.Prefix
	byName := ""
	switch {
	case subnet == "":
		prefix = netip.MustParsePrefix("127.0.0.0/8")
	default:
		p, err := netip.ParsePrefix(subnet)
		if err != nil {
			if a, err2 := netip.ParseAddr(subnet); err2 == nil {
				p = netip.PrefixFrom(a, 32)
			} else {
				byName = subnet
			}
		}
		prefix = p
	}
	for i := range ifs {
		ifc := &ifs[i]
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		if byName != "" && ifc.Name != byName {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.Is4() {
				continue
			}
			if byName != "" || prefix.Contains(ip) {
				return ifc, ip, nil
			}
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("%w: subnet %q: no up interface with an IPv4 address there (give an interface name or a prefix such as 198.18.0.0/24)", ErrBadConfig, subnet)
}
