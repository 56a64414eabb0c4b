package micro

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ServerConfig configures an MO server.
type ServerConfig struct {
	// Listen is the peer address to listen on (TCP), e.g. 127.0.0.1:4750
	// or 127.0.0.1:0 for a random port.
	Listen string
	// Advertise is the address written into the tokens of objects this
	// server is home for and sent to peers. Default: the listening
	// address (set it when listening on a wildcard address). Keep it
	// stable across restarts: tokens name it.
	Advertise string
	// DataDir holds the bbolt file (mo.db) and the local socket.
	DataDir string
	// LocalSocket is the path of the unix socket for trusted local
	// requests. Default DataDir/mo.sock; "-" disables it.
	LocalSocket string
	// CacheBytes bounds the cache (default 64 MiB).
	CacheBytes int64
	// Grace is how long stored objects outlive their copy-expire date
	// (default 1 minute).
	Grace time.Duration
	// MaxSustain caps one SUSTAIN request (default 30 days).
	MaxSustain time.Duration
	// Clock returns the current time (default time.Now).
	Clock func() time.Time
	// Logger receives the server's logs (default slog.Default()).
	Logger *slog.Logger
	// SweepInterval is how often expired objects are removed (default 1
	// minute; negative disables the sweeper: call Sweep yourself).
	SweepInterval time.Duration
	// FloodInterval is how often every flooding policy is run again, to
	// repair what an unreachable peer missed (default 30 s; negative
	// disables it).
	FloodInterval time.Duration
	// MaxInFlight bounds concurrent remote requests; beyond it the server
	// answers BUSY with a ditto-list (default 64).
	MaxInFlight int
	// MaxConns bounds open connections, peer and local together (default
	// 1024); connections beyond it are closed at once.
	MaxConns int
}

// Stats are counters of a server, for tests and monitoring.
type Stats struct {
	// FetchesServed counts FETCH requests answered with an object.
	FetchesServed int64
	// FetchesRemote counts FETCH requests this server sent.
	FetchesRemote int64
	// Rejected counts objects and entries rejected as bogus.
	Rejected int64
	// Busy counts BUSY answers sent.
	Busy int64
	// AssentsServed counts ASSENT messages answered.
	AssentsServed int64
	// Pushed counts objects accepted from floods.
	Pushed int64
	// BadFrames counts connections dropped for a protocol violation.
	BadFrames int64
	// PeerBytesRead counts the bytes of frames (headers and bodies, the
	// HELLO included) taken from peer connections by the frame reader.
	// Bytes count once the reader has them: a body's first bytes count
	// only after the reader has made room for the body.
	PeerBytesRead int64
}

// Server is an MO server: store and cache in one bbolt file, remote
// requests from peers (FETCH, ASSENT, BUSY) over TCP, local requests from
// trusted applications (ADOPT, REPLICATE, UPDATE, REQUEST-PAYLOAD) in
// process or over a unix socket, and the replication policies.
type Server struct {
	cfg   ServerConfig
	log   *slog.Logger
	st    *store
	pool  *pool
	now   func() time.Time
	quit  chan struct{}
	base  context.Context // cancelled by Close
	stop  context.CancelFunc
	wg    sync.WaitGroup
	addr  atomic.Pointer[netip.AddrPort]
	stats struct {
		fetchesServed, fetchesRemote, rejected, busy, assents, pushed, badFrames, peerBytes atomic.Int64
	}
	inflight  atomic.Int64
	forceBusy atomic.Bool // for tests

	mu       sync.Mutex // protects ln, localLn, conns, started, closed
	ln       net.Listener
	localLn  net.Listener
	conns    map[net.Conn]struct{}
	started  bool
	closed   bool
	closeErr error

	chMu    sync.Mutex // protects seq, last, pruned, changed
	seq     uint64     // change sequence number; starts at 1 so that 0 means "now"
	last    map[Token]uint64
	pruned  uint64 // changes up to this number were dropped from last
	changed chan struct{}

	setsMu sync.Mutex // protects sets
	sets   map[Token]cachedSet

	dittoMu sync.Mutex // protects ditto
	ditto   map[Token][]netip.AddrPort

	floodMu   sync.Mutex // protects floodQ
	floodQ    map[Token]bool
	floodKick chan struct{}
}

