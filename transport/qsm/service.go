package qsm

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/liveobjects/liveobjects/transport/internal/payload"
	"github.com/liveobjects/liveobjects/transport/qsm/internal/udpgso"
)

// Frame types on the client-to-service link. ONLY APPEND TO THIS LIST:
// the values are part of the protocol.
const (
	cliHello    uint8 = 1  // client -> service: magic, versions, process name
	cliWelcome  uint8 = 2  // service -> client: version, node id, node name, max event, credits
	cliJoin     uint8 = 3  // client -> service: request id, member id, channel
	cliJoined   uint8 = 4  // service -> client: request id, member id
	cliLeave    uint8 = 5  // client -> service: member id
	cliPublish  uint8 = 6  // client -> service: member id, data
	cliPubAck   uint8 = 7  // service -> client: member id, event seq
	cliDeliver  uint8 = 8  // service -> client: member id, node, source, seq, data
	cliView     uint8 = 9  // service -> client: member id, view number, node names
	cliError    uint8 = 10 // service -> client: request id, member id, code, message
	cliStatsReq uint8 = 11 // client -> service: request id
	cliStats    uint8 = 12 // service -> client: request id, JSON counters
	cliListReq  uint8 = 13 // client -> service (version 3): request id
	cliList     uint8 = 14 // service -> client (version 3): request id, code, message, channels (see appendChannels)
)

// statsReset in a stats request clears the repair-time window after the
// counters are read.
const statsReset = 1

// cliMagic opens a hello on the client link.
const cliMagic = "QSMC"

// Stats are a service's counters, since it started. They travel to
// clients as JSON (Client.ServiceStats).
type Stats struct {
	// Datagrams and bytes received and sent on the UDP sockets.
	DatagramsIn  uint64 `json:"datagrams_in"`
	DatagramsOut uint64 `json:"datagrams_out"`
	BytesIn      uint64 `json:"bytes_in"`
	BytesOut     uint64 `json:"bytes_out"`
	// SendFailed counts the datagrams the kernel refused to send (a full
	// device queue, an unreachable address): lost at the source, they
	// come again by repair.
	SendFailed uint64 `json:"send_failed"`
	// Datagrams rejected by the decoder: foreign (bad magic), another
	// protocol version, corrupt (checksum), failing authentication with
	// the shared key (no tag, a wrong one, or one where no key is set),
	// truncated, or malformed.
	BadMagic    uint64 `json:"bad_magic"`
	BadVersion  uint64 `json:"bad_version"`
	BadChecksum uint64 `json:"bad_checksum"`
	BadAuth     uint64 `json:"bad_auth"`
	Truncated   uint64 `json:"truncated"`
	Malformed   uint64 `json:"malformed"`
	// ForeignRegion counts well-formed datagrams for another region or
	// from a node not in the view; StaleToken tokens and acks of an old
	// round or epoch.
	ForeignRegion uint64 `json:"foreign_region"`
	StaleToken    uint64 `json:"stale_token"`
	// Datagrams dropped on purpose: injected loss (DropRate), refused
	// because a client is not keeping up, or because the engine's queue
	// was full (Overload also counts messages too far ahead of their
	// stream's delivery point, which come again by repair).
	InjectedDrops uint64 `json:"injected_drops"`
	SlowConsumer  uint64 `json:"slow_consumer_drops"`
	Overload      uint64 `json:"overload_drops"`
	// Duplicates counts messages received again.
	Duplicates uint64 `json:"duplicates"`
	// Published events, messages multicast, events delivered to local
	// members, messages forwarded to peers, messages sent again by this
	// node as a sender.
	Published uint64 `json:"published"`
	Sent      uint64 `json:"messages_sent"`
	Delivered uint64 `json:"delivered"`
	Forwarded uint64 `json:"forwarded"`
	Resent    uint64 `json:"resent"`
	// Handovers counts the unstable messages this node, as a sender,
	// sent again into the new region of nodes that changed region but
	// kept the messages' groups (see "Region changes" in the package
	// documentation).
	Handovers uint64 `json:"handovers"`
	// OrphanLost counts the messages of senders that left the view which
	// no survivor held (or that followed such a gap inside one event),
	// skipped when their streams were settled.
	OrphanLost uint64 `json:"orphan_lost"`
	// SourcesRefused counts the events not delivered because their
	// sender had more publishing memberships than this service notes
	// (65,536 numbered 65,536 and up, see sourceTable): with no room to
	// note them, their copies could not be told apart.
	SourcesRefused uint64 `json:"sources_refused"`
	// Tokens passed on and acks received.
	Tokens uint64 `json:"tokens"`
	Acks   uint64 `json:"acks"`
	// WindowFullMicros is the time, in microseconds, that publishes of
	// this node waited for a stream's window (Config.Window, "credits")
	// to free: time the sender was held back by flow control. A wait is
	// counted when it ends.
	WindowFullMicros uint64 `json:"window_full_us"`
	// Unstable is the number of messages this node holds as a sender
	// that some member may still lack.
	Unstable uint64 `json:"unstable"`
	// Kept is the number of other senders' messages this node keeps: for
	// repairing nodes that lack them until every node concerned holds
	// them, or waiting for a gap before them to be filled.
	Kept uint64 `json:"kept"`
	// View is the installed view number; Region the id of this node's
	// region (0 when it is in no group).
	View   uint64 `json:"view"`
	Region uint64 `json:"region"`
	// RepairLatencyN is the number of repairs timed so far.
	RepairLatencyN uint64 `json:"repair_latency_n"`
	// RepairP50 and RepairP99 are percentiles, in microseconds, of the
	// time from noticing a gap to filling it, over recent repairs.
	RepairP50 uint64 `json:"repair_p50_us"`
	RepairP99 uint64 `json:"repair_p99_us"`
	// Clients is the number of in-process clients linked to the service
	// now, Attached how many of them are in the service's own process
	// (Service.Attach).
	Clients  uint64 `json:"clients"`
	Attached uint64 `json:"attached_clients"`

	// Coordinator is the state of the link to the coordinator: "up",
	// "connecting to ADDR" before the first attempt ends, or "down: "
	// and why the last attempt failed. Joins wait while it is not up.
	Coordinator string `json:"coordinator"`
}

