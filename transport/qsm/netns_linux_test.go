package qsm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
	"github.com/liveobjects/liveobjects/transport/qsm/qsmlab"
)

// The tests in this file build a small LAN of network namespaces: one
// bridge in the root namespace holding 198.19.X.254/24, and one namespace
// per node with a veth on the bridge at 198.19.X.(i+1). Each node runs
// 'liveobjects qsm service' as a real process inside its namespace; the
// coordinator and the in-process clients run in the test process and reach
// the nodes through the bridge. Loss is injected with nftables where the
// bridge hands datagrams to a node's link (qsmlab.LAN.Lossy). Everything
// is removed in t.Cleanup.

// requireNetns skips when namespaces cannot be made here.
func requireNetns(t testing.TB) {
	t.Helper()
	if err := qsmlab.Available(); err != nil {
		t.Skipf("skipping: %v; run the tests as root to include the multi-host cases", err)
	}
}

// lan is a qsmlab LAN with a coordinator here and a service process in
// every namespace.
type lan struct {
	*qsmlab.LAN
	t     testing.TB
	cfg   Config
	coord *Coordinator
	procs []*qsmlab.Proc
}

func newLAN(t testing.TB, nodes int, cfg Config) *lan {
	requireNetns(t)
	bin := clibin.Path(t)
	ql, err := qsmlab.New(qsmlab.Options{Nodes: nodes, Wire: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ql.Close() })
	l := &lan{LAN: ql, t: t, cfg: cfg}
	ccfg := cfg
	ccfg.GMSAddress = net.JoinHostPort(l.HostIP(), "0")
	coord := startCoordinator(t, ccfg)
	l.coord = coord
	for i := 0; i < nodes; i++ {
		p, err := l.Start(i, bin, serviceArgs(l.LAN, i, coord.Addr(), cfg)...)
		if err != nil {
			t.Fatal(err)
		}
		l.procs = append(l.procs, p)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("node %d stderr:\n%s", i, p.Stderr())
			}
		})
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got := len(coord.View().Nodes); got != nodes {
			return fmt.Errorf("%d of %d services joined", got, nodes)
		}
		return nil
	})
	return l
}

// serviceArgs is the command line of node i's service.
func serviceArgs(l *qsmlab.LAN, i int, gms string, cfg Config) []string {
	return []string{"-q", "qsm", "service",
		"-gms", gms, "-subnet", l.Prefix(), "-port", "12345", "-name", fmt.Sprintf("node%d", i),
		"-set", "uplink_address=" + l.NodeIP(i), "-set", "uplink_port=7000",
		"-set", "multicast=" + cfg.Multicast.String(),
		"-set", fmt.Sprintf("heartbeat_interval=%dms", cfg.HeartbeatInterval.Milliseconds()),
		"-set", fmt.Sprintf("missed_heartbeats=%d", cfg.MissedHeartbeats),
		"-set", fmt.Sprintf("token_rate=%d", cfg.TokenRate),
		"-set", fmt.Sprintf("mtu=%d", cfg.MTU),
		"-set", fmt.Sprintf("credits=%d", cfg.Window),
	}
}

func (l *lan) uplink(i int) string { return net.JoinHostPort(l.NodeIP(i), "7000") }

func (l *lan) lossy(i, percent int) {
	l.t.Helper()
	if err := l.Lossy(i, percent); err != nil {
		l.t.Fatal(err)
	}
}

// joinAll joins group from an in-process client at every node, each with
// a recorder (keeping the events with keep), and waits until every node
// is in the group's view.
func (l *lan) joinAll(group string, keep bool) ([]*Member, []*recorder) {
	l.t.Helper()
	var members []*Member
	var recs []*recorder
	for i := 0; i < l.Nodes(); i++ {
		r := newRecorder(keep)
		m, err := l.dialNode(i).JoinMember(context.Background(), group, r)
		if err != nil {
			l.t.Fatal(err)
		}
		members = append(members, m)
		recs = append(recs, r)
	}
	waitView(l.t, l.coord, group, l.Nodes())
	waitMembers(l.t, members, l.Nodes())
	return members, recs
}

// dialNode connects an in-process client to node i's service.
func (l *lan) dialNode(i int) *Client {
	l.t.Helper()
	var c *Client
	checkFor(l.t, 10*time.Second, 20*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		c, err = Dial(ctx, l.uplink(i))
		return err
	})
	l.t.Cleanup(func() { c.Close() })
	return c
}

func netnsConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.MissedHeartbeats = 5
	cfg.TokenRate = 100
	cfg.Multicast = netipPrefix(fmt.Sprintf("239.%d.%d.0/24", 100+os.Getpid()%100, rand.IntN(250)))
	return cfg
}