// NewServer opens the store in cfg.DataDir. Call Start to serve.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("micro: server: no data directory")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 64 << 20
	}
	if cfg.Grace <= 0 {
		cfg.Grace = time.Minute
	}
	if cfg.MaxSustain <= 0 {
		cfg.MaxSustain = 30 * 24 * time.Hour
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Minute
	}
	if cfg.FloodInterval == 0 {
		cfg.FloodInterval = 30 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1024
	}
	if cfg.LocalSocket == "" {
		cfg.LocalSocket = filepath.Join(cfg.DataDir, "mo.sock")
	}
	log := cfg.Logger.With("component", "mo")
	st, err := openStore(cfg.DataDir, cfg.CacheBytes, log)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: log, st: st, now: cfg.Clock,
		quit: make(chan struct{}), conns: map[net.Conn]struct{}{},
		seq: 1, last: map[Token]uint64{}, changed: make(chan struct{}),
		ditto: map[Token][]netip.AddrPort{}, sets: map[Token]cachedSet{}, floodQ: map[Token]bool{}, floodKick: make(chan struct{}, 1),
	}
	st.onDrop = s.notify // cached sets of a dropped cluster go stale
	s.base, s.stop = context.WithCancel(context.Background())
	s.pool = newPool(s.self)
	return s, nil
}

// Start listens for peers and local applications and starts the
// background work. It returns once the listeners are open; ctx bounds
// only the start (Close stops the server).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return errors.New("micro: server already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("micro: listen %s: %w", s.cfg.Listen, err)
	}
	adv := s.cfg.Advertise
	if adv == "" {
		adv = ln.Addr().String()
	}
	ap, err := netip.ParseAddrPort(adv)
	if err != nil || ap.Addr().IsUnspecified() {
		ln.Close()
		return fmt.Errorf("micro: advertise address %q: want IP:PORT of this host (set Advertise when listening on a wildcard)", adv)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	s.addr.Store(&ap)
	s.ln = ln
	if s.cfg.LocalSocket != "-" {
		_ = os.Remove(s.cfg.LocalSocket)
		lln, err := lc.Listen(ctx, "unix", s.cfg.LocalSocket)
		if err != nil {
			ln.Close()
			return fmt.Errorf("micro: local socket %s: %w", s.cfg.LocalSocket, err)
		}
		if err := os.Chmod(s.cfg.LocalSocket, 0o600); err != nil {
			ln.Close()
			lln.Close()
			return fmt.Errorf("micro: local socket %s: %w", s.cfg.LocalSocket, err)
		}
		s.localLn = lln
		s.goFunc(func() { s.acceptLoop(lln, s.serveLocal) })
	}
	s.started = true
	s.goFunc(func() { s.acceptLoop(ln, s.servePeer) })
	s.goFunc(s.sweeper)
	s.goFunc(s.flooder)
	// Run every flooding policy once after a (re)start.
	if m, err := s.st.replicated(); err == nil {
		for t, st := range m {
			if st.Flood >= 0 {
				s.scheduleFlood(t)
			}
		}
	}
	s.log.Info("mo server started", "addr", ap, "data", s.cfg.DataDir)
	return nil
}

// goFunc runs f in a goroutine counted in s.wg.
func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Addr returns the advertised peer address (nil before Start).
func (s *Server) Addr() net.Addr {
	ap := s.addr.Load()
	if ap == nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(*ap)
}

func (s *Server) self() netip.AddrPort {
	if ap := s.addr.Load(); ap != nil {
		return *ap
	}
	return netip.AddrPort{}
}

// LocalSocket returns the path of the local request socket ("" when
// disabled).
func (s *Server) LocalSocket() string {
	if s.cfg.LocalSocket == "-" {
		return ""
	}
	return s.cfg.LocalSocket
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		FetchesServed: s.stats.fetchesServed.Load(), FetchesRemote: s.stats.fetchesRemote.Load(),
		Rejected: s.stats.rejected.Load(), Busy: s.stats.busy.Load(), AssentsServed: s.stats.assents.Load(),
		Pushed: s.stats.pushed.Load(), BadFrames: s.stats.badFrames.Load(), PeerBytesRead: s.stats.peerBytes.Load(),
	}
}