// Rejected returns the number of datagrams dropped as foreign, truncated,
// forged or corrupt.
func (s Stats) Rejected() uint64 {
	return s.BadMagic + s.BadVersion + s.BadChecksum + s.BadAuth + s.Truncated + s.Malformed
}

// counters are updated with atomics from the reader goroutines and the
// engine.
type counters struct {
	datagramsIn, datagramsOut, bytesIn, bytesOut                     atomic.Uint64
	badMagic, badVersion, badChecksum, badAuth, truncated, malformed atomic.Uint64
	foreignRegion, staleToken, injected, slowConsumer                atomic.Uint64
	overload                                                         atomic.Uint64
	duplicates, published, sent, delivered                           atomic.Uint64
	forwarded, resent, tokens, acks, unstable, kept, view, region    atomic.Uint64
	orphanLost                                                       atomic.Uint64
	handovers                                                        atomic.Uint64
	sourcesRefused, windowFull, sendFailed                           atomic.Uint64
	clients, attached                                                atomic.Int64 // linked now
}

// Service is a node's local QSM service: it runs the protocol stack and
// the multicast sockets, keeps a link to the coordinator, and serves the
// in-process clients of the machine over TCP (the uplink).
type Service struct {
	cfg  Config
	log  *slog.Logger
	id   uint64
	name string

	ifc    *net.Interface
	ip     netip.Addr
	mconn  *net.UDPConn // bound to the multicast port; joins the region's group
	mpc    *ipv4.PacketConn
	uconn  *net.UDPConn // unicast address; sends everything
	upc    *ipv4.PacketConn
	uaddr  netip.AddrPort
	ln     net.Listener
	uln    net.Listener // the local uplink socket, or nil
	eng    *engine
	ctr    counters
	rng    *mrand.Rand // for DropRate; used by the reader goroutines under rngMu
	rngMu  sync.Mutex
	repair *latencyRecorder

	gmsMu    sync.Mutex // protects gmsW
	gmsW     *connWriter
	gmsVer   atomic.Uint32          // protocol version of the coordinator link
	gmsState atomic.Pointer[string] // the coordinator link as Stats.Coordinator says it

	listMu  sync.Mutex // protects lists and listSeq
	lists   map[uint32]listWait
	listSeq uint32
	gmsDone chan struct{} // closed when the first view is installed

	quit   chan struct{}
	wg     sync.WaitGroup
	closed sync.Once
	start  sync.Once

	connMu sync.Mutex // protects conns (the client links, closed by Close)
	conns  map[net.Conn]bool

	stopHeartbeats atomic.Bool   // test hook: a frozen node
	holdGMS        atomic.Bool   // test hook: do not reconnect to the coordinator
	dropRate       atomic.Uint64 // math.Float64bits of the current DropRate

	// Segmentation offload (sendBatch): on while the kernel takes it.
	// The scratch slices belong to the engine goroutine.
	gso       atomic.Bool
	gsoOut    []ipv4.Message
	gsoFirsts []int
	gsoBufs   [][]byte
	gsoOOB    []byte
}

// SetDropRate changes the fraction of received datagrams dropped at random
// (fault injection; 0 turns it off).
func (s *Service) SetDropRate(rate float64) {
	s.dropRate.Store(math.Float64bits(max(0, min(rate, 0.99))))
}

// NewService checks cfg and returns a service; Start opens its sockets.
func NewService(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("qsm: service: %w", err)
	}
	var b [8]byte
	rand.Read(b[:])
	id := binary.BigEndian.Uint64(b[:]) | 1
	s := &Service{
		cfg:     cfg,
		id:      id,
		quit:    make(chan struct{}),
		gmsDone: make(chan struct{}),
		rng:     mrand.New(mrand.NewPCG(id, uint64(time.Now().UnixNano()))),
		conns:   map[net.Conn]bool{},
		repair:  newLatencyRecorder(4096),
	}
	s.eng = newEngine(s)
	s.SetDropRate(cfg.DropRate)
	s.setGMSState("connecting to " + cfg.GMSAddress)
	return s, nil
}

// Start opens the multicast and unicast sockets and the uplink listener,
// connects to the coordinator and starts the protocol engine. It returns
// once the sockets are open; the coordinator link is retried in the
// background until Close or until ctx ends.
func (s *Service) Start(ctx context.Context) error {
	ifc, ip, err := multicastInterface(s.cfg.Subnet)
	if err != nil {
		return fmt.Errorf("qsm: service: %w", err)
	}
	s.ifc, s.ip = ifc, ip
	lc := net.ListenConfig{Control: listenControl}
	pc, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("qsm: service: listen on multicast port %d: %w", s.cfg.Port, err)
	}
	s.mconn = pc.(*net.UDPConn)
	if err := setMulticastAll(s.mconn, false); err != nil {
		s.log0().Warn("cannot turn IP_MULTICAST_ALL off; filtering by region id only", "err", err)
	}
	s.mpc = ipv4.NewPacketConn(s.mconn)
	setBuffers(s.mconn, 8<<20)
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip.AsSlice()})
	if err != nil {
		s.mconn.Close()
		return fmt.Errorf("qsm: service: listen on %v: %w", ip, err)
	}
	s.uconn = uc
	uc.SetReadBuffer(8 << 20) // the kernel caps both; failures are harmless
	uc.SetWriteBuffer(sendBuffer)
	s.gso.Store(udpgso.Available && !s.cfg.NoOffload)
	upc := ipv4.NewPacketConn(uc)
	s.upc = upc
	if err := upc.SetMulticastInterface(ifc); err != nil {
		s.closeSockets()
		return fmt.Errorf("qsm: service: multicast interface %s: %w", ifc.Name, err)
	}
	upc.SetMulticastTTL(1)
	upc.SetMulticastLoopback(true)
	s.uaddr = uc.LocalAddr().(*net.UDPAddr).AddrPort()
	s.uaddr = netip.AddrPortFrom(s.uaddr.Addr().Unmap(), s.uaddr.Port())
	s.name = s.cfg.Name
	if s.name == "" {
		h, _ := os.Hostname()
		s.name = h + "/" + s.uaddr.String()
	}
	s.log = slog.Default().With("qsm", "service", "node", s.name)
	if s.cfg.UplinkController {
		host := s.cfg.UplinkAddress
		if host == "" {
			if s.cfg.UplinkSubnet != "" {
				_, uip, err := multicastInterface(s.cfg.UplinkSubnet)
				if err != nil {
					s.closeSockets()
					return fmt.Errorf("qsm: service: uplink_subnet: %w", err)
				}
				host = uip.String()
			} else {
				host = "127.0.0.1"
			}
		}
		var tlc net.ListenConfig
		ln, err := tlc.Listen(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(s.cfg.UplinkPort)))
		if err != nil {
			s.closeSockets()
			return fmt.Errorf("qsm: service: uplink listen %s:%d: %w", host, s.cfg.UplinkPort, err)
		}
		s.ln = ln
		s.goroutine(func() { s.acceptLoop(ln) })
		if name := localUplinkName(ln.Addr().String()); s.cfg.UplinkLocal && name != "" {
			uln, err := tlc.Listen(ctx, "unix", name)
			if err != nil {
				s.log.Warn("no local uplink socket; clients use TCP", "socket", name, "err", err)
			} else {
				s.uln = uln
				s.goroutine(func() { s.acceptLoop(uln) })
			}
		}
	}
	s.goroutine(func() { s.readLoop(s.mconn) })
	s.goroutine(func() { s.readLoop(s.uconn) })
	s.goroutine(s.eng.run)
	s.goroutine(s.gmsLoop)
	s.goroutine(s.heartbeatLoop)
	s.goroutine(func() {
		select {
		case <-ctx.Done():
			// Close waits for every goroutine of the wait group, this
			// one included: it must run on a goroutine of its own.
			go s.Close()
		case <-s.quit:
		}
	})
	s.log.Info("service started", "id", fmt.Sprintf("%016x", s.id), "udp", s.uaddr.String(), "uplink", s.Addr(), "local", s.LocalAddr(), "interface", ifc.Name, "authenticated", len(s.cfg.Key) > 0)
	return nil
}

