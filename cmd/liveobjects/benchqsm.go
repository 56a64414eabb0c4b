package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/liveobjects/liveobjects/transport/qsm"
	"github.com/liveobjects/liveobjects/transport/qsm/qsmbench"
	"github.com/liveobjects/liveobjects/transport/qsm/qsmlab"
)

var benchQSM struct {
	receivers, size, count, loss, mtu, repeat int
	linkRate                                  int64
	groups, mode, cpuProfile, memProfile      string
	noOffload, wire, attach, ownData          bool
	settings                                  qsmSettings
}

func init() {
	register(&command{
		Name:    "bench qsm",
		Summary: "measure QSM against raw UDP multicast (goodput, loss, groups, CPU, repair time)",
		Help: `Measures, in one run and on the same network, raw UDP multicast from one
sender to the receivers and QSM doing the same reliably:
  - goodput of 1 sender -> N receivers (ratio to raw multicast with the
    same kernel offload as QSM's services: UDP_SEGMENT and UDP_GRO, or
    none with -no-offload; target >= 0.8)
  - the same with loss injected at every receiver (target >= 0.6 of raw)
  - 1 vs 1,000 vs 8,000 groups over the same nodes (target >= 0.95)
  - CPU time per delivered message, and repair time (p50, p99)

-mode netns (needs root) builds a bridge and one network namespace per node
(198.19.X.0/24, multicast TTL 1) and runs 'liveobjects qsm service' in each
(and, for the raw baseline, 'liveobjects bench udp-receive'), removing
everything afterwards. Its links act like network cards (-wire): a run of
datagrams handed to the kernel in one buffer is cut into datagrams at the
sending device and coalesced again (GRO) at the receiving one; -wire=false
leaves veth's shortcut, which carries a run from socket to socket in one
piece, at memory speed. -link-rate caps what each node sends at a network
card's speed (a token bucket on its link, tc tbf), so that the link rather
than the machine's cores bounds the goodput, as on a LAN of real machines;
raw multicast and QSM are capped alike. -mode loopback runs every node in this
process on the loopback adapter. -mode auto picks netns when root.

The measurements are made in rounds (-repeat), each measuring everything
once; a ratio is the median of the rounds' ratios, each taken within one
round, so that what else the machine does weighs on both sides alike.
Each round starts the group counts at another place of -groups, so that
no count is always measured first or last.

Prints a Markdown table on stdout; progress goes to stderr.`,
		FlagWords: map[string][]string{"mode": {"netns", "loopback", "auto"}},
		Flags: func(fs *flag.FlagSet) {
			fs.IntVar(&benchQSM.receivers, "receivers", 4, "number of receiving nodes")
			fs.IntVar(&benchQSM.size, "size", 1024, "event size in bytes")
			fs.IntVar(&benchQSM.count, "count", 50000, "events per measurement")
			fs.IntVar(&benchQSM.loss, "loss", 5, "percent loss injected at every receiver in the lossy measurement, below 100 (0 or negative: skip)")
			fs.StringVar(&benchQSM.groups, "groups", "1,1000,8000", "group counts to compare, the first being the reference")
			fs.StringVar(&benchQSM.mode, "mode", "auto", "netns, loopback or auto")
			fs.IntVar(&benchQSM.repeat, "repeat", 3, "rounds, each measuring everything once; rows show the median round, ratios the median of the rounds' ratios")
			benchQSM.settings = qsmSettings{}
			fs.Var(benchQSM.settings, "set", "a QSM setting for the services, name=value (repeatable; e.g. token_rate=400); see 'liveobjects help qsm service'")
			fs.BoolVar(&benchQSM.noOffload, "no-offload", false, "QSM services send and read datagrams one by one (no UDP_SEGMENT / UDP_GRO)")
			fs.BoolVar(&benchQSM.wire, "wire", true, "netns links act like network cards: runs of datagrams are cut at the sending device and coalesced (GRO) at the receiving one; false hands a run from socket to socket in one piece")
			fs.BoolVar(&benchQSM.attach, "attach", false, "QSM as a library: the clients attach to services in the benchmark's process (netns: each node's service runs here, in the node's namespace) instead of dialing service processes")
			fs.Int64Var(&benchQSM.linkRate, "link-rate", 0, "netns: cap what each node sends at this many megabits per second, as a network card of that speed would (0: no cap)")
			fs.IntVar(&benchQSM.mtu, "mtu", 1500, "link MTU of the netns LAN (QSM packs events up to it; 9000 for jumbo frames)")
			fs.BoolVar(&benchQSM.ownData, "own-data", false, "the receivers' handlers own their events' payloads (a copy each) instead of borrowing them (transport.Borrower) during the call")
			fs.StringVar(&benchQSM.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to the file ('go tool pprof'); with -attach or -mode loopback it covers the QSM services too")
			fs.StringVar(&benchQSM.memProfile, "memprofile", "", "write a profile of this process's allocations to the file at the end")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef("unexpected arguments %q", args)
			}
			var groups []int
			for _, f := range strings.Split(benchQSM.groups, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n < 1 || n > 100000 {
					return usagef("-groups: %q is not a group count (want numbers 1-100000 separated by commas)", f)
				}
				groups = append(groups, n)
			}
			if benchQSM.receivers < 1 || benchQSM.receivers > 32 {
				return usagef("-receivers: %d out of range (1-32)", benchQSM.receivers)
			}
			if benchQSM.size < 1 || benchQSM.size > 1<<20 {
				return usagef("-size: %d out of range (1 B - 1 MiB)", benchQSM.size)
			}
			if benchQSM.mtu < 576 || benchQSM.mtu > 65000 {
				return usagef("-mtu: %d out of range (576-65000)", benchQSM.mtu)
			}
			if benchQSM.count < 1 {
				return usagef("-count: %d must be positive", benchQSM.count)
			}
			if benchQSM.loss >= 100 {
				return usagef("-loss: %d%% would lose every datagram (want below 100; 0 or negative skips the lossy measurement)", benchQSM.loss)
			}
			if benchQSM.repeat < 1 {
				return usagef("-repeat: %d must be at least 1", benchQSM.repeat)
			}
			if benchQSM.linkRate < 0 || benchQSM.linkRate > 400000 {
				return usagef("-link-rate: %d out of range (0-400000 megabits per second; 0: no cap)", benchQSM.linkRate)
			}
			loss := benchQSM.loss
			if loss <= 0 {
				loss = -1 // the benchmark reads 0 as its default
			}
			for k := range benchQSM.settings {
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "gms_address", "subnet", "port", "uplink_address", "uplink_port", "uplink_subnet", "name":
					return usagef("-set %s: the benchmark wires its nodes itself", k)
				}
			}
			cfg, err := qsm.ParseConfig(benchQSM.settings)
			if err != nil {
				return usagef("-set: %v", err)
			}
			cfg.NoOffload = cfg.NoOffload || benchQSM.noOffload
			o := qsmbench.Options{
				Receivers: benchQSM.receivers, Size: benchQSM.size, Count: benchQSM.count,
				LossPercent: loss, Groups: groups, Config: cfg, LinkMTU: benchQSM.mtu, Wire: benchQSM.wire, LinkRate: benchQSM.linkRate * 1e6, Settings: benchQSM.settings, Repeat: benchQSM.repeat, Attach: benchQSM.attach, OwnData: benchQSM.ownData,
				Progress: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
			}
			mode := benchQSM.mode
			if mode == "auto" {
				mode = "loopback"
				if qsmlab.Available() == nil {
					mode = "netns"
				}
			}
			if benchQSM.linkRate > 0 && mode != "netns" {
				return usagef("-link-rate caps the links of -mode netns; -mode %s has none", mode)
			}
			stop, err := startProfiles(benchQSM.cpuProfile, benchQSM.memProfile)
			if err != nil {
				return err
			}
			defer stop()
			var res *qsmbench.Result
			switch mode {
			case "netns":
				if err := qsmlab.Available(); err != nil {
					return fmt.Errorf("bench qsm: -mode netns: %w", err)
				}
				exe, err2 := os.Executable()
				if err2 != nil {
					return fmt.Errorf("bench qsm: find own binary for the services: %w", err2)
				}
				o.Binary = exe
				res, err = qsmbench.RunNetns(ctx, o)
			case "loopback":
				res, err = qsmbench.RunLoopback(ctx, o)
			default:
				return usagef("-mode: %q (want netns, loopback or auto)", benchQSM.mode)
			}
			if err != nil {
				return err
			}
			fmt.Print(res.Table())
			return nil
		},
	})
}

