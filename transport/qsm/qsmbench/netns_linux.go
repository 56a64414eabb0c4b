package qsmbench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/liveobjects/liveobjects/transport/qsm"
	"github.com/liveobjects/liveobjects/transport/qsm/qsmlab"
)

// RunNetns runs the measurements on a LAN of network namespaces, with a
// service process (o.Binary) per node. It needs root.
func RunNetns(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	if o.Binary == "" {
		return nil, errors.New("qsmbench: no liveobjects binary to run the services")
	}
	lab, err := qsmlab.New(qsmlab.Options{Nodes: o.Receivers + 1, MTU: o.LinkMTU, Wire: o.Wire, Rate: o.LinkRate})
	if err != nil {
		return nil, err
	}
	defer lab.Close()
	cfg := o.Config
	if o.LinkMTU > 0 {
		cfg.MTU = o.LinkMTU - 28
	}
	cfg.GMSAddress = net.JoinHostPort(lab.HostIP(), "0")
	coord, err := qsm.NewCoordinator(cfg)
	if err != nil {
		return nil, err
	}
	if err := coord.Start(ctx); err != nil {
		return nil, err
	}
	defer coord.Close()
	if o.Attach {
		return runNetnsAttached(ctx, o, lab, coord, cfg)
	}
	var procs []*qsmlab.Proc
	for i := 0; i <= o.Receivers; i++ {
		args := []string{"-q", "qsm", "service", "-gms", coord.Addr(), "-subnet", lab.Prefix(), "-port", "12345",
			"-name", fmt.Sprintf("node%d", i), "-set", "uplink_address=127.0.0.1", "-set", "uplink_port=7000",
			"-set", "multicast=" + cfg.Multicast.String(), "-set", fmt.Sprintf("mtu=%d", cfg.MTU),
			"-set", fmt.Sprintf("credits=%d", cfg.Window), "-set", fmt.Sprintf("token_rate=%d", cfg.TokenRate),
			"-set", fmt.Sprintf("client_credits=%d", cfg.ClientCredits), "-set", fmt.Sprintf("rate=%d", cfg.Rate),
			"-set", fmt.Sprintf("no_offload=%t", cfg.NoOffload)}
		for _, k := range slices.Sorted(maps.Keys(o.Settings)) {
			args = append(args, "-set", k+"="+o.Settings[k])
		}
		p, err := lab.Start(i, o.Binary, args...)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(coord.View().Nodes) != o.Receivers+1 {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("qsmbench: services did not join the coordinator: %s", procs[0].Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e := &env{mode: "netns", coord: coord}
	for i := 0; i <= o.Receivers; i++ {
		e.nodes = append(e.nodes, &nsNode{lab: lab, i: i, bin: o.Binary})
	}
	e.cpu = func() time.Duration {
		t := qsmlab.SelfCPU()
		for _, p := range procs {
			c, _ := qsmlab.ProcCPU(p.PID())
			t += c
		}
		return t
	}
	return run(ctx, e, o)
}

// runNetnsAttached runs the measurements with the services in this
// process, each in its node's namespace, and clients attached to them.
// A service's sockets are opened in Start, inside the namespace; its
// link to the coordinator is dialed later from whichever thread runs it,
// which reaches the coordinator on the same bridge from the host side.
func runNetnsAttached(ctx context.Context, o Options, lab *qsmlab.LAN, coord *qsm.Coordinator, cfg qsm.Config) (*Result, error) {
	cfg.GMSAddress = coord.Addr()
	cfg.Subnet = lab.Prefix()
	cfg.Port = 12345
	cfg.UplinkController = false
	e := &env{mode: "netns, clients attached", coord: coord, cpu: qsmlab.SelfCPU}
	for i := 0; i <= o.Receivers; i++ {
		cfg.Name = fmt.Sprintf("node%d", i)
		s, err := qsm.NewService(cfg)
		if err != nil {
			return nil, err
		}
		if err := lab.InNetns(i, func() error { return s.Start(ctx) }); err != nil {
			return nil, err
		}
		defer s.Close()
		e.nodes = append(e.nodes, &nsNode{lab: lab, i: i, bin: o.Binary, svc: s})
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(coord.View().Nodes) != o.Receivers+1 {
		if time.Now().After(deadline) {
			return nil, errors.New("qsmbench: services did not join the coordinator")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return run(ctx, e, o)
}

// nsNode is a node of a qsmlab LAN.
type nsNode struct {
	lab *qsmlab.LAN
	i   int
	bin string       // the liveobjects binary
	svc *qsm.Service // the node's service when it runs in this process
}

func (n *nsNode) dial(ctx context.Context) (*qsm.Client, error) {
	if n.svc != nil {
		return n.svc.Attach(ctx)
	}
	var c *qsm.Client
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := n.lab.InNetns(n.i, func() error {
			var err error
			c, err = qsm.Dial(ctx, "127.0.0.1:7000")
			return err
		})
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *nsNode) rawSender() (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := n.lab.InNetns(n.i, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(n.lab.NodeIP(n.i))})
		if err != nil {
			return err
		}
		return sendRaw(conn, ifc)
	})
	return conn, err
}

// rawReceiver runs `liveobjects bench udp-receive` in the node's
// namespace, as the node's QSM service runs there: a process of its own.
func (n *nsNode) rawReceiver(ctx context.Context, group netip.Addr, port int, gro bool) (rawRx, error) {
	cmd := n.lab.Command(n.i, n.bin, "-q", "bench", "udp-receive", "-group", group.String(),
		"-port", strconv.Itoa(port), "-interface", "eth0", "-gro="+strconv.FormatBool(gro),
		"-idle", "500ms", "-timeout", "1m")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &procRx{cmd: cmd, stderr: &stderr, out: bufio.NewReader(out)}
	line, err := r.out.ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		r.close()
		return nil, fmt.Errorf("udp-receive did not get ready (%v): %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return r, nil
}

// procRx is a raw receiver process.
type procRx struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	out    *bufio.Reader
	waited bool
}

func (r *procRx) wait() (RawReceipt, error) {
	var got RawReceipt
	line, _ := r.out.ReadString('\n')
	jerr := json.Unmarshal([]byte(line), &got)
	err := r.cmd.Wait()
	r.waited = true
	switch {
	case err != nil:
		return got, fmt.Errorf("udp-receive failed (%w): %s", err, bytes.TrimSpace(r.stderr.Bytes()))
	case jerr != nil:
		return got, fmt.Errorf("udp-receive printed %q, not its count: %w", strings.TrimSpace(line), jerr)
	}
	return got, nil
}

func (r *procRx) close() {
	if !r.waited {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.waited = true
	}
}

func (n *nsNode) setLoss(percent int) error {
	if percent <= 0 {
		return n.lab.Lossless(n.i)
	}
	return n.lab.Lossy(n.i, percent)
}
