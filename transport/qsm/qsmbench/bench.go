package qsmbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/qsm"
	"github.com/liveobjects/liveobjects/transport/qsm/internal/udpgso"
	"golang.org/x/net/ipv4"
)

// Options configure a benchmark run.
type Options struct {
	// Receivers is the number of receiving nodes (default 4).
	Receivers int
	// Size is the event size in bytes (default 1024).
	Size int
	// Count is the number of events per measurement (default 50000).
	Count int
	// LossPercent is the loss injected at every receiver in the lossy
	// measurement (default 5; negative skips it).
	LossPercent int
	// Groups lists the group counts of the scaling measurement, the first
	// being the reference (default 1, 1000, 8000).
	Groups []int
	// Binary is the liveobjects binary that runs the services (RunNetns).
	Binary string
	// Repeat is the number of rounds, each measuring everything once;
	// a row shows the round with the median goodput, and a ratio is the
	// median of the rounds' ratios (default 3). Each round starts the
	// group counts at another place of Groups (see roundOrder).
	Repeat int
	// LinkMTU is the MTU of the LAN's links (RunNetns; default 1500). QSM
	// packs events into datagrams of up to LinkMTU-28 bytes; the raw
	// baseline sends one event per datagram.
	LinkMTU int
	// Wire makes the LAN's links cut runs of datagrams at the sending
	// device and coalesce them at the receiving one, as network cards do
	// (RunNetns; see qsmlab.Options.Wire). Without it a veth link hands a
	// run from socket to socket in one piece.
	Wire bool
	// LinkRate, when positive, caps what each node sends at that many
	// bits per second, as a network card of that speed would (RunNetns;
	// see qsmlab.Options.Rate).
	LinkRate int64
	// Attach runs QSM as a library: the clients attach to services in
	// this process (qsm.Service.Attach) instead of dialing them. RunNetns
	// then starts each node's service here, in the node's namespace,
	// rather than as a process of its own.
	Attach bool
	// OwnData makes the receivers' handlers own their events' payloads,
	// as handlers that keep them do: each gets a copy made for it. By
	// default they borrow them (transport.Borrower), as handlers that
	// only read a payload during the call can, and an attached client
	// lends them the service's own bytes.
	OwnData bool
	// Config is the base QSM configuration.
	Config qsm.Config
	// Settings are QSM settings (name=value, as qsm.ParseConfig reads
	// them) that RunNetns passes on to the service processes after the
	// ones it derives from Config; Config should already hold them.
	Settings map[string]string
	// Progress, when set, receives a line per step.
	Progress func(format string, a ...any)
}