var benchUDP struct {
	group, ifname string
	port          int
	gro           bool
	idle, timeout time.Duration
}

func init() {
	register(&command{
		Name:    "bench udp-receive",
		Summary: "receive raw UDP multicast and report what came (the raw baseline's receiver)",
		Help: `Joins a multicast group, prints "ready" once it receives, counts the
datagrams and bytes that arrive, and once nothing has come for -idle after
the first (or for -timeout when nothing comes) prints one JSON line:
  {"bytes":N,"datagrams":N,"last_unix_nano":T,"cpu_ns":C}
with the time of the last arrival and the CPU time the process used.
'bench qsm -mode netns' runs one in each receiving node's namespace for
its raw multicast baseline, as QSM's service runs there; alone it shows
what a host receives from a multicast sender.

Exit status 0 when the count was printed (also when nothing came).`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&benchUDP.group, "group", "239.254.77.77", "IPv4 multicast group to join")
			fs.IntVar(&benchUDP.port, "port", 12399, "UDP port")
			fs.StringVar(&benchUDP.ifname, "interface", "", "interface to join the group at (default: the kernel's choice)")
			fs.BoolVar(&benchUDP.gro, "gro", false, "let the kernel hand over runs of datagrams in one read (UDP_GRO)")
			fs.DurationVar(&benchUDP.idle, "idle", 500*time.Millisecond, "stop once nothing came for this long after the first datagram")
			fs.DurationVar(&benchUDP.timeout, "timeout", time.Minute, "stop when nothing came at all for this long")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef("unexpected arguments %q", args)
			}
			group, err := netip.ParseAddr(benchUDP.group)
			if err != nil || !group.Is4() || !group.IsMulticast() {
				return usagef("-group: %q is not an IPv4 multicast address (224.0.0.0/4)", benchUDP.group)
			}
			if benchUDP.port < 1 || benchUDP.port > 65535 {
				return usagef("-port: %d out of range (1-65535)", benchUDP.port)
			}
			if benchUDP.idle <= 0 || benchUDP.timeout <= 0 {
				return usagef("-idle and -timeout must be positive")
			}
			var ifc *net.Interface
			if benchUDP.ifname != "" {
				if ifc, err = net.InterfaceByName(benchUDP.ifname); err != nil {
					return fmt.Errorf("bench udp-receive: -interface: %w", err)
				}
			}
			conn, err := qsmbench.OpenRawReceiver(group, benchUDP.port, ifc, benchUDP.gro)
			if err != nil {
				return fmt.Errorf("bench udp-receive: %w", err)
			}
			defer conn.Close()
			fmt.Println("ready")
			got, err := qsmbench.ReceiveRaw(ctx, conn, benchUDP.idle, benchUDP.timeout)
			if err != nil {
				return fmt.Errorf("bench udp-receive: %w", err)
			}
			got.CPU = qsmlab.SelfCPU()
			out, _ := json.Marshal(got)
			fmt.Println(string(out))
			return nil
		},
	})
}

// startProfiles starts a CPU profile into cpu and returns a function that
// stops it and writes the allocation profile into mem ("" skips either).
// Both files are created at once, so that a path that cannot be written
// fails before the measurements rather than after them.
func startProfiles(cpu, mem string) (stop func(), err error) {
	var cf, mf *os.File
	if mem != "" {
		if mf, err = os.Create(mem); err != nil {
			return nil, fmt.Errorf("-memprofile: %w", err)
		}
	}
	if cpu != "" {
		if cf, err = os.Create(cpu); err == nil {
			if err = pprof.StartCPUProfile(cf); err != nil {
				cf.Close()
			}
		}
		if err != nil {
			if mf != nil {
				mf.Close()
			}
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
	}
	return func() {
		if cf != nil {
			pprof.StopCPUProfile()
			if err := cf.Close(); err != nil {
				slog.Error("writing the CPU profile", "file", cpu, "err", err)
			}
		}
		if mf == nil {
			return
		}
		err := pprof.Lookup("allocs").WriteTo(mf, 0)
		if cerr := mf.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			slog.Error("writing the allocation profile", "file", mem, "err", err)
		}
	}, nil
}
