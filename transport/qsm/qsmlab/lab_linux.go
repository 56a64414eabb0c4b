package qsmlab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNeedRoot is returned by New when the process cannot create
// namespaces.
var ErrNeedRoot = errors.New("qsmlab: network namespaces need root (and the ip and nft tools)")

// Options configure a LAN.
type Options struct {
	// Nodes is the number of namespaces.
	Nodes int
	// MTU of the veth links and the bridge; 0 keeps the default 1500.
	MTU int
	// Wire makes each node's link behave like a network card on a wire
	// instead of a memory copy: a run of datagrams handed to the kernel
	// as one buffer (UDP_SEGMENT) is cut into datagrams at the sender's
	// device (gso_max_segs 1), and the receiving device coalesces
	// consecutive datagrams for sockets that ask for it (GRO through
	// NAPI), as NIC drivers do. Without it a veth link carries a run
	// unsegmented from sending socket to receiving socket.
	Wire bool
	// Rate, when positive, caps what each node sends at that many bits
	// per second, as a network card of that speed does: a token bucket
	// (tbf) on the node's side of its link, whose queue is deep enough
	// that the sending sockets wait for room instead of losing datagrams.
	Rate int64
}

// LAN is a bridge and a set of namespaces.
type LAN struct {
	opts   Options
	id     string
	subnet int
	bridge string
	ns     []string

	mu     sync.Mutex // protects procs and closed
	procs  []*Proc
	closed bool
}

// Proc is a process running in a node's namespace.
type Proc struct {
	Node   int
	Cmd    *exec.Cmd
	stderr bytes.Buffer
	mu     sync.Mutex
	done   chan struct{}
}

// Stderr returns what the process wrote to stderr so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Write collects the process's stderr (the first MiB).
func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stderr.Len() < 1<<20 {
		p.stderr.Write(b)
	}
	return len(b), nil
}

var seq atomic.Int32

// Available reports why namespaces cannot be used here, or nil.
func Available() error {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		return ErrNeedRoot
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found", ErrNeedRoot, tool)
		}
	}
	return nil
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qsmlab: %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// New creates the bridge and the namespaces. On error, whatever was made
// is removed again.
func New(opts Options) (l *LAN, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	n := seq.Add(1)
	pid := os.Getpid()
	l = &LAN{
		opts:   opts,
		id:     fmt.Sprintf("%d%d", pid%10000, n),
		subnet: 20 + (pid+int(n)*7)%200,
	}
	made := l // the returns below set l to nil
	defer func() {
		if err != nil {
			made.Close()
		}
	}()
	l.bridge = "lqb" + l.id
	if err := run("ip", "link", "add", "name", l.bridge, "type", "bridge", "mcast_snooping", "0"); err != nil {
		return nil, err
	}
	if opts.MTU > 0 {
		if err := run("ip", "link", "set", l.bridge, "mtu", strconv.Itoa(opts.MTU)); err != nil {
			return nil, err
		}
	}
	if err := run("ip", "addr", "add", l.HostIP()+"/24", "dev", l.bridge); err != nil {
		return nil, err
	}
	if err := run("ip", "link", "set", l.bridge, "up"); err != nil {
		return nil, err
	}
	for i := 0; i < opts.Nodes; i++ {
		ns := fmt.Sprintf("lo-qsm-%d-%d-%d", pid, n, i)
		if err := run("ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		l.ns = append(l.ns, ns)
		host, peer := l.hostLink(i), fmt.Sprintf("lqn%s_%d", l.id, i)
		steps := [][]string{
			{"ip", "link", "add", host, "type", "veth", "peer", "name", peer},
			{"ip", "link", "set", peer, "netns", ns},
			{"ip", "link", "set", host, "master", l.bridge},
			{"ip", "link", "set", host, "up"},
			{"ip", "-n", ns, "link", "set", peer, "name", "eth0"},
			{"ip", "-n", ns, "addr", "add", l.NodeIP(i) + "/24", "dev", "eth0"},
			{"ip", "-n", ns, "link", "set", "eth0", "up"},
			{"ip", "-n", ns, "link", "set", "lo", "up"},
		}
		if opts.MTU > 0 {
			steps = append(steps, []string{"ip", "link", "set", host, "mtu", strconv.Itoa(opts.MTU)},
				[]string{"ip", "-n", ns, "link", "set", "eth0", "mtu", strconv.Itoa(opts.MTU)})
		}
		if opts.Wire {
			steps = append(steps, []string{"ip", "-n", ns, "link", "set", "eth0", "gso_max_segs", "1"})
		}
		if opts.Rate > 0 {
			// burst: a few full-size datagrams; limit: deeper than a
			// socket's send buffer, so the socket blocks before the
			// queue drops.
			steps = append(steps, []string{"tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf",
				"rate", strconv.FormatInt(opts.Rate, 10) + "bit", "burst", "256kb", "limit", "64mb"})
		}
		for _, s := range steps {
			if err := run(s...); err != nil {
				return nil, err
			}
		}
		if opts.Wire {
			// veth hands a packet to the NAPI (GRO) path only if the
			// sending device lacks TSO or the packet is local: the host
			// side forwards from the bridge, so it must lack TSO.
			if err := setFeature(host, unix.ETHTOOL_STSO, false); err != nil {
				return nil, err
			}
			if err := l.InNetns(i, func() error { return setFeature("eth0", unix.ETHTOOL_SGRO, true) }); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// setFeature switches an offload of a device in the calling thread's
// namespace with a legacy ethtool ioctl (cmd is ETHTOOL_SGRO, ETHTOOL_STSO,
// ...). Switching GRO on a veth device also switches on the NAPI receive
// path that GRO runs in.
func setFeature(dev string, cmd uint32, on bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("qsmlab: offload setting of %s: %w", dev, err)
	}
	defer unix.Close(fd)
	val := struct{ cmd, data uint32 }{cmd: cmd}
	if on {
		val.data = 1
	}
	var req struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(req.name[:], dev)
	req.data = unsafe.Pointer(&val)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req))); e != 0 {
		return fmt.Errorf("qsmlab: offload setting %#x of %s: %w", cmd, dev, e)
	}
	return nil
}

