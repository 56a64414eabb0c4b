package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/liveobjects/liveobjects/transport/qsm"
)

// qsmSettings collects "-set name=value" flags and the named shortcuts
// into the name/value pairs qsm.ParseConfig reads.
type qsmSettings map[string]string

func (s qsmSettings) String() string { return "" }

func (s qsmSettings) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want name=value, got %q", v)
	}
	s[strings.TrimSpace(k)] = val
	return nil
}

// completionWords offers the setting names, each with its "=".
func (s qsmSettings) completionWords() []string {
	var w []string
	for _, n := range qsm.SettingNames() {
		w = append(w, n+"=")
	}
	return w
}

// shortcut is a flag that sets one setting.
type shortcut struct {
	s    qsmSettings
	name string
}

func (f shortcut) String() string { return "" }
func (f shortcut) Set(v string) error {
	f.s[f.name] = v
	return nil
}

var qsmFlags = qsmSettings{}

// qsmProcs is the -procs flag of the standalone roles.
var qsmProcs procsFlag

// procsFlag is how many CPUs a QSM role's process runs Go code on at once
// (GOMAXPROCS). Unset, it is 1, or what the GOMAXPROCS environment
// variable says when that is set.
type procsFlag struct {
	n   int
	set bool
}

func (p *procsFlag) String() string { return "" }

func (p *procsFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("want a number of CPUs (0: Go's default): %q", v)
	}
	p.n, p.set = n, true
	return nil
}

// apply sets the process's GOMAXPROCS and returns it. QSM's original
// design runs a single-threaded engine in each role: with one P, handing a
// batch from a socket reader to the engine and from the engine to a
// client's writer switches goroutines on one thread instead of waking
// another, which on a loaded machine costs more than the work itself;
// system calls still run beside Go code (a goroutine in one gives up the
// P). Measured in the README (QSM, "Settings that matter") and in
// transport/qsm/qsmbench/MEASUREMENTS.md ("One thread for Go code").
func (p *procsFlag) apply() int {
	switch {
	case p.set && p.n == 0:
		runtime.SetDefaultGOMAXPROCS()
	case p.set:
		runtime.GOMAXPROCS(p.n)
	case os.Getenv("GOMAXPROCS") == "":
		runtime.GOMAXPROCS(1)
	}
	return runtime.GOMAXPROCS(0)
}

// qsmRoleFlags are the flags of the standalone roles.
func qsmRoleFlags(fs *flag.FlagSet) {
	qsmCommonFlags(fs)
	fs.Var(&qsmProcs, "procs", "CPUs the process runs Go code on at once (GOMAXPROCS): 0 = Go's default (every CPU it may use); default 1 (a single-threaded engine), or $GOMAXPROCS when set")
}

func qsmCommonFlags(fs *flag.FlagSet) {
	d := qsm.DefaultConfig()
	fs.Var(qsmFlags, "set", "set any QSM setting, name=value (repeatable); see 'liveobjects help qsm service'")
	fs.Var(shortcut{qsmFlags, "gms_address"}, "gms", "coordinator address host:port (gms_address; default "+d.GMSAddress+")")
	fs.Var(shortcut{qsmFlags, "port"}, "port", fmt.Sprintf("UDP port of region multicast (port; default %d)", d.Port))
	fs.Var(shortcut{qsmFlags, "subnet"}, "subnet", "adapter for multicast: prefix such as 198.18.0.0/24 or interface name (subnet; default loopback)")
	fs.Var(shortcut{qsmFlags, "name"}, "name", "node name in views (name; default host/address)")
	fs.Var(shortcut{qsmFlags, "key_file"}, "key-file", "file holding the key shared by the coordinator and every service: datagrams carry tags and the coordinator link proves both ends hold it (key_file; default none)")
}