func (s *Service) log0() *slog.Logger {
	if s.log != nil {
		return s.log
	}
	return slog.Default()
}

func (s *Service) goroutine(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Addr returns the uplink address in-process clients dial, or "" when the
// service accepts no clients or has not started.
func (s *Service) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// LocalAddr returns the name of the local uplink socket (see
// Config.UplinkLocal), or "" when the service has none.
func (s *Service) LocalAddr() string {
	if s.uln == nil {
		return ""
	}
	return s.uln.Addr().String()
}

// NodeID returns the service's node id.
func (s *Service) NodeID() uint64 { return s.id }

// DataAddr returns the service's unicast UDP address.
func (s *Service) DataAddr() netip.AddrPort { return s.uaddr }

// Ready returns a channel closed once the service has installed its first
// view from the coordinator.
func (s *Service) Ready() <-chan struct{} { return s.gmsDone }

// Stats returns the service's counters.
func (s *Service) Stats() Stats {
	c := &s.ctr
	st := Stats{
		DatagramsIn: c.datagramsIn.Load(), DatagramsOut: c.datagramsOut.Load(), SendFailed: c.sendFailed.Load(),
		BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
		BadMagic: c.badMagic.Load(), BadVersion: c.badVersion.Load(), BadChecksum: c.badChecksum.Load(), BadAuth: c.badAuth.Load(),
		Truncated: c.truncated.Load(), Malformed: c.malformed.Load(), ForeignRegion: c.foreignRegion.Load(),
		StaleToken: c.staleToken.Load(), InjectedDrops: c.injected.Load(), SlowConsumer: c.slowConsumer.Load(), Overload: c.overload.Load(),
		Duplicates: c.duplicates.Load(), Published: c.published.Load(), Sent: c.sent.Load(),
		Delivered: c.delivered.Load(), Forwarded: c.forwarded.Load(), Resent: c.resent.Load(),
		Handovers: c.handovers.Load(), OrphanLost: c.orphanLost.Load(), SourcesRefused: c.sourcesRefused.Load(),
		Tokens: c.tokens.Load(), Acks: c.acks.Load(), WindowFullMicros: c.windowFull.Load(),
		Unstable: c.unstable.Load(), Kept: c.kept.Load(),
		View: c.view.Load(), Region: c.region.Load(), RepairLatencyN: uint64(s.repair.count()),
		Clients: uint64(c.clients.Load()), Attached: uint64(c.attached.Load()),
		Coordinator: *s.gmsState.Load(),
	}
	if lat := s.repair.snapshot(); len(lat) > 0 {
		st.RepairP50 = uint64(Percentile(lat, 50).Microseconds())
		st.RepairP99 = uint64(Percentile(lat, 99).Microseconds())
	}
	return st
}

// Report summarizes the service for a status display, one "name: value"
// line each: the link to the coordinator, the clients linked now, and the
// installed view.
func (s *Service) Report() []string {
	return []string{
		"coordinator: " + *s.gmsState.Load(),
		fmt.Sprintf("clients: %d (%d attached)", s.ctr.clients.Load(), s.ctr.attached.Load()),
		fmt.Sprintf("view: %d", s.ctr.view.Load()),
	}
}

// setGMSState notes the state of the coordinator link (Stats.Coordinator).
func (s *Service) setGMSState(st string) { s.gmsState.Store(&st) }

// RepairLatencies returns recent times from a gap being noticed to its
// repair, as observed at this node.
func (s *Service) RepairLatencies() []time.Duration { return s.repair.snapshot() }

// Close stops the service: it leaves the coordinator, closes the sockets
// and every client link, and waits for its goroutines. It is idempotent.
func (s *Service) Close() error {
	s.closed.Do(func() {
		close(s.quit)
		if s.ln != nil {
			s.ln.Close()
		}
		if s.uln != nil {
			s.uln.Close()
		}
		s.closeSockets()
		s.gmsMu.Lock()
		if s.gmsW != nil {
			s.gmsW.fail(net.ErrClosed)
		}
		s.gmsMu.Unlock()
		s.connMu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.connMu.Unlock()
	})
	s.wg.Wait()
	return nil
}

func (s *Service) closeSockets() {
	if s.mconn != nil {
		s.mconn.Close()
	}
	if s.uconn != nil {
		s.uconn.Close()
	}
}

// readLoop reads datagrams from one socket, checks and parses them, and
// hands them to the engine.
func (s *Service) readLoop(conn *net.UDPConn) {
	// Read up to readBatch datagrams per system call (recvmmsg) and hand
	// the data among them to the engine in one go.
	pc := ipv4.NewPacketConn(conn)
	gro := udpgso.Available && !s.cfg.NoOffload && udpgso.SetGRO(conn)
	msgs := make([]ipv4.Message, readBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 65536)}
		if gro {
			msgs[i].OOB = make([]byte, udpgso.OOBSize)
		}
	}
	idb := binary.BigEndian.AppendUint64(nil, s.id)
	auth := newDgAuth(s.cfg.Key)
	var payloads payload.Recycler
	var messages slab[message]
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		batch := batches.Get().(*packetBatch)
		// Counted once per read: the counters share lines that the
		// engine, on another core, writes too.
		var dgs, nbytes uint64
		for i := 0; i < n; i++ {
			m := &msgs[i]
			var from netip.AddrPort
			if ua, ok := m.Addr.(*net.UDPAddr); ok {
				from = ua.AddrPort()
				from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			}
			// With UDP_GRO the kernel hands datagrams of one flow that
			// arrived together over in one buffer, cut at seg bytes.
			b := m.Buffers[0][:m.N]
			seg := len(b)
			if gro && m.NN > 0 {
				if g := udpgso.Segment(m.OOB[:m.NN]); g > 0 {
					seg = g
				}
			}
			for len(b) > 0 {
				dg := b[:min(seg, len(b))]
				b = b[len(dg):]
				dgs++
				nbytes += uint64(len(dg))
				if rate := math.Float64frombits(s.dropRate.Load()); rate > 0 {
					s.rngMu.Lock()
					drop := s.rng.Float64() < rate
					s.rngMu.Unlock()
					if drop {
						s.ctr.injected.Add(1)
						continue
					}
				}
				if len(dg) >= dgHeaderSize && dg[3]&^dgAuthFlag == dgData && string(dg[8:16]) == string(idb) {
					continue // my own multicast, looped back
				}
				ev, err := parseDatagramInto(dg, from, auth, &payloads, &messages)
				if err != nil {
					s.countBad(err)
					continue
				}
				if ev.data == nil {
					select {
					case s.eng.ctl <- ev:
					case <-s.quit:
						return
					}
					continue
				}
				batch.ps = append(batch.ps, ev)
			}
		}
		s.ctr.datagramsIn.Add(dgs)
		s.ctr.bytesIn.Add(nbytes)
		if len(batch.ps) == 0 {
			batches.Put(batch)
			continue
		}
		// Data never waits for the engine: when its queue is full the
		// datagrams are dropped (and repaired later), so that tokens
		// behind them in the socket are not held up.
		select {
		case s.eng.data <- batch:
		default:
			s.ctr.overload.Add(uint64(len(batch.ps)))
			for _, p := range batch.ps {
				for i := range p.data.Msgs {
					p.data.Msgs[i].release()
				}
			}
			batch.put()
		}
	}
}