// Prefix returns the LAN's subnet, 198.19.X.0/24.
func (l *LAN) Prefix() string { return fmt.Sprintf("198.19.%d.0/24", l.subnet) }

// HostIP returns the bridge's address in the caller's namespace.
func (l *LAN) HostIP() string { return fmt.Sprintf("198.19.%d.254", l.subnet) }

// NodeIP returns node i's address.
func (l *LAN) NodeIP(i int) string { return fmt.Sprintf("198.19.%d.%d", l.subnet, i+1) }

// Namespace returns node i's namespace name.
func (l *LAN) Namespace(i int) string { return l.ns[i] }

// Nodes returns the number of nodes.
func (l *LAN) Nodes() int { return len(l.ns) }

// Start runs a command inside node i's namespace. The process is killed by
// Close.
func (l *LAN) Start(i int, name string, args ...string) (*Proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("qsmlab: LAN closed")
	}
	p := &Proc{Node: i, done: make(chan struct{})}
	p.Cmd = exec.Command("ip", append([]string{"netns", "exec", l.ns[i], name}, args...)...)
	p.Cmd.Stderr = p
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("qsmlab: start %s in %s: %w", name, l.ns[i], err)
	}
	go func() {
		p.Cmd.Wait()
		close(p.done)
	}()
	l.procs = append(l.procs, p)
	return p, nil
}

// Command returns a command that runs name inside node i's namespace;
// the caller starts it and waits for it (Close does not know of it).
func (l *LAN) Command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.ns[i], name}, args...)...)
}

// Signal sends sig to the process (SIGSTOP freezes a node).
func (p *Proc) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// PID returns the process id (of the command run by ip netns exec, which
// execs it in place).
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Kill kills the process and waits for it.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill()
	<-p.done
}

// Lossy makes the link to node i drop percent of the UDP datagrams the
// node would receive, at random (nftables numgen), replacing earlier loss
// rules. The datagrams are dropped where the bridge hands them to the
// node's link (the egress hook of the link's bridge side), one by one, as
// a wire loses packets: inside the node's namespace they could only be
// dropped after the receiving device coalesced them (GRO), a whole run at
// once. The rule sees only the datagrams for node i; a rule in the
// bridge's forward hook would be evaluated for every datagram to every
// node, and would put the bridge's netfilter path in every forward, a
// cost of the lab charged to the traffic it measures.
func (l *LAN) Lossy(i, percent int) error {
	l.Lossless(i)
	rules := fmt.Sprintf(`table netdev %s {
  chain egress {
    type filter hook egress device "%s" priority 0; policy accept;
    meta l4proto udp numgen random mod 100 < %d drop
  }
}
`, l.lossTable(i), l.hostLink(i), percent)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("qsmlab: nft loss rules for node %d: %v: %s", i, err, out)
	}
	return nil
}

// Lossless removes node i's loss rules.
func (l *LAN) Lossless(i int) error {
	return run("nft", "delete", "table", "netdev", l.lossTable(i))
}

// lossTable names node i's nftables table of loss rules.
func (l *LAN) lossTable(i int) string { return fmt.Sprintf("lqsm%s_%d", l.id, i) }

// hostLink names the bridge side of node i's veth pair.
func (l *LAN) hostLink(i int) string { return fmt.Sprintf("lqh%s_%d", l.id, i) }

// InNetns runs f on an OS thread switched into node i's namespace;
// sockets f opens belong to that namespace and keep working from any
// thread afterwards.
func (l *LAN) InNetns(i int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: if switching back fails it must
		// not be reused, and a locked thread ends with its goroutine.
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open("/var/run/netns/" + l.ns[i])
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("qsmlab: setns %s: %w", l.ns[i], err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Close kills the processes and removes the namespaces and the bridge. It
// is idempotent.
func (l *LAN) Close() error {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.closed = true
	l.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	for i, ns := range l.ns {
		exec.Command("nft", "delete", "table", "netdev", l.lossTable(i)).Run()
		exec.Command("ip", "link", "del", l.hostLink(i)).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	}
	l.ns = nil
	if l.bridge != "" {
		exec.Command("ip", "link", "del", l.bridge).Run()
		l.bridge = ""
	}
	return nil
}

// ProcCPU returns the CPU time (user+system) a process has used so far.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("qsmlab: odd /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("qsmlab: short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}
