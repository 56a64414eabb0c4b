package qsmlab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport/qsm/internal/udpgso"
	"golang.org/x/net/ipv4"
)

// rxPackets reads the packets node i's eth0 has received.
func rxPackets(t *testing.T, l *LAN, i int) int {
	t.Helper()
	out, err := exec.Command("ip", "-n", l.Namespace(i), "-s", "-o", "link", "show", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -s link: %v: %s", err, out)
	}
	// "... RX: bytes packets errors ...\    <bytes> <packets> ..."
	m := regexp.MustCompile(`RX:[^\\]*\\\s+(\d+)\s+(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no RX counters in %q", out)
	}
	n, _ := strconv.Atoi(string(m[2]))
	return n
}

// groupReceiver opens a socket in node i's namespace that reads group:port
// with UDP_GRO; the test closes it.
func groupReceiver(t *testing.T, l *LAN, i int, group net.IP, port int) *net.UDPConn {
	t.Helper()
	var rx *net.UDPConn
	if err := l.InNetns(i, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if rx, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port}); err != nil {
			return err
		}
		if !udpgso.SetGRO(rx) {
			return fmt.Errorf("UDP_GRO refused")
		}
		rx.SetReadBuffer(8 << 20)
		return ipv4.NewPacketConn(rx).JoinGroup(ifc, &net.UDPAddr{IP: group})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	return rx
}

// groupSender opens a socket in node i's namespace that multicasts with
// TTL 1; the test closes it.
func groupSender(t *testing.T, l *LAN, i int) *net.UDPConn {
	t.Helper()
	var tx *net.UDPConn
	if err := l.InNetns(i, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if tx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(l.NodeIP(i))}); err != nil {
			return err
		}
		p := ipv4.NewPacketConn(tx)
		if err := p.SetMulticastInterface(ifc); err != nil {
			return err
		}
		return p.SetMulticastTTL(1)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	return tx
}

// sendRun makes node 0 multicast one buffer of segs datagrams of seg
// bytes (UDP_SEGMENT) to group:port, and node 1 read them with UDP_GRO.
// It returns the reads node 1 made, the datagrams and bytes they held,
// and how many packets node 1's device received meanwhile.
func sendRun(t *testing.T, l *LAN, group net.IP, port, seg, segs int) (reads, datagrams, bytes, packets int) {
	t.Helper()
	rx, tx := groupReceiver(t, l, 1, group, port), groupSender(t, l, 0)
	before := rxPackets(t, l, 1)
	if _, _, err := tx.WriteMsgUDP(make([]byte, seg*segs), udpgso.AppendSegment(nil, seg), &net.UDPAddr{IP: group, Port: port}); err != nil {
		t.Fatalf("send a run of %d datagrams: %v", segs, err)
	}
	buf := make([]byte, 65536)
	oob := make([]byte, udpgso.OOBSize)
	for bytes < seg*segs {
		rx.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, oobn, _, _, err := rx.ReadMsgUDP(buf, oob)
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v", bytes, seg*segs, err)
		}
		size := n
		if g := udpgso.Segment(oob[:oobn]); g > 0 {
			size = g
		}
		reads++
		datagrams += (n + size - 1) / size
		bytes += n
	}
	return reads, datagrams, bytes, rxPackets(t, l, 1) - before
}

// TestWireCutsRuns: on a LAN with Wire, a run of datagrams sent as one
// buffer crosses the link as datagrams (the receiving device counts each
// one) and the receiving device coalesces them again for a UDP_GRO
// socket; without Wire the veth link carries the run as one packet.
func TestWireCutsRuns(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("needs root, ip and nft: %v", err)
	}
	if !udpgso.Available {
		t.Skip("no UDP segmentation offload on this platform")
	}
	const seg, segs = 1000, 20
	group := net.IPv4(239, 254, 66, 1)
	for _, wire := range []bool{true, false} {
		l, err := New(Options{Nodes: 2, Wire: wire})
		if err != nil {
			t.Fatal(err)
		}
		reads, datagrams, bytes, packets := sendRun(t, l, group, 12377, seg, segs)
		l.Close()
		t.Logf("wire=%t: %d reads, %d datagrams, %d bytes; the device received %d packets", wire, reads, datagrams, bytes, packets)
		if datagrams != segs || bytes != seg*segs {
			t.Fatalf("wire=%t: got %d datagrams, %d bytes; want %d, %d", wire, datagrams, bytes, segs, seg*segs)
		}
		if wire && packets < segs {
			t.Fatalf("wire: the receiving device counted %d packets for a run of %d datagrams: the run was not cut", packets, segs)
		}
		if wire && reads >= segs {
			t.Fatalf("wire: %d reads for %d datagrams: the receiving device did not coalesce them (GRO)", reads, segs)
		}
		if !wire && packets >= segs {
			t.Fatalf("veth: the receiving device counted %d packets for a run of %d datagrams; want it carried whole", packets, segs)
		}
	}
}

// TestLossPerDatagram: Lossy drops datagrams one by one, before the
// receiving device coalesces them: runs of datagrams arrive with holes,
// not whole or not at all; Lossless ends the loss; Close removes the
// rules.
func TestLossPerDatagram(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("needs root, ip and nft: %v", err)
	}
	if !udpgso.Available {
		t.Skip("no UDP segmentation offload on this platform")
	}
	l, err := New(Options{Nodes: 2, Wire: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	group := net.IPv4(239, 254, 66, 2)
	rx, tx := groupReceiver(t, l, 1, group, 12378), groupSender(t, l, 0)
	const runs, segs, seg = 100, 20, 1000
	// send sends runs of segs datagrams, each marked with its run, and
	// returns how many of each run arrived.
	send := func() []int {
		for k := 0; k < runs; k++ {
			b := make([]byte, segs*seg)
			for j := 0; j < segs; j++ {
				b[j*seg] = byte(k)
			}
			if _, _, err := tx.WriteMsgUDP(b, udpgso.AppendSegment(nil, seg), &net.UDPAddr{IP: group, Port: 12378}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Microsecond)
		}
		got := make([]int, runs)
		buf := make([]byte, 65536)
		oob := make([]byte, udpgso.OOBSize)
		for {
			rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, _, _, _, err := rx.ReadMsgUDP(buf, oob)
			if err != nil {
				return got
			}
			for off := 0; off+seg <= n; off += seg {
				got[buf[off]]++
			}
		}
	}
	if err := l.Lossy(1, 10); err != nil {
		t.Fatal(err)
	}
	got := send()
	total, partial := 0, 0
	for _, n := range got {
		total += n
		if n > 0 && n < segs {
			partial++
		}
	}
	lost := runs*segs - total
	t.Logf("10%% loss: %d of %d datagrams lost; %d of %d runs arrived with holes", lost, runs*segs, partial, runs)
	if lost < runs*segs/50 || lost > runs*segs/4 {
		t.Fatalf("lost %d of %d datagrams at 10%% loss", lost, runs*segs)
	}
	if partial < runs/4 {
		t.Fatalf("only %d of %d runs arrived with holes: the loss takes whole runs, not datagrams", partial, runs)
	}
	if err := l.Lossless(1); err != nil {
		t.Fatal(err)
	}
	got = send()
	for k, n := range got {
		if n != segs {
			t.Fatalf("without loss, run %d: %d of %d datagrams arrived", k, n, segs)
		}
	}
	if err := l.Lossy(1, 10); err != nil {
		t.Fatal(err)
	}
	table := l.lossTable(1)
	l.Close()
	if out, _ := exec.Command("nft", "list", "tables").CombinedOutput(); strings.Contains(string(out), table) {
		t.Fatalf("Close left the loss table %s behind:\n%s", table, out)
	}
}

// TestRateCapsSender: with Rate, a node that sends as fast as its socket
// lets it reaches the other nodes no faster than the rate, and loses
// nothing (the socket waits for room); without it the same data crosses
// the link many times faster.
func TestRateCapsSender(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("needs root, ip and nft: %v", err)
	}
	const rate = 40e6 // bits per second
	const seg, count = 1000, 2500
	group := net.IPv4(239, 254, 66, 3)
	// transfer sends count datagrams from node 0 to node 1 and returns
	// how long the last took to arrive.
	transfer := func(l *LAN) time.Duration {
		rx, tx := groupReceiver(t, l, 1, group, 12379), groupSender(t, l, 0)
		dst := &net.UDPAddr{IP: group, Port: 12379}
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			b := make([]byte, seg)
			for k := 0; k < count; k++ {
				if _, err := tx.WriteToUDP(b, dst); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		buf := make([]byte, 65536)
		oob := make([]byte, udpgso.OOBSize)
		got := 0
		for got < seg*count {
			rx.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, _, _, _, err := rx.ReadMsgUDP(buf, oob)
			if err != nil {
				t.Fatalf("after %d of %d datagrams: %v", got/seg, count, err)
			}
			got += n
		}
		took := time.Since(start)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return took
	}
	capped, err := New(Options{Nodes: 2, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	slow := transfer(capped)
	capped.Close()
	free, err := New(Options{Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	fast := transfer(free)
	free.Close()
	// The bucket lets a burst through at once; the rest waits. The floor
	// leaves a tenth for the bucket's rounding.
	const burst = 256 << 10    // bytes, as New sets it
	wire := (seg + 28) * count // bytes with IP and UDP headers
	floor := time.Duration(0.9 * float64((wire-burst)*8) / rate * float64(time.Second))
	t.Logf("%d datagrams of %d bytes: %v at %.0f Mbit/s (no sooner than %v), %v uncapped", count, seg, slow, rate/1e6, floor, fast)
	if slow < floor {
		t.Fatalf("capped at %.0f Mbit/s, %d bytes arrived in %v; the cap allows no less than %v", rate/1e6, seg*count, slow, floor)
	}
	if fast >= floor {
		t.Fatalf("uncapped, %d bytes took %v, no less than the capped floor %v: the floor does not tell the cap apart", seg*count, fast, floor)
	}
}

// TestNewCleansUpAfterFailure: when a step of New fails after namespaces
// and links exist (here tc refuses a rate of 1 bit/s), New returns the
// error and removes everything it made.
func TestNewCleansUpAfterFailure(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("needs root, ip and nft: %v", err)
	}
	n := seq.Load() + 1 // the number the next LAN takes
	prefix := fmt.Sprintf("lo-qsm-%d-%d-", os.Getpid(), n)
	l, err := New(Options{Nodes: 2, Rate: 1})
	if err == nil {
		l.Close()
		t.Fatal("tc accepted a rate of 1 bit/s: this test needs a step of New that fails")
	}
	t.Logf("New: %v", err)
	if !strings.Contains(err.Error(), "tbf") {
		t.Fatalf("New failed before the per-node steps: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), prefix) {
		t.Fatalf("a failed New left namespaces behind:\n%s", out)
	}
	bridge := fmt.Sprintf("lqb%d%d", os.Getpid()%10000, n)
	if out, err := exec.Command("ip", "link", "show", bridge).CombinedOutput(); err == nil {
		t.Fatalf("a failed New left its bridge behind:\n%s", out)
	}
}