// readBatch is the most datagrams one read system call returns.
const readBatch = 32

func (s *Service) countBad(err error) {
	switch {
	case errors.Is(err, ErrBadMagic):
		s.ctr.badMagic.Add(1)
	case errors.Is(err, ErrVersion):
		s.ctr.badVersion.Add(1)
	case errors.Is(err, ErrChecksum):
		s.ctr.badChecksum.Add(1)
	case errors.Is(err, ErrAuth):
		s.ctr.badAuth.Add(1)
	case errors.Is(err, ErrTruncated):
		s.ctr.truncated.Add(1)
	default:
		s.ctr.malformed.Add(1)
	}
}

// packet is a checked and parsed datagram.
type packet struct {
	hdr   dgHeader
	from  netip.AddrPort
	data  *dataBody
	token *tokenBody
	ack   *ackBody
	at    time.Time

	dbody dataBody // what data points to
}

// parseDatagram checks a datagram and parses its body.
func parseDatagram(b []byte, from netip.AddrPort) (*packet, error) {
	return parseDatagramInto(b, from, nil, nil, nil)
}

// packets recycles the packets of data datagrams. The engine puts a
// packet back once it has handled it: what it keeps of a datagram are its
// messages, which do not live in the packet (see slab).
var packets = sync.Pool{New: func() any { return new(packet) }}

// getPacket returns a zeroed packet (putPackets zeroes what it puts).
func getPacket() *packet { return packets.Get().(*packet) }

// putPackets gives handled data packets back for reuse; nothing may
// refer to them any more.
func putPackets(ps []*packet) {
	for i, p := range ps {
		*p = packet{}
		packets.Put(p)
		ps[i] = nil
	}
}

// packetBatch is a list of data packets a reader hands the engine.
type packetBatch struct {
	ps []*packet
}

// batches recycles packetBatches.
var batches = sync.Pool{New: func() any { return new(packetBatch) }}

// put gives the batch and its packets back for reuse; nothing may refer
// to them any more.
func (b *packetBatch) put() {
	putPackets(b.ps)
	b.ps = b.ps[:0]
	batches.Put(b)
}

// slab hands out values cut from shared chunks: one allocation for many
// values instead of one each. A chunk is freed by the collector once none
// of its values is referred to, so a slab suits values that go in about
// the order they came: the messages of received datagrams, which the
// engine keeps until their region holds them, and a sender's kept
// messages, kept until stable. A chunk then outlives its values by about
// the time it takes to hand out a chunk's worth. A slab is used by one
// goroutine.
type slab[T any] struct {
	free []T
}

// slabChunk is the number of values cut from one allocation.
const slabChunk = 64

// take returns n zeroed values: cut from the slab's chunk when n is small
// and s is not nil, made on their own otherwise.
func (s *slab[T]) take(n int) []T {
	if s == nil || n > slabChunk/4 {
		return make([]T, n)
	}
	if len(s.free) < n {
		s.free = make([]T, slabChunk)
	}
	vs := s.free[:n:n]
	s.free = s.free[n:]
	return vs
}

