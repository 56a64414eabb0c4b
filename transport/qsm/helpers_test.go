package qsm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// checkFor polls f until it returns nil or wait passes.
func checkFor(t testing.TB, wait, step time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", wait, err)
		}
		time.Sleep(step)
	}
}

// freeUDPPort returns a UDP port that is free on all addresses now.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// testConfig returns a config for loopback tests with its own multicast
// port and prefix, so that concurrent test runs do not meet.
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.GMSAddress = "127.0.0.1:0"
	cfg.UplinkPort = 0
	cfg.Port = freeUDPPort(t)
	cfg.Multicast = netip.PrefixFrom(netip.AddrFrom4([4]byte{239, 255, byte(rand.IntN(256)), 0}), 24)
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.MissedHeartbeats = 5
	cfg.TokenRate = 100
	return cfg
}

// heldBackPair starts two services on loopback whose clients have 8
// publish credits and whose streams a window of 16: once the peer holds
// nothing (engine.deaf), a stream from svc soon fills its window and its
// publishes wait in svc. It returns their config too.
func heldBackPair(t *testing.T) (cfg Config, svc, peer *Service) {
	t.Helper()
	cfg = testConfig(t)
	cfg.ClientCredits = 8
	cfg.Window = 16
	cl := newCluster(t, cfg, 2)
	return cfg, cl.svcs[0], cl.svcs[1]
}

// cluster is a coordinator and services on loopback, all in process.
type cluster struct {
	t     testing.TB
	cfg   Config
	coord *Coordinator
	svcs  []*Service
}

func newCluster(t testing.TB, cfg Config, n int) *cluster {
	t.Helper()
	cl := &cluster{t: t, cfg: cfg}
	cl.coord = startCoordinator(t, cfg)
	cl.cfg.GMSAddress = cl.coord.Addr()
	for i := 0; i < n; i++ {
		cl.addService(cl.cfg)
	}
	return cl
}

// startCoordinator starts a coordinator at cfg.GMSAddress, closed when
// the test ends.
func startCoordinator(t testing.TB, cfg Config) *Coordinator {
	t.Helper()
	coord, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coord.Close() })
	return coord
}

// restartCoordinator closes the coordinator and starts another at the
// same address (the services reconnect to it on their own).
func (cl *cluster) restartCoordinator() {
	cl.t.Helper()
	addr := cl.coord.Addr()
	cl.coord.Close()
	cfg := cl.cfg
	cfg.GMSAddress = addr
	checkFor(cl.t, 5*time.Second, 20*time.Millisecond, func() error {
		c, err := NewCoordinator(cfg)
		if err != nil {
			return err
		}
		if err := c.Start(context.Background()); err != nil {
			return err
		}
		cl.coord = c
		return nil
	})
	c := cl.coord
	cl.t.Cleanup(func() { c.Close() })
}

func (cl *cluster) addService(cfg Config) *Service {
	cl.t.Helper()
	cfg.GMSAddress = cl.coord.Addr()
	cfg.Name = fmt.Sprintf("node%d", len(cl.svcs))
	s := startService(cl.t, cfg)
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		cl.t.Fatal("service did not get a view")
	}
	cl.svcs = append(cl.svcs, s)
	return s
}

// startService starts a service with cfg, closed when the test ends; it
// does not wait for a view.
func startService(t testing.TB, cfg Config) *Service {
	t.Helper()
	s, err := NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// encodeDatagram builds a datagram sealed with a checksum only.
func encodeDatagram(h dgHeader, body []byte) []byte { return sealedDatagram(h, body, nil) }

func dial(t testing.TB, addr string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recorder is a Handler that records events and checks FIFO per sender.
type recorder struct {
	mu     sync.Mutex
	events []transport.Event
	last   map[string]uint64
	bad    []string
	count  int
	keep   bool
	notify chan struct{}
}

func newRecorder(keep bool) *recorder {
	return &recorder{last: map[string]uint64{}, keep: keep, notify: make(chan struct{}, 1)}
}

func (r *recorder) Deliver(ev transport.Event) {
	r.mu.Lock()
	if prev, ok := r.last[ev.Sender]; ok && ev.Seq != prev+1 && len(r.bad) < 10 {
		r.bad = append(r.bad, fmt.Sprintf("sender %s: seq %d after %d", ev.Sender, ev.Seq, prev))
	}
	r.last[ev.Sender] = ev.Seq
	r.count++
	if r.keep {
		r.events = append(r.events, ev)
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) Checkpoint() ([]byte, error)         { return nil, nil }
func (r *recorder) Restore(cp []byte, seq uint64) error { return nil }

func (r *recorder) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

func (r *recorder) problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

func (r *recorder) waitCount(t testing.TB, n int, wait time.Duration) {
	t.Helper()
	checkFor(t, wait, 5*time.Millisecond, func() error {
		if got := r.n(); got < n {
			return fmt.Errorf("delivered %d of %d", got, n)
		}
		return nil
	})
}

// joinMany joins n groups named prefix0000.. concurrently (joins that
// arrive together share one view) and returns the members in order.
func joinMany(ctx context.Context, c *Client, prefix string, n int, h transport.Handler) ([]*Member, error) {
	ms := make([]*Member, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for g := 0; g < n; g++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(g int) {
			defer wg.Done()
			defer func() { <-sem }()
			m, err := c.JoinMember(ctx, fmt.Sprintf("%s%04d", prefix, g), h)
			if err != nil {
				errs <- err
				return
			}
			ms[g] = m
		}(g)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return ms, nil
}

func netipPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// waitMembers waits until every member's view of its channel has want
// nodes: their services have installed the view.
func waitMembers(t testing.TB, ms []*Member, want int) {
	t.Helper()
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for i, m := range ms {
			if got := len(m.View().Members); got != want {
				return fmt.Errorf("member %d sees %d nodes, want %d", i, got, want)
			}
		}
		return nil
	})
}

// publishEvents publishes n events "event 0", "event 1", ... from pub
// without waiting for their acknowledgements.
func publishEvents(t *testing.T, pub *Member, n int) {
	t.Helper()
	for i := range n {
		if err := pub.PublishAsync(context.Background(), []byte(fmt.Sprint("event ", i))); err != nil {
			t.Fatal(err)
		}
	}
}

// patterned returns event i of a test stream: size bytes that differ from
// one event to the next, starting with i in eight digits.
func patterned(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i*7 + j)
	}
	copy(b, fmt.Sprintf("%08d", i))
	return b
}
