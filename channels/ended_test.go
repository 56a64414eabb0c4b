package channels_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects/logic"
	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/qsm"
)

// qsmNode is a QSM coordinator and local service on loopback, with the
// uplink port fixed so that a restarted service is found where the
// first one was.
type qsmNode struct {
	cfg   qsm.Config
	coord *qsm.Coordinator
	svc   *qsm.Service
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startQSM(t *testing.T) *qsmNode {
	t.Helper()
	cfg := qsm.DefaultConfig()
	cfg.GMSAddress = "127.0.0.1:0"
	cfg.Port = freeUDPPort(t)
	cfg.UplinkPort = freeTCPPort(t)
	coord, err := qsm.NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coord.Close() })
	cfg.GMSAddress = coord.Addr()
	n := &qsmNode{cfg: cfg, coord: coord}
	n.startService(t)
	return n
}

func (n *qsmNode) startService(t *testing.T) {
	t.Helper()
	svc, err := qsm.NewService(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	n.svc = svc
}

// TestMembershipEnded: when a QSM client loses its local service, the
// live objects over it end their readers with ErrEnded (they may have
// missed events) and leave the table; once a service is back, the next
// Acquire dials afresh and joins, while the users of the ended object
// can still release it.
func TestMembershipEnded(t *testing.T) {
	n := startQSM(t)
	var dials atomic.Int32
	addr := n.svc.Addr()
	h := channels.NewHub(func(ctx context.Context, driver string, params map[string]string) (transport.Driver, error) {
		dials.Add(1)
		return qsm.Dial(ctx, params["address"])
	}, channels.Options{JoinTimeout: 5 * time.Second})
	t.Cleanup(func() { h.Close() })
	sp := channels.Spec{Object: "qsm/chat", Driver: "qsm", Params: map[string]string{"address": addr}, Channel: "chat",
		Logic: logic.Config{Kind: logic.Stream}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	l, err := h.Acquire(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	r := l.Object().NewReader()
	defer r.Close()
	if _, err := l.Publish(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if k, err := r.Read(ctx, buf); err != nil || string(buf[:k]) != "before\n" {
		t.Fatalf("read before the service stopped: %q %v", buf[:k], err)
	}

	n.svc.Close()
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	k, err := r.Read(rctx, buf)
	if !errors.Is(err, channels.ErrEnded) || !strings.Contains(err.Error(), "qsm/chat") || !strings.Contains(err.Error(), "open the object again") {
		t.Fatalf("read after the service stopped: %q %v, want ErrEnded naming the object", buf[:k], err)
	}
	if _, err := l.Publish(ctx, []byte("lost")); err == nil {
		t.Fatal("a publish through the ended membership succeeded")
	}
	if len(h.Joined()) != 0 {
		t.Fatalf("the ended object is still joined: %d", len(h.Joined()))
	}

	n.startService(t)
	if n.svc.Addr() != addr {
		t.Fatalf("the restarted service is at %s, not %s", n.svc.Addr(), addr)
	}
	l2, err := h.Acquire(ctx, sp)
	if err != nil {
		t.Fatalf("acquire after the service came back: %v", err)
	}
	defer l2.Release()
	if l2 == l {
		t.Fatal("the ended live object was handed out again")
	}
	if got := dials.Load(); got != 2 {
		t.Fatalf("dialed %d times, want 2 (once more after the link was lost)", got)
	}
	r2 := l2.Object().NewReader()
	defer r2.Close()
	if _, err := l2.Publish(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if k, err := r2.Read(ctx, buf); err != nil || string(buf[:k]) != "after\n" {
		t.Fatalf("read after the service came back: %q %v", buf[:k], err)
	}
	l.Release() // the ended object's last user: nothing left to leave
}