// parseDatagramInto is parseDatagram checking tags with a (nil: no key),
// copying payloads into blocks from pb and cutting messages from ms (nil:
// each datagram's its own). The packet comes from the recycled ones.
func parseDatagramInto(b []byte, from netip.AddrPort, a *dgAuth, pb *payload.Recycler, ms *slab[message]) (*packet, error) {
	h, body, err := openDatagram(b, a)
	if err != nil {
		return nil, err
	}
	p := getPacket()
	p.hdr, p.from = h, from
	switch h.Type {
	case dgData:
		if err := parseDataInto(body, &p.dbody, ms, pb); err != nil {
			return nil, err
		}
		p.data = &p.dbody
	case dgToken:
		t, err := parseToken(body)
		if err != nil {
			return nil, err
		}
		p.token = &t
	case dgAck:
		a, err := parseAck(body)
		if err != nil {
			return nil, err
		}
		p.ack = &a
	default:
		return nil, fmt.Errorf("%w: datagram type %d", ErrMalformed, h.Type)
	}
	if h.Sender == 0 || h.Region == 0 {
		return nil, fmt.Errorf("%w: zero sender or region", ErrMalformed)
	}
	return p, nil
}

// sendBuffer is the send buffer of the socket that sends everything: it
// bounds what waits for the device, and so how long a token or an ack
// queued behind data waits, when the link rather than the machine is what
// limits the sender (128 KiB, which the kernel doubles: about 20 ms at 100
// Mbit/s, 2 ms at 1 Gbit/s, and well within a card's default queue of
// 1,000 packets, which would drop what does not fit). At memory speed the
// kernel frees a datagram's room as soon as the device takes it, so the
// bound costs nothing there. With 8 MiB, as the receive side has, a
// saturated 100 Mbit/s link held each token for over half a second: token
// rounds timed out, the receivers forwarded the same messages again and
// again, and goodput with 5% loss fell to 0.37 of raw multicast
// (TestNetnsLinkRate in qsmbench; 256 KiB still let rounds time out at 80
// Mbit/s).
const sendBuffer = 128 << 10

// send writes one sealed datagram.
func (s *Service) send(b []byte, to netip.AddrPort) {
	if _, err := s.uconn.WriteToUDPAddrPort(b, to); err != nil {
		select {
		case <-s.quit:
		default:
			s.ctr.sendFailed.Add(1)
			s.log.Debug("send failed", "to", to.String(), "err", err)
		}
		return
	}
	s.ctr.datagramsOut.Add(1)
	s.ctr.bytesOut.Add(uint64(len(b)))
}

// sendBatch writes several sealed datagrams with as few system calls as
// the kernel allows: one sendmmsg for the batch, in which, with
// segmentation offload, each run of datagrams of one size to one address
// (the last may be shorter) is one buffer that the kernel cuts into those
// datagrams (UDP_SEGMENT). It runs on the engine goroutine only.
func (s *Service) sendBatch(msgs []ipv4.Message) {
	if !s.gso.Load() || len(msgs) < 2 {
		s.sendEach(msgs)
		return
	}
	out, firsts := s.coalesce(msgs)
	for k := 0; k < len(out); {
		n, err := s.upc.WriteBatch(out[k:], 0)
		n = max(0, min(n, len(out)-k))
		for _, m := range out[k : k+n] {
			for _, b := range m.Buffers {
				s.ctr.datagramsOut.Add(1)
				s.ctr.bytesOut.Add(uint64(len(b)))
			}
		}
		k += n
		if err == nil || k == len(out) {
			continue
		}
		select {
		case <-s.quit:
			return
		default:
		}
		if len(out[k].Buffers) > 1 && udpgso.Refused(err) {
			// The route cannot segment: send this run and every later
			// datagram one by one from now on.
			s.gso.Store(false)
			s.log.Info("segmentation offload refused; sending datagrams one by one", "err", err)
			s.sendEach(msgs[firsts[k]:])
			return
		}
		s.ctr.sendFailed.Add(uint64(len(out[k].Buffers)))
		s.log.Debug("batch send failed", "err", err)
		k++ // skip the send that failed; the rest may go
	}
}

// coalesce groups msgs into runs for one segmentation offload send each;
// firsts[k] is the index in msgs of the first datagram of out[k]. The
// results are scratch space reused by the next call.
func (s *Service) coalesce(msgs []ipv4.Message) (out []ipv4.Message, firsts []int) {
	if cap(s.gsoBufs) < len(msgs) {
		s.gsoBufs = make([][]byte, len(msgs))
		s.gsoOOB = make([]byte, 0, len(msgs)*udpgso.OOBSize)
	}
	bufs, oob := s.gsoBufs[:len(msgs)], s.gsoOOB[:0]
	out, firsts = s.gsoOut[:0], s.gsoFirsts[:0]
	for i := 0; i < len(msgs); {
		seg := len(msgs[i].Buffers[0])
		bufs[i] = msgs[i].Buffers[0]
		total, j := seg, i+1
		for j < len(msgs) && j-i < udpgso.MaxSegments && sameAddr(msgs[j].Addr, msgs[i].Addr) {
			l := len(msgs[j].Buffers[0])
			if l > seg || l == 0 || total+l > udpgso.MaxBytes {
				break
			}
			bufs[j] = msgs[j].Buffers[0]
			total += l
			j++
			if l < seg {
				break // a shorter datagram ends the run
			}
		}
		m := ipv4.Message{Buffers: bufs[i:j:j], Addr: msgs[i].Addr}
		if j-i > 1 {
			n := len(oob)
			oob = udpgso.AppendSegment(oob, seg)
			m.OOB = oob[n:len(oob):len(oob)]
		}
		out = append(out, m)
		firsts = append(firsts, i)
		i = j
	}
	s.gsoOut, s.gsoFirsts, s.gsoOOB = out, firsts, oob
	return out, firsts
}

func sameAddr(a, b net.Addr) bool {
	if a == b {
		return true
	}
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	return ok1 && ok2 && ua.Port == ub.Port && ua.IP.Equal(ub.IP)
}

// sendEach writes datagrams one per message (sendmmsg).
func (s *Service) sendEach(msgs []ipv4.Message) {
	for len(msgs) > 0 {
		n, err := s.upc.WriteBatch(msgs, 0)
		for _, m := range msgs[:max(0, min(n, len(msgs)))] {
			s.ctr.datagramsOut.Add(1)
			s.ctr.bytesOut.Add(uint64(len(m.Buffers[0])))
		}
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			s.ctr.sendFailed.Add(1)
			s.log.Debug("batch send failed", "err", err)
			n = max(n, 0) + 1 // skip the datagram that failed; the rest may go
		}
		msgs = msgs[min(n, len(msgs)):]
	}
}