func (o *Options) defaults() {
	if o.Receivers <= 0 {
		o.Receivers = 4
	}
	if o.Size <= 0 {
		o.Size = 1024
	}
	if o.Count <= 0 {
		o.Count = 50000
	}
	if o.LossPercent == 0 {
		o.LossPercent = 5
	}
	if len(o.Groups) == 0 {
		o.Groups = []int{1, 1000, 8000}
	}
	if o.Config.MTU == 0 {
		o.Config = qsm.DefaultConfig()
	}
	if o.Repeat <= 0 {
		o.Repeat = 3
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
}

// Row is one measurement.
type Row struct {
	// Name says what was measured.
	Name string
	// Goodput is application bytes per second delivered to each receiver
	// (the mean over receivers).
	Goodput float64
	// Ratio is the median over the rounds of the measurement's goodput
	// over that of the reference named in Of in the same round.
	Ratio float64
	// Pairs are those ratios, round by round.
	Pairs []float64
	// Of names the reference of Ratio.
	Of string
	// Target is the ratio the measurement is held to (0: none).
	Target float64
	// CPUPerMsg is the CPU time of every process involved divided by the
	// messages delivered (events x receivers).
	CPUPerMsg time.Duration
	// Lost is the number of events some receiver did not deliver.
	Lost int
	// RepairP50 and RepairP99 are repair times seen at the receivers.
	RepairP50, RepairP99 time.Duration
	// Elapsed is the wall time of the measurement.
	Elapsed time.Duration
	// WindowFull is the part of Elapsed in which the sender's publishes
	// waited for its window (flow control) to free (QSM rows).
	WindowFull time.Duration
	// Repair traffic during the measurement (QSM rows): messages the
	// receivers forwarded to each other, messages the sender sent again,
	// and messages the receivers got more than once, summed over the
	// nodes.
	Forwarded, Resent, Duplicates uint64
	// Refused is the number of datagrams the receivers' services dropped
	// on purpose during the measurement: their engine's queue was full,
	// or a client was not keeping up; SendFailed those the kernel
	// refused to send, at every node (QSM rows).
	Refused, SendFailed uint64
	// Joined is the time every node took to join the groups, until the
	// views had settled (QSM rows).
	Joined time.Duration
}

// repairTraffic says how many messages were forwarded, sent again and
// received twice, per 100 events delivered to each receiver.
func (r Row) repairTraffic(o Options) string {
	per := func(n uint64) float64 { return 100 * float64(n) / float64(o.Count*o.Receivers) }
	return fmt.Sprintf("%.2f forwarded by peers, %.2f sent again by the sender, %.2f received twice",
		per(r.Forwarded), per(r.Resent), per(r.Duplicates))
}

// Result is a set of measurements.
type Result struct {
	// Mode is "netns" or "loopback", followed by ", clients attached"
	// when the run used Options.Attach, by ", links capped at N Mbit/s"
	// when it used Options.LinkRate, and by ", handlers own payloads"
	// when it used Options.OwnData.
	Mode string
	// Rows are the measurements in order.
	Rows []Row
}

// Table formats the result as a Markdown table.
func (r *Result) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| measurement (%s) | goodput MB/s | ratio | target | CPU/msg | lost | repair p50 | repair p99 |\n", r.Mode)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.Rows {
		ratio, target, rep50, rep99 := "", "", "", ""
		if x.Of != "" {
			ratio = fmt.Sprintf("%.2f of %s", x.Ratio, x.Of)
			if len(x.Pairs) > 1 {
				ratio += fmt.Sprintf(" (%.2f-%.2f)", slices.Min(x.Pairs), slices.Max(x.Pairs))
			}
		}
		if x.Target > 0 {
			ok := "met"
			if x.Ratio < x.Target {
				ok = "NOT met"
			}
			target = fmt.Sprintf(">= %.2f (%s)", x.Target, ok)
		}
		if x.RepairP50 > 0 {
			rep50 = x.RepairP50.Round(10 * time.Microsecond).String()
			rep99 = x.RepairP99.Round(10 * time.Microsecond).String()
		}
		fmt.Fprintf(&b, "| %s | %.1f | %s | %s | %s | %d | %s | %s |\n", x.Name, x.Goodput/1e6, ratio, target,
			x.CPUPerMsg.Round(100*time.Nanosecond), x.Lost, rep50, rep99)
	}
	return b.String()
}

// node is what a measurement needs of one node.
type node interface {
	// dial connects an in-process client to the node's service.
	dial(ctx context.Context) (*qsm.Client, error)
	// rawReceiver starts a raw multicast receiver of group:port at the
	// node (reading runs of datagrams at once with gro), ready to
	// receive when it returns.
	rawReceiver(ctx context.Context, group netip.Addr, port int, gro bool) (rawRx, error)
	// rawSender opens a socket that multicasts from the node, TTL 1.
	rawSender() (*net.UDPConn, error)
	// setLoss injects percent loss at the node (0 removes it).
	setLoss(percent int) error
}

// rawRx is a running raw receiver.
type rawRx interface {
	// wait returns what it received once it has gone idle.
	wait() (RawReceipt, error)
	// close stops it (after wait: nothing to do).
	close()
}