// Close stops the listeners, closes every connection, waits for the
// server's goroutines and closes the store. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	close(s.quit)
	s.stop()
	if s.ln != nil {
		s.ln.Close()
	}
	if s.localLn != nil {
		s.localLn.Close()
		_ = os.Remove(s.cfg.LocalSocket)
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.pool.close()
	s.wg.Wait()
	err := s.st.close()
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	return err
}

func (s *Server) acceptLoop(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept", "err", err)
			select {
			case <-s.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		if len(s.conns) >= s.cfg.MaxConns {
			s.mu.Unlock()
			s.log.Warn("too many connections; closing a new one", "remote", c.RemoteAddr(), "max", s.cfg.MaxConns)
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.goFunc(func() {
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			serve(c)
		})
	}
}

// ctx returns a context cancelled when the server closes or after
// timeout.
func (s *Server) ctx(timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.base, timeout)
}

// servePeer runs one peer connection: HELLO, then requests one at a time.
func (s *Server) servePeer(c net.Conn) {
	r := countingReader{r: bufio.NewReaderSize(c, 64<<10), n: &s.stats.peerBytes}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	f, err := readFrame(r, 1024)
	if err != nil || f.typ != msgHello {
		s.badPeer(c, f.id, err, "no hello")
		return
	}
	h, err := decodeHello(f.body)
	if err != nil {
		s.badPeer(c, f.id, err, "bad hello")
		return
	}
	if h.min > protoMax || h.max < protoMin {
		writeFrame(c, msgError, f.id, errorMsg{code: CodeVersionMismatch, text: fmt.Sprintf("this server speaks versions %d..%d", protoMin, protoMax)}.encode())
		return
	}
	ver := min(h.max, protoMax)
	if err := writeFrame(c, msgHelloAck, f.id, helloAck{version: ver, addr: s.self()}.encode()); err != nil {
		return
	}
	peer := h.addr
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok && ra.AddrPort().Addr().Unmap() != peer.Addr() {
		// Learn only addresses the peer demonstrably speaks from.
		peer = netip.AddrPort{}
	}
	for {
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		f, err := readFrame(r, MaxFrame)
		if err != nil {
			var ne net.Error
			idle := errors.As(err, &ne) && ne.Timeout()
			if !idle && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
				s.badPeer(c, f.id, err, "read")
			}
			return
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		typ, body := s.handlePeer(peer, f)
		if err := writeFrame(c, typ, f.id, body); err != nil {
			return
		}
		if typ == msgError && (f.typ < msgFetch || f.typ > msgPushReply) {
			s.stats.badFrames.Add(1)
			return
		}
	}
}

// countingReader adds the bytes read through it to n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func (s *Server) badPeer(c net.Conn, id uint32, err error, what string) {
	if err == nil {
		err = ErrProtocol
	}
	if errors.Is(err, io.EOF) {
		return
	}
	s.stats.badFrames.Add(1)
	s.log.Debug("dropping peer connection", "remote", c.RemoteAddr(), "why", what, "err", err)
	writeFrame(c, msgError, id, errorMsg{code: codeOf(err), text: err.Error()}.encode())
}

func errFrame(err error, ditto []netip.AddrPort) (uint8, []byte) {
	return msgError, errorMsg{code: codeOf(err), text: err.Error(), ditto: ditto}.encode()
}