// joinGroup and leaveGroup change the multicast membership of mconn.
func (s *Service) joinGroup(a netip.Addr) error {
	return s.mpc.JoinGroup(s.ifc, &net.UDPAddr{IP: a.AsSlice()})
}

func (s *Service) leaveGroup(a netip.Addr) error {
	return s.mpc.LeaveGroup(s.ifc, &net.UDPAddr{IP: a.AsSlice()})
}

// --- coordinator link -------------------------------------------------

// gmsLoop keeps the link to the coordinator up: it dials, says hello,
// forwards views to the engine, and redials with backoff when the link
// drops.
func (s *Service) gmsLoop() {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-s.quit:
			return
		default:
		}
		if s.stopHeartbeats.Load() {
			<-s.quit // frozen: stay silent
			return
		}
		for s.holdGMS.Load() { // test hook: stay away from the coordinator
			select {
			case <-s.quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		err := s.gmsSession()
		select {
		case <-s.quit:
			return
		default:
		}
		s.setGMSState("down: " + err.Error())
		s.log.Warn("coordinator link down; retrying", "gms", s.cfg.GMSAddress, "err", err, "in", backoff)
		select {
		case <-s.quit:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (s *Service) gmsSession() error {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", s.cfg.GMSAddress)
	if err != nil {
		return fmt.Errorf("qsm: service: dial coordinator %s: %w", s.cfg.GMSAddress, err)
	}
	defer conn.Close()
	e := encoder{}
	e.b = append(e.b, gmsMagic...)
	e.u8(ProtocolVersionMin)
	e.u8(ProtocolVersionMax)
	e.u64(s.id)
	e.str(s.name)
	e.str(s.uaddr.String())
	var nonceS []byte
	if len(s.cfg.Key) > 0 {
		nonceS = newNonce()
		e.b = append(e.b, nonceS...)
	}
	hello := e.b
	if _, err := conn.Write(appendFrame(nil, gmsHello, hello)); err != nil {
		return fmt.Errorf("qsm: service: hello to coordinator: %w", err)
	}
	fr := newFrameReader(conn, maxFrame)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	t, body, err := fr.next()
	if err != nil {
		return fmt.Errorf("qsm: service: coordinator welcome: %w", err)
	}
	if nonceS != nil && t != gmsError {
		// The key handshake (see dgAuth): check the coordinator's tag,
		// then prove this service holds the key too.
		if t != gmsChallenge || len(body) < nonceSize {
			return fmt.Errorf("qsm: service: %w: the coordinator has no key (or speaks without one) but this service has (give both the same key_file)", ErrAuth)
		}
		nonceC := bytes.Clone(body[:nonceSize])
		if !hmac.Equal(body[nonceSize:], handshakeTag(s.cfg.Key, labelCoordinator, nonceS, nonceC, hello)) {
			return fmt.Errorf("qsm: service: %w: the coordinator's tag does not match this service's key (another key_file?)", ErrAuth)
		}
		if _, err := conn.Write(appendFrame(nil, gmsProof, handshakeTag(s.cfg.Key, labelService, nonceS, nonceC, hello))); err != nil {
			return fmt.Errorf("qsm: service: key proof to coordinator: %w", err)
		}
		if t, body, err = fr.next(); err != nil {
			return fmt.Errorf("qsm: service: coordinator welcome: %w", err)
		}
	}
	if t == gmsError {
		d := decoder{b: body}
		code := d.u16()
		return fmt.Errorf("qsm: service: coordinator refused: %w", codeError(code, d.str()))
	}
	if t != gmsWelcome {
		return fmt.Errorf("%w: coordinator sent frame type %d before welcome", ErrMalformed, t)
	}
	if len(body) > 0 {
		s.gmsVer.Store(uint32(min(body[0], ProtocolVersionMax)))
	}
	defer s.failLists(errors.New("the link to the coordinator was lost"))
	w := newConnWriter(conn)
	wquit := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		w.loop(wquit)
	}()
	defer close(wquit)
	s.gmsMu.Lock()
	s.gmsW = w
	s.gmsMu.Unlock()
	defer func() {
		s.gmsMu.Lock()
		if s.gmsW == w {
			s.gmsW = nil
		}
		s.gmsMu.Unlock()
	}()
	s.setGMSState("up")
	// Tell the engine the link is (re)established so it sends its groups.
	select {
	case s.eng.in <- gmsUp{}:
	case <-s.quit:
		return nil
	}
	for {
		conn.SetReadDeadline(time.Time{})
		t, body, err := fr.next()
		if err != nil {
			return err
		}
		switch t {
		case gmsView:
			v, err := decodeView(body)
			if err != nil {
				return fmt.Errorf("qsm: service: view from coordinator: %w", err)
			}
			if err := v.check(); err != nil {
				s.log.Error("refused a view from the coordinator; keeping the current one", "err", err)
				continue
			}
			select {
			case s.eng.in <- v:
			case <-s.quit:
				return nil
			}
		case gmsStable:
			d := decoder{b: body}
			v := d.u64()
			if err := d.done(); err != nil {
				return fmt.Errorf("qsm: service: stable view from coordinator: %w", err)
			}
			select {
			case s.eng.in <- viewStable(v):
			case <-s.quit:
				return nil
			}
		case gmsError:
			d := decoder{b: body}
			code := d.u16()
			return fmt.Errorf("qsm: service: coordinator: %w", codeError(code, d.str()))
		case gmsList:
			d := decoder{b: body}
			req := d.u32()
			decodeChannels(&d)
			if err := d.done(); err != nil {
				return fmt.Errorf("qsm: service: channel list from coordinator: %w", err)
			}
			s.listDone(req, body[4:])
		default:
			return fmt.Errorf("%w: coordinator frame type %d", ErrMalformed, t)
		}
	}
}

// listWait is a client's request for the channel list, waiting for the
// coordinator's answer.
type listWait struct {
	c   *svcClient
	req uint32
}

// listChannels asks the coordinator for the channel list on behalf of
// client c; the answer (or why there is none) goes to c as a cliList
// frame with c's request id.
func (s *Service) listChannels(c *svcClient, req uint32) {
	s.gmsMu.Lock()
	w := s.gmsW
	s.gmsMu.Unlock()
	switch {
	case w == nil:
		sendList(c, req, codeClosed, "no link to the coordinator (is 'liveobjects qsm coordinator' running?)", nil)
		return
	case s.gmsVer.Load() < listVersion:
		sendList(c, req, codeVersion, fmt.Sprintf("the coordinator speaks protocol %d; listing channels needs %d (upgrade the coordinator)", s.gmsVer.Load(), listVersion), nil)
		return
	}
	s.listMu.Lock()
	if s.lists == nil {
		s.lists = map[uint32]listWait{}
	}
	if len(s.lists) >= 1024 {
		s.listMu.Unlock()
		sendList(c, req, codeInternal, "too many channel listings in progress; try again", nil)
		return
	}
	s.listSeq++
	id := s.listSeq
	s.lists[id] = listWait{c: c, req: req}
	s.listMu.Unlock()
	e := encoder{}
	e.u32(id)
	if err := w.frame(func(b []byte) []byte { return appendFrame(b, gmsListReq, e.b) }); err != nil {
		s.listDone(id, nil)
	}
}

// listDone hands the coordinator's answer to request id (channels encoded
// by appendChannels; nil: the link failed) to the client that asked.
func (s *Service) listDone(id uint32, channels []byte) {
	s.listMu.Lock()
	lw, ok := s.lists[id]
	delete(s.lists, id)
	s.listMu.Unlock()
	if !ok {
		return
	}
	if channels == nil {
		sendList(lw.c, lw.req, codeClosed, "the link to the coordinator failed", nil)
		return
	}
	sendList(lw.c, lw.req, codeOK, "", channels)
}

// failLists answers every listing in progress with err.
func (s *Service) failLists(err error) {
	s.listMu.Lock()
	lists := s.lists
	s.lists = nil
	s.listMu.Unlock()
	for _, lw := range lists {
		sendList(lw.c, lw.req, codeClosed, err.Error(), nil)
	}
}

// sendList writes a cliList frame; channels is appendChannels' encoding
// (nil: none).
func sendList(c *svcClient, req uint32, code uint16, msg string, channels []byte) {
	if channels == nil {
		channels = appendChannels(nil, nil)
	}
	e := encoder{}
	e.u32(req)
	e.u16(code)
	e.str(msg)
	body := append(e.b, channels...)
	c.frame(func(b []byte) []byte { return appendFrame(b, cliList, body) })
}

// gmsSend sends one frame to the coordinator if the link is up.
func (s *Service) gmsSend(t uint8, body []byte) {
	s.gmsMu.Lock()
	w := s.gmsW
	s.gmsMu.Unlock()
	if w == nil {
		return
	}
	w.frame(func(b []byte) []byte { return appendFrame(b, t, body) })
}

func (s *Service) heartbeatLoop() {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			if !s.stopHeartbeats.Load() {
				s.gmsSend(gmsHeartbeat, nil)
			}
		}
	}
}