// env is a set of nodes plus CPU accounting.
type env struct {
	mode  string
	nodes []node
	cpu   func() time.Duration
	coord *qsm.Coordinator
}

// groupCounter counts events per group member with its own FIFO state:
// the last sequence number of the first sender in two fields, of any
// other in a map made when one shows up (the benchmarks have one sender,
// and a map per member of thousands would be most of the heap). The
// driver calls a Handler's methods one at a time.
type groupCounter struct {
	total  *atomic.Int64
	bad    *atomic.Int64 // events out of order or of the wrong size
	size   int           // the size of every event
	sender string
	seq    uint64
	others map[string]uint64
}

// Deliver counts ev and checks its sequence number and size.
func (g *groupCounter) Deliver(ev transport.Event) {
	if len(ev.Data) != g.size {
		g.bad.Add(1)
	}
	switch {
	case g.seq == 0 || ev.Sender == g.sender:
		if g.seq != 0 && ev.Seq != g.seq+1 {
			g.bad.Add(1)
		}
		g.sender, g.seq = ev.Sender, ev.Seq
	default:
		if g.others == nil {
			g.others = map[string]uint64{}
		}
		if p, ok := g.others[ev.Sender]; ok && ev.Seq != p+1 {
			g.bad.Add(1)
		}
		g.others[ev.Sender] = ev.Seq
	}
	g.total.Add(1)
}

func (g *groupCounter) Checkpoint() ([]byte, error)      { return nil, nil }
func (g *groupCounter) Restore(_ []byte, _ uint64) error { return nil }

// borrowingCounter is a groupCounter that borrows its events' payloads:
// it reads them during Deliver only.
type borrowingCounter struct{ *groupCounter }

var _ transport.Borrower = borrowingCounter{}

// BorrowsData marks borrowingCounter as a transport.Borrower.
func (borrowingCounter) BorrowsData() {}

