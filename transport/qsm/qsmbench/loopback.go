package qsmbench

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/liveobjects/liveobjects/transport/qsm"
	"github.com/liveobjects/liveobjects/transport/qsm/qsmlab"
)

// RunLoopback runs the measurements in this process on the loopback
// adapter: a coordinator and Receivers+1 services sharing one multicast
// port. It needs no privileges.
func RunLoopback(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	cfg := o.Config
	cfg.GMSAddress = "127.0.0.1:0"
	cfg.UplinkAddress = "127.0.0.1"
	cfg.UplinkPort = 0
	cfg.Subnet = ""
	coord, err := qsm.NewCoordinator(cfg)
	if err != nil {
		return nil, err
	}
	if err := coord.Start(ctx); err != nil {
		return nil, err
	}
	defer coord.Close()
	cfg.GMSAddress = coord.Addr()
	e := &env{mode: "loopback", coord: coord, cpu: qsmlab.SelfCPU}
	if o.Attach {
		e.mode = "loopback, clients attached"
	}
	for i := 0; i <= o.Receivers; i++ {
		s, err := qsm.NewService(cfg)
		if err != nil {
			return nil, err
		}
		if err := s.Start(ctx); err != nil {
			return nil, err
		}
		defer s.Close()
		select {
		case <-s.Ready():
		case <-time.After(10 * time.Second):
		}
		e.nodes = append(e.nodes, &loNode{s: s, attach: o.Attach})
	}
	return run(ctx, e, o)
}

type loNode struct {
	s      *qsm.Service
	attach bool // clients attach to s instead of dialing it
}

func (n *loNode) dial(ctx context.Context) (*qsm.Client, error) {
	if n.attach {
		return n.s.Attach(ctx)
	}
	return qsm.Dial(ctx, n.s.Addr())
}

func (n *loNode) setLoss(percent int) error {
	n.s.SetDropRate(float64(percent) / 100)
	return nil
}

func (n *loNode) rawSender() (*net.UDPConn, error) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	return conn, sendRaw(conn, lo)
}

func (n *loNode) rawReceiver(ctx context.Context, group netip.Addr, port int, gro bool) (rawRx, error) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, err
	}
	conn, err := OpenRawReceiver(group, port, lo, gro)
	if err != nil {
		return nil, err
	}
	r := &goRx{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.got, r.err = ReceiveRaw(ctx, conn, 500*time.Millisecond, time.Minute)
	}()
	return r, nil
}

// goRx is a raw receiver running as a goroutine of this process (its CPU
// time is the process's).
type goRx struct {
	conn *net.UDPConn
	done chan struct{}
	got  RawReceipt
	err  error
}

func (r *goRx) wait() (RawReceipt, error) {
	<-r.done
	return r.got, r.err
}

func (r *goRx) close() {
	r.conn.Close()
	<-r.done
}

func itoa(n int) string { return strconv.Itoa(n) }