const qsmSettingsHelp = `
Settings (-set name=value; the same names as in a services definition):
  qsm, qsm_application, qsm_controller, uplink_controller   roles (booleans)
  uplink_address, uplink_port, uplink_subnet    where in-process clients connect
  uplink_local       also serve clients on a local socket named after the uplink (default true)
  subnet, port                                  adapter and UDP port of multicast traffic
  gms_address                                   the coordinator's host:port
  multicast          prefix of region multicast addresses (default 239.255.64.0/18)
  mtu                largest datagram payload (default 1472)
  max_event          largest event in bytes (default 1048576)
  credits            flow-control window: unstable messages per sender and region (default 8192)
  client_credits     publishes in flight per in-process client (default 1024)
  rate               messages per second a service multicasts, 0 = no cap
  token_rate         token rounds per second (default 100)
  partition_size     nodes per token ring (default 5)
  heartbeat_interval, missed_heartbeats   failure detection (default 500ms x 4)
  view_delay         how long the coordinator gathers changes into one view (default 5ms)
  max_groups         groups one node may belong to; the coordinator refuses more (default 65536)
  delivery_queue     bytes queued per client before data is refused (default 32 MiB)
  drop_rate          fault injection: drop this fraction of received datagrams
  no_offload         send and read datagrams one by one (no UDP_SEGMENT / UDP_GRO)
  key_file           a file holding a secret (at least 16 bytes) shared by the
                     coordinator and every service: every datagram carries an
                     HMAC-SHA256 tag and the coordinator link starts with a
                     handshake proving both ends hold it; without it, a host on
                     the LAN can forge traffic. Make one with
                     head -c 32 /dev/urandom | base64 > qsm.key
Multicast TTL is always 1: all nodes must share one LAN.`

func init() {
	register(&command{
		Name:    "qsm service",
		Summary: "run a QSM local service (one per machine; in-process clients connect to it)",
		Help: `Runs the QSM protocol stack of this machine: it joins the coordinator's
membership service, multicasts into the regions of the channels its clients
use (TTL 1), repairs loss with the region's token ring, and serves the
in-process clients of this machine on the uplink (uplink_address:uplink_port).

Example, on each machine of a LAN:
  liveobjects qsm service -gms 198.18.0.1:60300 -subnet 198.18.0.0/24 \
      -set uplink_address=127.0.0.1
` + qsmSettingsHelp,
		Flags: qsmRoleFlags,
		Run: func(ctx context.Context, args []string) error {
			return runQSMRole(ctx, args, "qsm service", func(cfg qsm.Config) (qsmRole, error) { return qsm.NewService(cfg) })
		},
	})
	register(&command{
		Name:    "qsm coordinator",
		Summary: "run the QSM coordinator (channels and the global membership service)",
		Help: `Runs the QSM coordinator on gms_address: local services report the
channels they join and leave and send heartbeats; the coordinator issues
numbered membership views to all of them and removes a service silent for
heartbeat_interval x missed_heartbeats. One per network.

Example:
  liveobjects qsm coordinator -gms 198.18.0.1:60300
` + qsmSettingsHelp,
		Flags: qsmRoleFlags,
		Run: func(ctx context.Context, args []string) error {
			return runQSMRole(ctx, args, "qsm coordinator", func(cfg qsm.Config) (qsmRole, error) { return qsm.NewCoordinator(cfg) })
		},
	})
}

var qsmChannelsJSON bool

func init() {
	register(&command{
		Name:    "qsm channels",
		Summary: "list the QSM channels the coordinator knows, with the nodes in each",
		Help: `Asks the local QSM service (uplink_address:uplink_port; -service
host:port) for the channels its coordinator knows: the channels some node
has joined, one line each with the number of nodes (local services) that
have members in it. --json prints a JSON array instead.

Exit status 1 when the service or its coordinator cannot be reached (the
message says which).

Example:
  liveobjects qsm channels -service 127.0.0.1:60100
` + qsmSettingsHelp,
		Flags: qsmRequestFlags(&qsmChannelsJSON),
		Run: func(ctx context.Context, args []string) error {
			c, err := dialQSMService(ctx, args)
			if err != nil {
				return err
			}
			defer c.Close()
			list, err := c.Channels(ctx)
			if err != nil {
				return err
			}
			if qsmChannelsJSON {
				type entry struct {
					Name  string `json:"name"`
					Nodes int    `json:"nodes"`
				}
				out := make([]entry, 0, len(list))
				for _, ch := range list {
					out = append(out, entry{ch.Name, ch.Members})
				}
				return printJSON(out)
			}
			tw := newTable()
			fmt.Fprintln(tw, "NAME\tNODES")
			for _, ch := range list {
				fmt.Fprintf(tw, "%s\t%d\n", ch.Name, ch.Members)
			}
			return tw.Flush()
		},
	})
}