// run performs every measurement on e. The measurements are made in
// rounds, each round measuring everything once, and every ratio is the
// median of the ratios within a round: what the machine does besides
// (the cores are shared and noisy) then weighs on both sides of a ratio
// alike, instead of on whichever measurement it happened to overlap.
func run(ctx context.Context, e *env, o Options) (*Result, error) {
	res := &Result{Mode: e.mode}
	if o.LinkRate > 0 && e.mode != "loopback" {
		res.Mode += fmt.Sprintf(", links capped at %g Mbit/s", float64(o.LinkRate)/1e6)
	}
	if o.OwnData {
		res.Mode += ", handlers own payloads"
	}
	// QSM is compared with raw multicast that has the same help from the
	// kernel: with segmentation offload when QSM uses it, without when not.
	offload := udpgso.Available && !o.Config.NoOffload

	// Warm up (connections, buffers, the heap) so the first measurement
	// is not penalized.
	wo := o
	wo.Count = min(o.Count, 5000)
	if _, err := qsmRun(ctx, e, wo, 1, "warm-", 0); err != nil {
		return nil, fmt.Errorf("qsmbench: warm-up: %w", err)
	}
	var raw, off, lossy []Row
	groups := make([][]Row, len(o.Groups))
	for k := 1; k <= o.Repeat; k++ {
		o.Progress("round %d of %d", k, o.Repeat)
		r, err := rawRun(ctx, e, o, false)
		if err != nil {
			return nil, err
		}
		raw = append(raw, r)
		o.Progress("  raw UDP multicast: %.1f MB/s per receiver, %d lost", r.Goodput/1e6, r.Lost)
		if offload {
			r, err := rawRun(ctx, e, o, true)
			if err != nil {
				return nil, err
			}
			off = append(off, r)
			o.Progress("  raw UDP multicast with offload (UDP_SEGMENT, UDP_GRO): %.1f MB/s per receiver, %d lost", r.Goodput/1e6, r.Lost)
		}
		for _, gi := range roundOrder(len(o.Groups), k) {
			g := o.Groups[gi]
			r, err := qsmRun(ctx, e, o, g, fmt.Sprintf("b%d.%d-", gi, k), 0)
			if err != nil {
				return nil, fmt.Errorf("qsmbench: QSM, %d group(s): %w", g, err)
			}
			groups[gi] = append(groups[gi], r)
			o.Progress("  QSM, %d group(s): %.1f MB/s per receiver, %d lost, sender held back by its window %.0f%% of the time; joined in %v", g, r.Goodput/1e6, r.Lost, 100*r.WindowFull.Seconds()/r.Elapsed.Seconds(), r.Joined.Round(time.Millisecond))
			if r.Forwarded+r.Resent+r.Refused+r.SendFailed > 0 {
				o.Progress("    repair traffic, per 100 events per receiver: %s; datagrams refused by the receivers %d, not sent (kernel) %d", r.repairTraffic(o), r.Refused, r.SendFailed)
			}
		}
		if o.LossPercent > 0 {
			r, err := lossyRun(ctx, e, o, fmt.Sprintf("loss%d-", k), 0)
			if err != nil {
				return nil, err
			}
			lossy = append(lossy, r)
			o.Progress("  QSM, 1 group, %d%% loss: %.1f MB/s per receiver, repair p50 %v p99 %v, sender held back by its window %.0f%% of the time", o.LossPercent, r.Goodput/1e6, r.RepairP50, r.RepairP99, 100*r.WindowFull.Seconds()/r.Elapsed.Seconds())
			o.Progress("    repair traffic, per 100 events per receiver: %s", r.repairTraffic(o))
		}
	}
	ref, refName := raw, "raw"
	res.Rows = append(res.Rows, medianRow(raw))
	if offload {
		ref, refName = off, "raw with offload"
		res.Rows = append(res.Rows, medianRow(off))
	}
	for gi, g := range o.Groups {
		row := medianRow(groups[gi])
		row.Name = fmt.Sprintf("QSM, %d group(s)", g)
		if gi == 0 {
			row.Pairs, row.Ratio = pairRatios(groups[gi], ref)
			row.Of, row.Target = refName, 0.8
		} else {
			row.Pairs, row.Ratio = pairRatios(groups[gi], groups[0])
			row.Of, row.Target = "1 group", 0.95
		}
		res.Rows = append(res.Rows, row)
	}
	if o.LossPercent > 0 {
		row := medianRow(lossy)
		row.Name = fmt.Sprintf("QSM, 1 group, %d%% loss at every receiver", o.LossPercent)
		row.Pairs, row.Ratio = pairRatios(lossy, ref)
		row.Of, row.Target = refName+", lossless", 0.6
		res.Rows = append(res.Rows, row)
		// Repair time when the network is not saturated: a paced stream
		// with the same loss.
		pace := 2000
		po := o
		po.Count = min(o.Count, 4*pace)
		o.Progress("QSM, 1 group, %d%% loss, paced at %d events/s (repair time)", o.LossPercent, pace)
		row, err := lossyRun(ctx, e, po, "paced-", pace)
		if err != nil {
			return nil, err
		}
		row.Name = fmt.Sprintf("QSM, 1 group, %d%% loss, paced %d events/s", o.LossPercent, pace)
		res.Rows = append(res.Rows, row)
		o.Progress("  repair p50 %v p99 %v", row.RepairP50, row.RepairP99)
	}
	return res, nil
}

// roundOrder returns the order in which round k (from 1) measures n group
// counts: the list turned by k-1 places, so that over n rounds each group
// count is measured once in each place of a round. Whatever a place in
// the round brings (a heap or caches left by the measurement before, the
// machine's other work) then falls on every group count alike rather
// than on the same one each round.
func roundOrder(n, k int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = (i + k - 1) % n
	}
	return order
}