// gmsUp tells the engine the coordinator link came up.
type gmsUp struct{}

// viewStable tells the engine that every node has installed this view.
type viewStable uint64

// --- uplink: in-process clients ---------------------------------------

func (s *Service) acceptLoop(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.goroutine(func() { s.serveClient(conn) })
	}
}

// tuneUplink sets up one end of a client link, TCP or the local socket:
// frames go out as soon as they are written (no Nagle delay), and large
// buffers let a burst of frames wait in the kernel.
func tuneUplink(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if bc, ok := conn.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); ok {
		bc.SetReadBuffer(4 << 20)
		bc.SetWriteBuffer(4 << 20)
	}
}

// svcClient is one connected in-process client.
type svcClient struct {
	id     uint32
	name   string
	conn   net.Conn    // what the client's frames come over
	w      *connWriter // the link to the client; nil when direct
	direct *directLink // the link to an attached client, in this process
	quit   chan struct{}

	byID     []*localMember // the engine's members of this client by id, below denseMembers
	inflight int            // publishes waiting in engine.pending (engine goroutine)
	cut      bool           // the engine ended the link for breaking the protocol
}

// frame sends the client a frame built by f (which appends to its
// argument). It returns the link's error, if it has failed.
func (c *svcClient) frame(f func(b []byte) []byte) error {
	if c.direct != nil {
		return c.direct.frame(f)
	}
	return c.w.frame(f)
}

// queued returns the bytes sent to the client and not yet taken by it.
func (c *svcClient) queued() int64 {
	if c.direct != nil {
		return c.direct.queued()
	}
	return c.w.queued.Load()
}

// denseMembers bounds the member ids a client's table holds; members
// with larger ids are found in engine.members only.
const denseMembers = 1 << 16

// member returns the member with id from the table (engine goroutine).
func (c *svcClient) member(id uint32) *localMember {
	if int64(id) < int64(len(c.byID)) {
		return c.byID[id]
	}
	return nil
}

// setMember notes m (nil: none) as the member with id (engine goroutine).
func (c *svcClient) setMember(id uint32, m *localMember) {
	if id >= denseMembers {
		return
	}
	if int(id) >= len(c.byID) {
		if m == nil {
			return
		}
		c.byID = slices.Grow(c.byID, int(id)+1-len(c.byID))[:id+1]
	}
	c.byID[id] = m
}

var clientIDs atomic.Uint32