func TestNetnsLossyFanout(t *testing.T) {
	cfg := netnsConfig(t)
	l := newLAN(t, 5, cfg)
	l.lossy(1, 10)
	l.lossy(2, 10)
	ctx := context.Background()
	all, recs := l.joinAll("fanout", true)
	pub, recs := all[0], recs[1:]
	const n = 20000
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := pub.PublishAsync(ctx, []byte(fmt.Sprintf("event %d", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		r.waitCount(t, n, 60*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i+1, p)
		}
		r.mu.Lock()
		for j, ev := range r.events {
			if want := fmt.Sprintf("event %d", j+1); string(ev.Data) != want || ev.Seq != uint64(j+1) {
				r.mu.Unlock()
				t.Fatalf("receiver %d: event %d is %q seq %d", i+1, j, ev.Data, ev.Seq)
			}
		}
		r.mu.Unlock()
	}
	t.Logf("%d events to 4 receivers (2 with 10%% loss) in %v", n, time.Since(start).Round(time.Millisecond))
	st, err := l.dialNode(1).ServiceStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Duplicates+st.Delivered == 0 {
		t.Fatalf("stats of a lossy node look empty: %+v", st)
	}
	t.Logf("lossy node: %d datagrams in, %d duplicates, repair latency samples %d", st.DatagramsIn, st.Duplicates, st.RepairLatencyN)
	// Every node frees its copies once every receiver holds everything.
	var statsOf []*Client
	for i := range 5 {
		statsOf = append(statsOf, l.dialNode(i))
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i, c := range statsOf {
			st, err := c.ServiceStats(ctx)
			if err != nil {
				return err
			}
			if st.Unstable != 0 || st.Kept != 0 {
				return fmt.Errorf("node %d holds %d unstable messages and keeps %d", i, st.Unstable, st.Kept)
			}
		}
		return nil
	})
}

func TestNetnsKilledReceiver(t *testing.T) {
	cfg := netnsConfig(t)
	cfg.Window = 1024
	l := newLAN(t, 4, cfg)
	ctx := context.Background()
	members, recs := l.joinAll("kill", false)
	const n = 30000
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := members[0].PublishAsync(ctx, []byte("payload")); err != nil {
				done <- err
				return
			}
			sent.Add(1)
		}
		done <- members[0].Flush(ctx)
	}()
	checkFor(t, 20*time.Second, time.Millisecond, func() error {
		if sent.Load() < 3000 {
			return fmt.Errorf("%d sent", sent.Load())
		}
		return nil
	})
	// Stop the process dead: its TCP link stays open, so only missing
	// heartbeats can reveal it.
	victim := l.procs[3]
	if err := victim.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	limit := cfg.FailureTimeout() + 2*cfg.HeartbeatInterval
	checkFor(t, limit+10*time.Second, 5*time.Millisecond, func() error {
		for _, nd := range l.coord.View().Nodes {
			if nd.Name == "node3" {
				return fmt.Errorf("node3 still in the view")
			}
		}
		return nil
	})
	took := time.Since(stopped)
	t.Logf("stopped node left the view after %v (interval x missed = %v)", took.Round(time.Millisecond), cfg.FailureTimeout())
	if took > limit {
		t.Fatalf("failure detected after %v, want within %v", took, limit)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		recs[i].waitCount(t, n, 30*time.Second)
		if p := recs[i].problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i, p)
		}
	}
	// The sender's buffer drains, and the receivers free their copies.
	statsOf := []*Client{l.dialNode(0), l.dialNode(1), l.dialNode(2)}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i := 0; i < 3; i++ {
			if v := members[i].View(); len(v.Members) != 3 {
				return fmt.Errorf("member %d sees %v", i, v.Members)
			}
		}
		st, err := statsOf[0].ServiceStats(ctx)
		if err != nil {
			return err
		}
		if st.Unstable != 0 {
			return fmt.Errorf("sender holds %d unstable messages", st.Unstable)
		}
		for i := 1; i < 3; i++ {
			st, err := statsOf[i].ServiceStats(ctx)
			if err != nil {
				return err
			}
			if st.Kept != 0 {
				return fmt.Errorf("receiver %d keeps %d messages", i, st.Kept)
			}
		}
		return nil
	})
}

// waitView waits until the coordinator's view has want nodes in group.
func waitView(t testing.TB, c *Coordinator, group string, want int) {
	t.Helper()
	g := GroupID(group)
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		got := 0
		for _, r := range c.View().regionsOfGroup(g) {
			got += len(r.Members)
		}
		if got != want {
			return fmt.Errorf("%d of %d nodes in %s", got, want, group)
		}
		return nil
	})
}