// lossyRun is qsmRun of one group with o.LossPercent loss injected at
// every receiver, removed again afterwards.
func lossyRun(ctx context.Context, e *env, o Options, prefix string, pace int) (Row, error) {
	defer func() {
		for i := 1; i <= o.Receivers; i++ {
			e.nodes[i].setLoss(0)
		}
	}()
	for i := 1; i <= o.Receivers; i++ {
		if err := e.nodes[i].setLoss(o.LossPercent); err != nil {
			return Row{}, err
		}
	}
	row, err := qsmRun(ctx, e, o, 1, prefix, pace)
	if err != nil {
		return Row{}, fmt.Errorf("qsmbench: QSM with %d%% loss: %w", o.LossPercent, err)
	}
	return row, nil
}

// medianRow returns the row with the median goodput.
func medianRow(rows []Row) Row {
	s := slices.Clone(rows)
	sort.Slice(s, func(i, j int) bool { return s[i].Goodput < s[j].Goodput })
	return s[len(s)/2]
}

// pairRatios returns the goodput ratio of each row to the reference of
// the same round, in round order, and their median.
func pairRatios(rows, ref []Row) ([]float64, float64) {
	var out []float64
	for k := range rows {
		if k < len(ref) && ref[k].Goodput > 0 {
			out = append(out, rows[k].Goodput/ref[k].Goodput)
		}
	}
	if len(out) == 0 {
		return nil, 0
	}
	s := slices.Clone(out)
	sort.Float64s(s)
	if len(s)%2 == 0 {
		return out, (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return out, s[len(s)/2]
}

// rawRun multicasts o.Count datagrams of o.Size bytes from node 0 as fast
// as it can and counts what each receiver gets. Each receiver runs at its
// node as QSM's service does (in netns mode a process of its own in the
// node's namespace). With offload the sender hands the kernel runs of
// datagrams in one buffer (UDP_SEGMENT) and the receivers read what
// arrives together in one (UDP_GRO), as QSM's services do; each datagram
// is still a datagram of its own on the wire.
func rawRun(ctx context.Context, e *env, o Options, offload bool) (Row, error) {
	group := netip.MustParseAddr("239.254.77.77")
	port := 12399
	var rxs []rawRx
	defer func() {
		for _, r := range rxs {
			r.close()
		}
	}()
	for i := 1; i <= o.Receivers; i++ {
		r, err := e.nodes[i].rawReceiver(ctx, group, port, offload)
		if err != nil {
			return Row{}, fmt.Errorf("qsmbench: raw receiver at node %d: %w", i, err)
		}
		rxs = append(rxs, r)
	}
	snd, err := e.nodes[0].rawSender()
	if err != nil {
		return Row{}, err
	}
	defer snd.Close()
	cpu0 := e.cpu()
	start := time.Now()
	run := 1
	var oob []byte
	if offload {
		run = max(1, min(udpgso.MaxSegments, udpgso.MaxBytes/o.Size))
		oob = udpgso.AppendSegment(nil, o.Size)
	}
	payload := make([]byte, run*o.Size)
	dst := netip.AddrPortFrom(group, uint16(port))
	for sent := 0; sent < o.Count; {
		n := min(run, o.Count-sent)
		var err error
		if offload {
			_, _, err = snd.WriteMsgUDPAddrPort(payload[:n*o.Size], oob, dst)
		} else {
			_, err = snd.WriteToUDPAddrPort(payload[:o.Size], dst)
		}
		if err != nil && offload && udpgso.Refused(err) {
			return Row{}, fmt.Errorf("qsmbench: raw baseline: the kernel refused segmentation offload: %w", err)
		}
		// Other errors (ENOBUFS: the sender outran its queue): those
		// datagrams are lost, and counted so at the receivers.
		sent += n
	}
	var row Row
	var sum float64
	var delivered int64
	var rxCPU time.Duration
	for i, r := range rxs {
		got, err := r.wait()
		if err != nil {
			return Row{}, fmt.Errorf("qsmbench: raw receiver at node %d: %w", i+1, err)
		}
		if got.Datagrams > 0 {
			sum += float64(got.Bytes) / time.Unix(0, got.Last).Sub(start).Seconds()
		}
		delivered += got.Datagrams
		rxCPU += got.CPU
		row.Lost = max(row.Lost, o.Count-int(got.Datagrams))
	}
	cpu := e.cpu() - cpu0 + rxCPU
	row.Name = "raw UDP multicast (no reliability)"
	if offload {
		row.Name = "raw UDP multicast with kernel offload (no reliability)"
	}
	row.Goodput = sum / float64(o.Receivers)
	row.Elapsed = time.Since(start)
	if delivered > 0 {
		row.CPUPerMsg = cpu / time.Duration(delivered)
	}
	return row, nil
}

// qsmRun publishes o.Count events round-robin over groups from node 0 and
// waits for every receiver to deliver all of them.
//
// pace, when positive, spreads the events at that many per second.
func qsmRun(ctx context.Context, e *env, o Options, groups int, prefix string, pace int) (Row, error) {
	var clients []*qsm.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := 0; i <= o.Receivers; i++ {
		c, err := e.nodes[i].dial(ctx)
		if err != nil {
			return Row{}, err
		}
		clients = append(clients, c)
	}
	joinStart := time.Now()
	totals := make([]*atomic.Int64, o.Receivers+1)
	var bad atomic.Int64
	members := make([][]*qsm.Member, o.Receivers+1)
	for i, c := range clients {
		totals[i] = &atomic.Int64{}
		ms, err := joinMany(ctx, c, prefix, groups, func() transport.Handler {
			g := &groupCounter{total: totals[i], bad: &bad, size: o.Size}
			if o.OwnData {
				return g
			}
			return borrowingCounter{g}
		})
		if err != nil {
			return Row{}, err
		}
		members[i] = ms
	}
	// Wait until every node has installed a view with all nodes in every
	// group (checked on the last group joined, and on the first).
	deadline := time.Now().Add(60 * time.Second)
	for _, ms := range members {
		for _, m := range []*qsm.Member{ms[0], ms[len(ms)-1]} {
			for len(m.View().Members) != o.Receivers+1 {
				if time.Now().After(deadline) {
					return Row{}, errors.New("views did not converge in 60s")
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	// And until the views have settled (the coordinator issued none for
	// a while), so that no view work overlaps the measurement.
	for last, since := e.coord.View().Number, time.Now(); time.Since(since) < 300*time.Millisecond; {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
		if n := e.coord.View().Number; n != last {
			last, since = n, time.Now()
		}
	}
	joined := time.Since(joinStart)
	// Warm up: a tenth of the events (and at least two per group), so
	// that what the first events of a group set up (streams, delivery
	// positions, tables) and the garbage of the joins are not measured:
	// the measurement is of a steady state, as the relay's is.
	payload := make([]byte, o.Size)
	pubs := members[0]
	warm := max(o.Count/10, 2*groups)
	for k := 0; k < warm; k++ {
		if err := pubs[k%len(pubs)].PublishAsync(ctx, payload); err != nil {
			return Row{}, err
		}
	}
	base := make([]int64, o.Receivers+1)
	for i := 1; i <= o.Receivers; i++ {
		for totals[i].Load() < int64(warm) {
			if time.Now().After(deadline) {
				return Row{}, fmt.Errorf("warm-up: receiver %d delivered %d of %d events", i, totals[i].Load(), warm)
			}
			time.Sleep(200 * time.Microsecond)
		}
		base[i] = totals[i].Load()
	}
	runtime.GC()
	var lat0 []qsm.Stats
	for i := 1; i <= o.Receivers; i++ {
		st, _ := clients[i].ServiceStatsReset(ctx)
		lat0 = append(lat0, st)
	}
	sender0, _ := clients[0].ServiceStats(ctx)
	cpu0 := e.cpu()
	start := time.Now()
	for k := 0; k < o.Count; k++ {
		if pace > 0 {
			if ahead := time.Duration(k)*time.Second/time.Duration(pace) - time.Since(start); ahead > time.Millisecond {
				time.Sleep(ahead)
			}
		}
		if err := pubs[k%len(pubs)].PublishAsync(ctx, payload); err != nil {
			return Row{}, err
		}
	}
	want := int64(o.Count)
	deadline = time.Now().Add(120 * time.Second)
	for i := 1; i <= o.Receivers; i++ {
		for totals[i].Load()-base[i] < want {
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	elapsed := time.Since(start)
	cpu := e.cpu() - cpu0
	row := Row{Elapsed: elapsed, Joined: joined}
	if st, err := clients[0].ServiceStats(ctx); err == nil {
		row.SendFailed = st.SendFailed - sender0.SendFailed
		row.WindowFull = time.Duration(st.WindowFullMicros-sender0.WindowFullMicros) * time.Microsecond
		row.Resent = st.Resent - sender0.Resent
		row.Forwarded = st.Forwarded - sender0.Forwarded
	}
	var delivered int64
	for i := 1; i <= o.Receivers; i++ {
		n := totals[i].Load() - base[i]
		delivered += n
		row.Lost = max(row.Lost, int(want-n))
	}
	if b := bad.Load(); b > 0 {
		return row, fmt.Errorf("%d events out of FIFO order or not of %d bytes", b, o.Size)
	}
	row.Goodput = float64(want*int64(o.Size)) / elapsed.Seconds()
	if row.Lost > 0 {
		row.Goodput = float64((delivered/int64(o.Receivers))*int64(o.Size)) / elapsed.Seconds()
	}
	if delivered > 0 {
		row.CPUPerMsg = cpu / time.Duration(delivered)
	}
	for i := 1; i <= o.Receivers; i++ {
		st, err := clients[i].ServiceStats(ctx)
		if err != nil {
			continue
		}
		row.Forwarded += st.Forwarded - lat0[i-1].Forwarded
		row.Duplicates += st.Duplicates - lat0[i-1].Duplicates
		row.Refused += st.Overload + st.SlowConsumer - lat0[i-1].Overload - lat0[i-1].SlowConsumer
		row.SendFailed += st.SendFailed - lat0[i-1].SendFailed
		if st.RepairLatencyN == lat0[i-1].RepairLatencyN {
			continue
		}
		row.RepairP50 = max(row.RepairP50, time.Duration(st.RepairP50)*time.Microsecond)
		row.RepairP99 = max(row.RepairP99, time.Duration(st.RepairP99)*time.Microsecond)
	}
	// Leave, and wait for the groups to be gone from the view.
	for _, c := range clients {
		c.Close()
	}
	clients = nil
	for time.Now().Before(deadline) && len(e.coord.View().Regions) > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	return row, nil
}

// joinMany joins n groups concurrently; h makes one handler per group.
func joinMany(ctx context.Context, c *qsm.Client, prefix string, n int, h func() transport.Handler) ([]*qsm.Member, error) {
	ms := make([]*qsm.Member, n)
	var firstErr error
	var mu sync.Mutex
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for g := 0; g < n; g++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(g int) {
			defer wg.Done()
			defer func() { <-sem }()
			m, err := c.JoinMember(ctx, fmt.Sprintf("%s%05d", prefix, g), h())
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			ms[g] = m
		}(g)
	}
	wg.Wait()
	return ms, firstErr
}

// sendRaw prepares conn for sending multicast at ifc with TTL 1.
func sendRaw(conn *net.UDPConn, ifc *net.Interface) error {
	p := ipv4.NewPacketConn(conn)
	if err := p.SetMulticastInterface(ifc); err != nil {
		return err
	}
	conn.SetWriteBuffer(4 << 20)
	return p.SetMulticastTTL(1)
}
