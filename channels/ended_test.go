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
	"github.com/liveobjects/liveobjects/transport/relay"
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

// TestRelayMembershipEnded: relay memberships that the relay ends are
// ended here too. A removed channel's readers reach end of file; a
// membership whose join the relay refuses after a restart (its token is
// no longer accepted) ends its readers with ErrEnded, saying why, instead
// of leaving them waiting for events that will not come.
func TestRelayMembershipEnded(t *testing.T) {
	s, err := relay.NewServer(relay.ServerConfig{Listen: "127.0.0.1:0", AllowCreate: true, Tokens: map[string]string{"locked": "tok"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	t.Cleanup(func() { s.Close() })
	h := channels.NewHub(func(ctx context.Context, driver string, params map[string]string) (transport.Driver, error) {
		return relay.Dial(ctx, relay.ClientConfig{Addr: params["address"], Tokens: map[string]string{"locked": "tok"}, MaxBackoff: 50 * time.Millisecond})
	}, channels.Options{JoinTimeout: 5 * time.Second})
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	buf := make([]byte, 100)

	// Removed.
	l, err := h.Acquire(ctx, spec(addr, "gone"))
	if err != nil {
		t.Fatal(err)
	}
	r := l.Object().NewReader()
	if err := s.RemoveChannel("gone"); err != nil {
		t.Fatal(err)
	}
	if k, err := r.Read(ctx, buf); !errors.Is(err, logic.ErrClosed) {
		t.Fatalf("read after the channel was removed: %q %v, want end of file", buf[:k], err)
	}
	r.Close()
	l.Release()

	// Refused after a restart: the relay comes back (in memory, a new
	// history) with another token for the channel.
	l, err = h.Acquire(ctx, spec(addr, "locked"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	r = l.Object().NewReader()
	defer r.Close()
	s.Close()
	var s2 *relay.Server
	deadline := time.Now().Add(5 * time.Second)
	for {
		s2, err = relay.NewServer(relay.ServerConfig{Listen: addr, AllowCreate: true, Tokens: map[string]string{"locked": "another"}})
		if err == nil {
			if err = s2.Start(ctx); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart the relay at %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { s2.Close() })
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	k, err := r.Read(rctx, buf)
	if !errors.Is(err, channels.ErrEnded) || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("read after the relay refused the join: %q %v, want ErrEnded saying it was refused", buf[:k], err)
	}
	if len(h.Joined()) != 0 {
		t.Fatalf("the ended object is still joined: %d", len(h.Joined()))
	}
}