var qsmStatsJSON bool

func init() {
	register(&command{
		Name:    "qsm stats",
		Summary: "show a QSM local service's counters",
		Help: `Asks the local QSM service (uplink_address:uplink_port; -service
host:port) for its counters since it started, one "name value" line each:
datagrams and bytes in and out, datagrams rejected as foreign, forged,
corrupt or truncated, drops (injected, slow consumers, overload), events
published and delivered, repairs (forwarded, resent) and their times in
microseconds (repair_p50_us, repair_p99_us), messages held for stability
(unstable, kept), the time publishes waited for the sender's window
(window_full_us: flow control holding the sender back), the installed view
and region, the clients linked
to it now (clients; attached_clients are in the service's own process, as
a mount's are when the same process hosts the service), and its link to
the coordinator (coordinator: up, or down and why; joins wait while it is
down). --json prints a JSON object instead.

Exit status 1 when the service cannot be reached.

Example:
  liveobjects qsm stats -service 127.0.0.1:60100
` + qsmSettingsHelp,
		Flags: qsmRequestFlags(&qsmStatsJSON),
		Run: func(ctx context.Context, args []string) error {
			c, err := dialQSMService(ctx, args)
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.ServiceStats(ctx)
			if err != nil {
				return err
			}
			if qsmStatsJSON {
				return printJSON(st)
			}
			tw := newTable()
			v := reflect.ValueOf(st)
			for i := 0; i < v.NumField(); i++ {
				name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
				fmt.Fprintf(tw, "%s\t%v\n", name, v.Field(i).Interface())
			}
			return tw.Flush()
		},
	})
}

// qsmRequestFlags are the flags of a command that asks a local service
// something: where the service is, and --json.
func qsmRequestFlags(jsonOut *bool) func(fs *flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		qsmCommonFlags(fs)
		fs.Var(shortcut{qsmFlags, "uplink_address"}, "service", "the local service's uplink, host:port or host (uplink_address)")
		fs.BoolVar(jsonOut, "json", false, "print JSON")
	}
}

// dialQSMService connects to the local service the command's settings
// name, for a request; the command takes no arguments.
func dialQSMService(ctx context.Context, args []string) (*qsm.Client, error) {
	if len(args) != 0 {
		return nil, usagef("unexpected arguments %q", args)
	}
	cfg, err := qsm.ParseConfig(qsmFlags)
	if err != nil {
		return nil, usagef("%v", err)
	}
	c, err := qsm.Dial(ctx, qsmUplink(cfg))
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("%w (something listens at %s but does not answer as a QSM service: check -service)", err, qsmUplink(cfg))
		}
		return nil, err
	}
	return c, nil
}

// qsmUplink returns where the local service of cfg serves its clients:
// uplink_address:uplink_port, or uplink_address when it holds a port.
func qsmUplink(cfg qsm.Config) string {
	if _, _, err := net.SplitHostPort(cfg.UplinkAddress); err == nil {
		return cfg.UplinkAddress
	}
	return cfg.UplinkAddr()
}

// qsmRole is a QSM service or coordinator.
type qsmRole interface {
	Start(ctx context.Context) error
	Addr() string
	Close() error
}

// runQSMRole starts a QSM role from the command's settings and runs it
// until the command is interrupted.
func runQSMRole(ctx context.Context, args []string, what string, make func(qsm.Config) (qsmRole, error)) error {
	if len(args) != 0 {
		return usagef("unexpected arguments %q", args)
	}
	cfg, err := qsm.ParseConfig(qsmFlags)
	if err != nil {
		return usagef("%v", err)
	}
	procs := qsmProcs.apply()
	r, err := make(cfg)
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w (another process has that address: is a %s already running? give another with -gms, -port or -set uplink_port=N)", err, what)
		}
		return err
	}
	defer r.Close()
	slog.Info(what+" ready", "addr", r.Addr(), "gms", cfg.GMSAddress, "procs", procs)
	<-ctx.Done()
	return ctx.Err()
}
