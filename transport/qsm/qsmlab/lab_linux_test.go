package qsmlab

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
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

// sendRun makes node 0 multicast one buffer of segs datagrams of seg
// bytes (UDP_SEGMENT) to group:port, and node 1 read them with UDP_GRO.
// It returns the reads node 1 made, the datagrams and bytes they held,
// and how many packets node 1's device received meanwhile.
func sendRun(t *testing.T, l *LAN, group net.IP, port, seg, segs int) (reads, datagrams, bytes, packets int) {
	t.Helper()
	var rx *net.UDPConn
	if err := l.InNetns(1, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		if err != nil {
			return err
		}
		if !udpgso.SetGRO(rx) {
			return fmt.Errorf("UDP_GRO refused")
		}
		return ipv4.NewPacketConn(rx).JoinGroup(ifc, &net.UDPAddr{IP: group})
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	var tx *net.UDPConn
	if err := l.InNetns(0, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		tx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(l.NodeIP(0))})
		if err != nil {
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
	defer tx.Close()
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