// TestNetnsKilledSender: the sending node's service is killed (SIGKILL)
// mid-stream while two receivers lose 20% of what they receive. Once it
// has left the view the survivors repair each other from what they hold:
// all three deliver the same events, in order.
func TestNetnsKilledSender(t *testing.T) {
	cfg := netnsConfig(t)
	l := newLAN(t, 4, cfg)
	ctx := context.Background()
	members, recs := l.joinAll("killsender", false)
	l.lossy(1, 20)
	l.lossy(2, 20)
	var sent atomic.Int64
	go func() {
		for i := 0; i < 200000; i++ {
			if members[0].PublishAsync(ctx, []byte("payload")) != nil {
				return // the service is gone
			}
			sent.Add(1)
		}
	}()
	checkFor(t, 20*time.Second, time.Millisecond, func() error {
		if sent.Load() < 5000 {
			return fmt.Errorf("%d sent", sent.Load())
		}
		return nil
	})
	l.procs[0].Kill()
	checkFor(t, cfg.FailureTimeout()+10*time.Second, 5*time.Millisecond, func() error {
		for _, nd := range l.coord.View().Nodes {
			if nd.Name == "node0" {
				return fmt.Errorf("node0 still in the view")
			}
		}
		return nil
	})
	// After the orphan time every survivor has settled the stream: the
	// counts agree and stay put.
	var counts [3]int
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		for i := range counts {
			counts[i] = recs[i+1].n()
		}
		if counts[0] != counts[1] || counts[1] != counts[2] || counts[0] == 0 {
			return fmt.Errorf("survivors delivered %v", counts)
		}
		time.Sleep(300 * time.Millisecond)
		for i := range counts {
			if n := recs[i+1].n(); n != counts[i] {
				return fmt.Errorf("survivor %d still delivering (%d -> %d)", i+1, counts[i], n)
			}
		}
		return nil
	})
	for i := 1; i < 4; i++ {
		if p := recs[i].problems(); len(p) > 0 {
			t.Fatalf("survivor %d: %v", i, p)
		}
	}
	t.Logf("sender killed after %d publishes; each survivor delivered %d", sent.Load(), counts[0])
}

// TestNetnsLeaderSenderKeepsRounds: a service that leads its ring (the
// lowest node id) and sends as fast as it can still starts its rounds
// about as often as when another node sends the same stream, because its
// engine serves ticks before queued publishes; so repair keeps pace with
// 5% loss at every receiver. How many rounds a second the ring completes
// depends on how busy the machine is (a round passes every node), so the
// leader's rate is compared with the rate the same ring reaches, in the
// same run, while a node that does not lead sends. The clients connect
// inside the nodes' namespaces, as on their machines.
func TestNetnsLeaderSenderKeepsRounds(t *testing.T) {
	cfg := netnsConfig(t)
	l := newLAN(t, 5, cfg)
	ctx := context.Background()
	var clients []*Client
	for i := 0; i < l.Nodes(); i++ {
		var c *Client
		err := l.InNetns(i, func() error {
			var err error
			c, err = Dial(ctx, l.uplink(i))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
	}
	lead := 0
	for i, c := range clients {
		if c.NodeID() < clients[lead].NodeID() {
			lead = i
		}
	}
	other := (lead + 1) % len(clients)
	var members []*Member
	for i, c := range clients {
		m, err := c.JoinMember(ctx, "leader", newRecorder(false))
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
		if i != lead && i != other {
			l.lossy(i, 5)
		}
	}
	waitView(t, l.coord, "leader", l.Nodes())
	// rounds has node i send n events and returns how many rounds a
	// second the leader started meanwhile.
	rounds := func(i, n int) float64 {
		before, err := clients[lead].ServiceStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, 1000)
		start := time.Now()
		for range n {
			if err := members[i].PublishAsync(ctx, payload); err != nil {
				t.Fatal(err)
			}
		}
		if err := members[i].Flush(ctx); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		after, err := clients[lead].ServiceStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		perSec := float64(after.Tokens-before.Tokens) / took.Seconds()
		t.Logf("node %d sent %d events in %v: the leader started %.0f rounds a second (token rate %d); %d sent again by the sender",
			i, n, took.Round(time.Millisecond), perSec, cfg.TokenRate, after.Resent-before.Resent)
		return perSec
	}
	rounds(other, 20000) // warm up: the first stream of a run is slower
	// Two of each, alternated, and the better of each kept: one stream
	// overlapping other work on the machine (the other packages' tests)
	// does not decide the comparison.
	var base, busy float64
	for range 2 {
		base = max(base, rounds(other, 50000))
		busy = max(busy, rounds(lead, 50000))
	}
	// Serving ticks after queued publishes gave the leading sender 35-37
	// rounds a second where the ring then managed 67-89.
	if busy < 0.7*base {
		t.Fatalf("the leading sender started %.0f rounds a second while publishing, the ring %.0f while another node sent; want about as many", busy, base)
	}
}