func (s *Service) serveClient(conn net.Conn) {
	s.connMu.Lock()
	select {
	case <-s.quit:
		s.connMu.Unlock()
		conn.Close()
		return
	default:
	}
	s.conns[conn] = true
	s.connMu.Unlock()
	defer func() {
		s.connMu.Lock()
		delete(s.conns, conn)
		s.connMu.Unlock()
		conn.Close()
	}()
	tuneUplink(conn)
	fr := newFrameReader(conn, maxHello)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	t, body, err := fr.next()
	if err != nil && !errors.Is(err, ErrMalformed) {
		return
	}
	fr.max = s.cfg.MaxEvent + 64
	c := &svcClient{id: clientIDs.Add(1), conn: conn, w: newConnWriter(conn), quit: make(chan struct{})}
	hello := func() error {
		if err != nil {
			return err
		}
		if t != cliHello {
			return fmt.Errorf("%w: first frame type %d, not hello", ErrMalformed, t)
		}
		d := decoder{b: body}
		magic := d.take(4)
		vmin, vmax := d.u8(), d.u8()
		c.name = d.str()
		if err := d.done(); err != nil {
			return err
		}
		if string(magic) != cliMagic {
			return ErrBadMagic
		}
		if vmin > ProtocolVersionMax || vmax < ProtocolVersionMin {
			return fmt.Errorf("%w: client speaks %d-%d, service %d-%d", ErrVersion, vmin, vmax, ProtocolVersionMin, ProtocolVersionMax)
		}
		return nil
	}
	if err := hello(); err != nil {
		s.log.Warn("rejected client", "remote", conn.RemoteAddr().String(), "err", err)
		e := encoder{}
		e.u32(0)
		e.u32(0)
		e.u16(errorCode(err))
		e.str(err.Error())
		conn.Write(appendFrame(nil, cliError, e.b))
		return
	}
	conn.SetReadDeadline(time.Time{})
	wdone := make(chan struct{})
	s.goroutine(func() {
		defer close(wdone)
		c.w.loop(c.quit)
	})
	defer func() {
		// The writer sends what is queued (a closing error frame) before
		// the connection closes.
		close(c.quit)
		<-wdone
	}()
	e := encoder{}
	e.u8(ProtocolVersionMax)
	e.u64(s.id)
	e.str(s.name)
	e.u32(uint32(s.cfg.MaxEvent))
	e.u32(uint32(s.cfg.ClientCredits))
	c.w.frame(func(b []byte) []byte { return appendFrame(b, cliWelcome, e.b) })
	s.serveLink(c, fr)
}

// serveLink hands the engine what client c sends over fr until the link
// ends or the service closes.
func (s *Service) serveLink(c *svcClient, fr *frameReader) {
	if !s.post(clientUp{c}) {
		return
	}
	defer s.post(clientDown{c})
	s.ctr.clients.Add(1)
	defer s.ctr.clients.Add(-1)
	if c.direct != nil {
		s.ctr.attached.Add(1)
		defer s.ctr.attached.Add(-1)
	}
	// Publishes that arrived together go to the engine in one batch.
	var pubs *publishBatch
	var payloads payload.Recycler
	postPubs := func() bool {
		if pubs == nil {
			return true
		}
		b := pubs
		pubs = nil
		return s.post(b)
	}
	defer postPubs()
	for {
		if pubs != nil && (len(pubs.pubs) >= maxPublishBatch || !fr.hasFrame()) {
			if !postPubs() {
				return
			}
		}
		t, body, err := fr.next()
		if err != nil {
			return
		}
		var ev any
		d := decoder{b: body}
		switch t {
		case cliJoin:
			ev = clientJoin{c: c, req: d.u32(), member: d.u32(), channel: d.str()}
		case cliLeave:
			ev = clientLeave{c: c, member: d.u32()}
		case cliPublish:
			m := d.u32()
			if d.err != nil {
				break
			}
			data, blk := payloads.Copy(d.b)
			if pubs == nil {
				pubs = publishBatches.Get().(*publishBatch)
			}
			pubs.pubs = append(pubs.pubs, clientPublish{c: c, member: m, data: data, blk: blk})
			continue
		case cliListReq:
			req := d.u32()
			if d.done() != nil {
				break // closes the link below, saying why
			}
			s.listChannels(c, req)
			continue
		case cliStatsReq:
			req := d.u32()
			var flags uint8
			if len(d.b) > 0 {
				flags = d.u8()
			}
			if d.done() != nil {
				break // closes the link below, saying why
			}
			st, _ := json.Marshal(s.Stats())
			if flags&statsReset != 0 {
				s.repair.reset()
			}
			c.frame(func(b []byte) []byte {
				e := encoder{b: b}
				e.u32(uint32(len(st) + 5))
				e.u8(cliStats)
				e.u32(req)
				return append(e.b, st...)
			})
			continue
		default:
			d.fail(fmt.Errorf("%w: client frame type %d", ErrMalformed, t))
		}
		if err := d.done(); err != nil {
			s.log.Warn("bad frame from client; closing its link", "client", c.name, "err", err)
			e := encoder{}
			e.u32(0)
			e.u32(0)
			e.u16(errorCode(err))
			e.str(err.Error())
			c.frame(func(b []byte) []byte { return appendFrame(b, cliError, e.b) })
			return
		}
		if !postPubs() || !s.post(ev) {
			return
		}
	}
}

// maxPublishBatch caps the publishes serveClient hands the engine at once.
const maxPublishBatch = 256

// publishBatch is publishes of one client that arrived together, handed
// to the engine at once. The engine gives it back to publishBatches once
// it has taken them, so that a stream of publishes does not allocate a
// batch, and box it for the engine's queue, every time it arrives.
type publishBatch struct{ pubs []clientPublish }

var publishBatches = sync.Pool{New: func() any { return new(publishBatch) }}

// post hands an event to the engine; false when the service is closing.
func (s *Service) post(ev any) bool {
	select {
	case s.eng.in <- ev:
		return true
	case <-s.quit:
		return false
	}
}

type clientUp struct{ c *svcClient }
type clientDown struct{ c *svcClient }
type clientJoin struct {
	c       *svcClient
	req     uint32
	member  uint32
	channel string
}
type clientLeave struct {
	c      *svcClient
	member uint32
}
type clientPublish struct {
	c      *svcClient
	member uint32
	data   []byte
	blk    *payload.Block // data's block (nil: data is its own), released once published or dropped
}

// drop gives up a publish that is not made.
func (p clientPublish) drop() {
	if p.blk != nil {
		p.blk.Release()
	}
}

// freeze makes the service fall silent without closing its coordinator
// link, as a hung process would: no heartbeats, no datagrams in or out.
// Tests use it to check failure detection.
func (s *Service) freeze() {
	s.stopHeartbeats.Store(true)
	s.closeSockets()
}

// inEngine runs f on the engine goroutine and waits for it (tests and
// debugging use it to look at protocol state).
func (s *Service) inEngine(f func(e *engine)) bool {
	done := make(chan struct{})
	if !s.post(func(e *engine) { f(e); close(done) }) {
		return false
	}
	select {
	case <-done:
		return true
	case <-s.quit:
		return false
	}
}