// handlePeer answers one remote request.
func (s *Server) handlePeer(peer netip.AddrPort, f frame) (uint8, []byte) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if f.typ == msgFetch && (n > int64(s.cfg.MaxInFlight) || s.forceBusy.Load()) {
		// Swamped: send the requester to servers that asked for the same
		// object before. With nobody to send it to, serve it anyway
		// unless far over the bound.
		var ditto []netip.AddrPort
		if t, err := TokenFromBytes(f.body); err == nil {
			ditto = s.dittoList(t, peer)
		}
		if len(ditto) > 0 || n > 2*int64(s.cfg.MaxInFlight) {
			s.stats.busy.Add(1)
			return msgBusy, appendAddrs(nil, ditto)
		}
	}
	ctx, cancel := s.ctx(time.Minute)
	defer cancel()
	switch f.typ {
	case msgFetch:
		t, err := TokenFromBytes(f.body)
		if err != nil {
			return errFrame(err, nil)
		}
		o, _, err := s.st.get(t)
		if err != nil {
			return errFrame(err, nil)
		}
		ditto := s.dittoList(t, peer)
		s.noteRequester(t, peer)
		if o == nil {
			return errFrame(fmt.Errorf("%w: %s", ErrNotFound, t.Short()), ditto)
		}
		s.stats.fetchesServed.Add(1)
		return msgObject, o.appendTo(nil)
	case msgAssent:
		m, err := decodeAssent(f.body)
		if err != nil {
			return errFrame(err, nil)
		}
		rep, err := s.serveAssent(ctx, peer, m)
		if err != nil {
			return errFrame(err, nil)
		}
		return msgAssentReply, rep.encode()
	case msgOffer:
		m, err := decodeOffer(f.body)
		if err != nil {
			return errFrame(err, nil)
		}
		want, err := s.serveOffer(m)
		if err != nil {
			return errFrame(err, nil)
		}
		return msgWant, encodeWant(want)
	case msgPush:
		m, err := decodePush(f.body)
		if err != nil {
			s.stats.rejected.Add(1)
			return errFrame(err, nil)
		}
		n, err := s.servePush(m)
		if err != nil {
			return errFrame(err, nil)
		}
		return msgPushReply, []byte{byte(n >> 8), byte(n)}
	}
	return errFrame(fmt.Errorf("%w: request type %d", ErrProtocol, f.typ), nil)
}

// noteRequester remembers that peer asked for t: it may answer for t next
// time (the ditto-list).
func (s *Server) noteRequester(t Token, peer netip.AddrPort) {
	if !peer.IsValid() || peer == s.self() {
		return
	}
	s.dittoMu.Lock()
	defer s.dittoMu.Unlock()
	l := s.ditto[t]
	for _, a := range l {
		if a == peer {
			return
		}
	}
	if len(s.ditto) > 4096 {
		for k := range s.ditto { // drop an arbitrary entry
			delete(s.ditto, k)
			break
		}
	}
	l = append(l, peer)
	if len(l) > 8 {
		l = l[1:]
	}
	s.ditto[t] = l
}

func (s *Server) dittoList(t Token, except netip.AddrPort) []netip.AddrPort {
	s.dittoMu.Lock()
	defer s.dittoMu.Unlock()
	var out []netip.AddrPort
	for _, a := range s.ditto[t] {
		if a != except {
			out = append(out, a)
		}
	}
	return out
}

// maxChangeMemory bounds the per-object change numbers kept for WaitChange.
const maxChangeMemory = 1 << 16

// notify records a change of t's cluster and wakes waiters.
func (s *Server) notify(t Token) {
	s.chMu.Lock()
	s.seq++
	s.last[t] = s.seq
	if len(s.last) > maxChangeMemory {
		// Forget the older half; waiters older than that wake up
		// (spuriously at worst) instead of missing a change.
		cut := s.seq - maxChangeMemory/2
		for k, v := range s.last {
			if v <= cut {
				delete(s.last, k)
			}
		}
		s.pruned = cut
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.chMu.Unlock()
}

// Sweep removes what has expired now; the sweeper calls it every
// SweepInterval. It returns the number of objects removed.
func (s *Server) Sweep() (int, error) {
	gone, err := s.st.sweep(s.now(), s.cfg.Grace)
	if err != nil {
		return len(gone), fmt.Errorf("micro: sweep: %w", err)
	}
	for _, t := range gone {
		s.log.Debug("expired", "token", t.Short())
	}
	return len(gone), nil
}

func (s *Server) sweeper() {
	if s.cfg.SweepInterval < 0 {
		return
	}
	tk := time.NewTicker(s.cfg.SweepInterval)
	defer tk.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-tk.C:
			if _, err := s.Sweep(); err != nil {
				s.log.Warn("sweep", "err", err)
			}
		}
	}
}

// Has reports where the server holds t, without fetching it.
func (s *Server) Has(t Token) Where { return s.st.where(t) }

// CacheBytes returns the bytes held in the cache.
func (s *Server) CacheBytes() int64 { return s.st.cacheSize() }

// PeerAddr returns the advertised peer address as netip.AddrPort; zero before Start.
func (s *Server) PeerAddr() netip.AddrPort { return s.self() }
