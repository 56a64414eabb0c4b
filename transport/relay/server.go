package relay

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// ServerConfig configures a relay server. The zero value of every field but
// Listen is usable.
type ServerConfig struct {
	// Listen is the TCP address to listen on ("127.0.0.1:60000", ":0").
	Listen string
	// DataDir holds the durable log (relay.db). Empty keeps everything in
	// memory: a restart then loses every channel's state and history.
	DataDir string
	// Channels are the channels that exist from the start (merged with
	// those found in DataDir).
	Channels []transport.ChannelInfo
	// AllowCreate lets clients create channels, explicitly or by joining a
	// channel that does not exist.
	AllowCreate bool
	// TLS, when set, makes the server speak TLS (set ClientCAs and
	// ClientAuth for client certificates).
	TLS *tls.Config
	// Secret, when set, must be presented by every client, unless the
	// client joins only channels it holds a token for. A client with the
	// secret may join any channel and create and remove channels.
	Secret string
	// Tokens maps channel names to tokens; joining (and so publishing to)
	// such a channel requires its token or the secret, with or without a
	// Secret set, and removing it requires the secret. A channel is
	// guarded by the token listed under its name, else by the one listed
	// under its ID; the guard holds however the client names the channel
	// (by name or by ID).
	//
	// When Tokens is not empty, a client sees in the channel list and in
	// channel change notifications only the channels it may join: a client
	// with the secret sees every channel; any other client sees the
	// channels guarded by a token it presented on this connection (by
	// joining them), and, on a relay without a Secret, the channels that
	// have no token. A relay without tokens shows every channel to every
	// client.
	Tokens map[string]string
	// MaxEvent is the largest event payload (default 1 MiB, at most
	// MaxEventLimit: NewServer refuses more).
	MaxEvent int
	// MemberQueue bounds how many events a member may lag behind the head
	// of its channel before it is told it fell behind and is caught up by
	// state transfer (default 65536).
	MemberQueue int
	// CheckpointTimeout is how long a member has to answer a checkpoint
	// request before the next member (or the stored checkpoint) is used
	// (default 5s).
	CheckpointTimeout time.Duration
	// Logger receives the server's logs (default slog.Default()).
	Logger *slog.Logger

	// CompactEvents and CompactBytes: after this many events or bytes
	// since the last checkpoint, the relay asks a member for a checkpoint
	// and deletes the log before it (defaults 10000 and 16 MiB).
	CompactEvents int
	CompactBytes  int64
	// MaxLogBytes bounds a channel's log when no member can give a
	// checkpoint (default 256 MiB). Past it the oldest events are trimmed;
	// a joiner that would need them while no member can give a checkpoint
	// gets an error with CodeTrimmed. Nothing is trimmed silently: every
	// trim is logged.
	MaxLogBytes int64
	// MaxCheckpoint bounds a checkpoint a member may send (default 1 GiB).
	MaxCheckpoint int64
	// NoSync skips fsync in durable mode (tests and benchmarks only: a
	// machine crash may then lose acknowledged events; a process crash
	// does not).
	NoSync bool
}

// MaxEventLimit is the largest ServerConfig.MaxEvent: the handshake
// carries the limits in 32 bits, and an event's frame adds up to 64 KiB.
const MaxEventLimit int64 = 1<<32 - 1 - frameOverhead

// check refuses settings the relay cannot honour (after defaults).
func (cfg *ServerConfig) check() error {
	if int64(cfg.MaxEvent) > MaxEventLimit {
		return fmt.Errorf("%w: a largest event of %d bytes does not fit the relay protocol, whose limit is %d bytes (4 GiB less 64 KiB); lower MaxEvent (--max-event)",
			ErrConfig, cfg.MaxEvent, MaxEventLimit)
	}
	return nil
}

func (cfg *ServerConfig) defaults() {
	if cfg.MaxEvent <= 0 {
		cfg.MaxEvent = DefaultMaxEvent
	}
	if cfg.MemberQueue <= 0 {
		cfg.MemberQueue = 65536
	}
	if cfg.CheckpointTimeout <= 0 {
		cfg.CheckpointTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CompactEvents <= 0 {
		cfg.CompactEvents = 10000
	}
	if cfg.CompactBytes <= 0 {
		cfg.CompactBytes = 16 << 20
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = 256 << 20
	}
	if cfg.MaxCheckpoint <= 0 {
		cfg.MaxCheckpoint = 1 << 30
	}
}

// Server is a relay server. Create it with NewServer, start it with Start,
// stop it with Close.
type Server struct {
	cfg      ServerConfig
	log      *slog.Logger
	maxFrame int
	store    *boltStore // nil in memory mode
	com      *committer // nil in memory mode
	epoch    uint64
	fresh    bool // the epoch was chosen by this process (a new history)
	cpIDs    atomic.Uint64

	mu       sync.Mutex // protects the fields below
	ln       net.Listener
	channels map[string]*channel // by name (the canonical key)
	aliases  map[string]string   // channel ID -> name, for channels with both
	conns    map[*sconn]struct{}
	clients  map[string]*clientRec
	started  bool
	closed   bool

	quit chan struct{}
	wg   sync.WaitGroup
}

// NewServer checks cfg, opens the durable store when DataDir is set and
// loads every channel's checkpoint and log. It does not listen yet.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg.defaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "relay"),
		maxFrame: maxFrameFor(cfg.MaxEvent),
		channels: map[string]*channel{},
		aliases:  map[string]string{},
		conns:    map[*sconn]struct{}{},
		clients:  map[string]*clientRec{},
		quit:     make(chan struct{}),
	}
	var stored []storedChannel
	if cfg.DataDir != "" {
		// openStore creates relay.db when it is missing, and load then
		// chooses a new epoch.
		_, statErr := os.Stat(filepath.Join(cfg.DataDir, "relay.db"))
		s.fresh = errors.Is(statErr, fs.ErrNotExist)
		st, err := openStore(cfg.DataDir, cfg.NoSync)
		if err != nil {
			return nil, err
		}
		epoch, chans, clients, err := st.load()
		if err != nil {
			st.close()
			return nil, err
		}
		s.store, s.epoch, stored = st, epoch, chans
		for id, c := range clients {
			cr := newClientRec()
			cr.lastCounter = c.counter
			cr.lastSeq = c.seq
			cr.lastSeen = time.Now()
			s.clients[id] = cr
		}
		s.com = newCommitter(s, st)
	} else {
		s.epoch = newEpoch()
		s.fresh = true
	}
	renamed := renameJoinedByID(stored, cfg.Channels)
	for _, it := range renamed {
		s.log.Info("relay: a channel created by a join by its ID takes the name the configuration gives it", "channel", it.info.Name, "id", it.info.ID)
	}
	for _, sc := range stored {
		ch := newChannel(s, sc.info)
		ch.base, ch.cpSeq, ch.cp = sc.base, sc.cpSeq, sc.cp
		ch.lastSeq = max(sc.base, sc.cpSeq)
		for _, e := range sc.events {
			ev := ch.newEventLocked(e.seq, e.sender, e.data)
			ev.client, ev.counter = e.client, e.counter
			ch.appendLocked(ev)
			if e.client != "" {
				cr := s.clients[e.client]
				if cr == nil {
					cr = newClientRec()
					cr.lastSeen = time.Now()
					s.clients[e.client] = cr
				}
				cr.remember(e.counter, e.seq)
			}
		}
		ch.committed = ch.lastSeq
		s.addChannelLocked(ch)
	}
	fresh := renamed
	for _, info := range cfg.Channels {
		info.Name = channelKey(info)
		if err := checkChannelName(info.Name); err != nil {
			s.closeStore()
			return nil, fmt.Errorf("relay: channel %q: %w", info.Name, err)
		}
		if ch := s.lookupLocked(info.Name); ch != nil {
			ch.info.Comment = info.Comment
			if ch.info.ID == "" && info.ID != "" && s.lookupLocked(info.ID) == nil {
				ch.info.ID = info.ID
				s.aliases[info.ID] = ch.info.Name
			}
			continue
		}
		if info.ID != "" && s.lookupLocked(info.ID) != nil {
			s.closeStore()
			return nil, fmt.Errorf("relay: channel %q: its ID %s names another channel", info.Name, info.ID)
		}
		s.addChannelLocked(newChannel(s, info))
		fresh = append(fresh, citem{op: opChannel, info: info})
	}
	if s.store != nil && len(fresh) > 0 {
		if err := s.store.write(fresh); err != nil {
			s.closeStore()
			return nil, fmt.Errorf("relay: store channels: %w", err)
		}
	}
	return s, nil
}

// renameJoinedByID gives the configured name to each stored channel that
// was created by a join by a configured channel's ID before it had a name
// here (stored with that ID as its name, and no other ID), unless a
// channel of that name is stored too. It changes stored in place and
// returns the store items that rename them.
func renameJoinedByID(stored []storedChannel, configured []transport.ChannelInfo) []citem {
	names := map[string]bool{}
	for _, sc := range stored {
		names[sc.info.Name] = true
	}
	var items []citem
	for _, info := range configured {
		if info.ID == "" || info.Name == "" || info.Name == info.ID || names[info.Name] {
			continue
		}
		for i := range stored {
			sc := &stored[i]
			if (sc.info.ID == "" || sc.info.ID == info.ID) && sc.info.Name == info.ID {
				from := sc.info.Name
				sc.info.Name, sc.info.ID, sc.info.Comment = info.Name, info.ID, info.Comment
				names[info.Name] = true
				items = append(items, citem{op: opRename, info: sc.info, from: from})
				break
			}
		}
	}
	return items
}

func (s *Server) closeStore() {
	if s.store != nil {
		s.store.close()
	}
}

func channelKey(info transport.ChannelInfo) string {
	if info.Name != "" {
		return info.Name
	}
	return info.ID
}

// checkChannelName rejects names that cannot be a channel key.
func checkChannelName(name string) error {
	if name == "" {
		return errf(CodeBadRequest, "empty channel name")
	}
	if len(name) > 255 {
		return errf(CodeBadRequest, "channel name of %d bytes is longer than 255", len(name))
	}
	if strings.ContainsAny(name, "/\x00\n") {
		return errf(CodeBadRequest, "channel name %q contains '/', a newline or NUL", name)
	}
	return nil
}

// Start listens and starts accepting clients. It returns once the listener
// is open; ctx bounds only the start, not the server's life (use Close).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return transport.ErrClosed
	}
	if s.started {
		return errors.New("relay: server already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("relay: listen %s: %w", s.cfg.Listen, err)
	}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	s.ln = ln
	s.started = true
	if s.com != nil {
		s.go_(s.com.run)
	}
	s.go_(s.acceptLoop)
	s.log.Info("relay listening", "addr", ln.Addr().String(), "durable", s.store != nil, "channels", len(s.channels), "epoch", epochString(s.epoch))
	switch {
	case s.store == nil:
		s.log.Info("relay: new history (epoch "+epochString(s.epoch)+"): this relay keeps everything in memory, so channels' state and events from before a restart are gone; clients that reconnect see the new epoch and load each channel's state afresh",
			"epoch", epochString(s.epoch))
	case s.fresh:
		s.log.Info("relay: new history (epoch "+epochString(s.epoch)+"): no durable log was found in the data directory, so a new one was started",
			"epoch", epochString(s.epoch), "data", s.cfg.DataDir)
	default:
		s.log.Info("relay: continuing the history (epoch "+epochString(s.epoch)+") of the durable log in the data directory",
			"epoch", epochString(s.epoch), "data", s.cfg.DataDir)
	}
	return nil
}

// go_ starts a goroutine owned by the server.
func (s *Server) go_(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Addr is the address the server listens on (nil before Start).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Epoch identifies this relay's history: it changes when the history is
// lost (in-memory mode restarts, a new data directory). Start logs it.
func (s *Server) Epoch() uint64 { return s.epoch }

// epochString formats an epoch as the logs show it.
func epochString(e uint64) string { return fmt.Sprintf("%016x", e) }

// Close stops accepting, disconnects every client, waits for the server's
// goroutines and closes the store. Everything acknowledged is on disk.
// It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.quit)
	if s.ln != nil {
		s.ln.Close()
	}
	conns := make([]*sconn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	chans := make([]*channel, 0, len(s.channels))
	for _, ch := range s.channels {
		chans = append(chans, ch)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(nil)
	}
	for _, ch := range chans {
		ch.mu.Lock()
		if ch.req != nil && ch.req.timer != nil {
			ch.req.timer.Stop()
		}
		ch.mu.Unlock()
	}
	s.wg.Wait()
	if s.store != nil {
		if err := s.store.close(); err != nil {
			return fmt.Errorf("relay: close store: %w", err)
		}
	}
	return nil
}

func (s *Server) acceptLoop() {
	delay := 5 * time.Millisecond
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("relay: accept failed", "err", err)
			select {
			case <-time.After(delay):
			case <-s.quit:
				return
			}
			delay = min(delay*2, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		c := newSconn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.go_(c.serve)
	}
}

// CreateChannel adds a channel and tells every connected client. It fails
// with an *Error of CodeExists when the channel exists.
func (s *Server) CreateChannel(info transport.ChannelInfo) error {
	_, err := s.createChannel(info, false)
	return err
}

func (s *Server) createChannel(info transport.ChannelInfo, okIfExists bool) (*channel, error) {
	info.Name = channelKey(info)
	if err := checkChannelName(info.Name); err != nil {
		return nil, fmt.Errorf("relay: create channel: %w", err)
	}
	info.Members, info.LastSeq = -1, 0
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, transport.ErrClosed
	}
	if ch := s.lookupLocked(info.Name); ch != nil {
		s.mu.Unlock()
		if okIfExists {
			return ch, nil
		}
		return nil, errf(CodeExists, "channel %q exists", info.Name)
	}
	if info.ID != "" && s.lookupLocked(info.ID) != nil {
		s.mu.Unlock()
		return nil, errf(CodeExists, "a channel with ID %s exists", info.ID)
	}
	ch := newChannel(s, info)
	s.addChannelLocked(ch)
	conns := s.connList()
	s.mu.Unlock()
	if s.com != nil {
		if err := s.com.sync(citem{op: opChannel, info: info}); err != nil {
			s.mu.Lock()
			s.removeChannelLocked(ch)
			s.mu.Unlock()
			return nil, fmt.Errorf("relay: create channel %s: %w", info.Name, err)
		}
	}
	s.log.Info("relay: channel created", "channel", info.Name)
	for _, c := range conns {
		c.sendChange(changeAdded, info)
	}
	return ch, nil
}

// RemoveChannel removes a channel with its state and history; its members
// are told (CodeRemoved) and every client learns of the removal.
func (s *Server) RemoveChannel(name string) error {
	ch := s.channel(name)
	if ch == nil {
		return errf(CodeNoChannel, "channel %q does not exist", name)
	}
	return s.removeChannel(ch)
}

// removeChannel removes ch, unless it was removed already.
func (s *Server) removeChannel(ch *channel) error {
	name := ch.info.Name
	s.mu.Lock()
	if s.channels[name] != ch {
		s.mu.Unlock()
		return errf(CodeNoChannel, "channel %q does not exist", name)
	}
	s.removeChannelLocked(ch)
	conns := s.connList()
	s.mu.Unlock()
	ch.mu.Lock()
	ch.removed = true
	members := make([]*member, 0, len(ch.members))
	for m := range ch.members {
		members = append(members, m)
	}
	if ch.req != nil && ch.req.timer != nil {
		ch.req.timer.Stop()
	}
	ch.req = nil
	info := ch.info
	ch.mu.Unlock()
	for _, m := range members {
		m.c.dropMember(m, errf(CodeRemoved, "channel %q was removed", name))
	}
	if s.com != nil {
		if err := s.com.sync(citem{op: opRemove, ch: ch, info: info}); err != nil {
			return fmt.Errorf("relay: remove channel %s: %w", name, err)
		}
	}
	s.log.Info("relay: channel removed", "channel", name)
	for _, c := range conns {
		c.sendChange(changeRemoved, info)
	}
	return nil
}

// Channels lists the channels with their member counts and last sequence
// numbers, sorted by name.
func (s *Server) Channels() []transport.ChannelInfo {
	s.mu.Lock()
	chans := make([]*channel, 0, len(s.channels))
	for _, ch := range s.channels {
		chans = append(chans, ch)
	}
	s.mu.Unlock()
	out := make([]transport.ChannelInfo, 0, len(chans))
	for _, ch := range chans {
		ch.mu.Lock()
		info := ch.info
		info.Members = len(ch.members)
		info.LastSeq = ch.committed
		ch.mu.Unlock()
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// connList returns the connections; s.mu must be held.
func (s *Server) connList() []*sconn {
	out := make([]*sconn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// channel finds a channel by name or ID.
func (s *Server) channel(key string) *channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookupLocked(key)
}

func (s *Server) lookupLocked(key string) *channel {
	if ch, ok := s.channels[key]; ok {
		return ch
	}
	if name, ok := s.aliases[key]; ok {
		return s.channels[name]
	}
	return nil
}

func (s *Server) addChannelLocked(ch *channel) {
	s.channels[ch.info.Name] = ch
	if id := ch.info.ID; id != "" && id != ch.info.Name {
		s.aliases[id] = ch.info.Name
	}
}

func (s *Server) removeChannelLocked(ch *channel) {
	delete(s.channels, ch.info.Name)
	if id := ch.info.ID; id != "" && s.aliases[id] == ch.info.Name {
		delete(s.aliases, id)
	}
}

// attachClient returns the record of client id and counts a connection;
// records of clients gone for longer than clientIdle are forgotten.
func (s *Server) attachClient(id string) *clientRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for k, cr := range s.clients {
		if cr.conns == 0 && !cr.lastSeen.IsZero() && now.Sub(cr.lastSeen) > clientIdle {
			delete(s.clients, k)
		}
	}
	cr := s.clients[id]
	if cr == nil {
		cr = newClientRec()
		s.clients[id] = cr
	}
	cr.conns++
	return cr
}

func (s *Server) detachClient(cr *clientRec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cr.conns--
	cr.lastSeen = time.Now()
}

// channelToken returns the token that guards the channel with this name
// and ID (id may be empty): the one listed under its name, else the one
// listed under its ID.
func (s *Server) channelToken(name, id string) (string, bool) {
	if tok, ok := s.cfg.Tokens[name]; ok {
		return tok, true
	}
	if id != "" {
		if tok, ok := s.cfg.Tokens[id]; ok {
			return tok, true
		}
	}
	return "", false
}

// authJoin decides whether a connection may join the channel with this
// name and ID, which the client called key (its name or its ID). It
// reports whether the channel has a token that the connection presented.
func (s *Server) authJoin(admin bool, key, name, id, token string) (granted bool, err error) {
	want, guarded := s.channelToken(name, id)
	if admin {
		return guarded, nil
	}
	what := fmt.Sprintf("channel %q", key)
	if key != name {
		what = fmt.Sprintf("channel %q (ID of channel %q)", key, name)
	}
	if guarded {
		if subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1 {
			return true, nil
		}
		if token == "" {
			return false, errf(CodeDenied, "%s needs a token (set it in the client's tokens, under %q)", what, key)
		}
		return false, errf(CodeDenied, "wrong token for %s", what)
	}
	if s.cfg.Secret != "" {
		return false, errf(CodeDenied, "%s needs the relay's secret or a channel token", what)
	}
	return false, nil
}

// noChannelErr says why a client may not join channel name, which does
// not exist, and what would let it.
func (s *Server) noChannelErr(name string, admin bool) error {
	switch {
	case s.cfg.Secret != "" && !admin:
		return errf(CodeNoChannel, "channel %q does not exist on this relay, and a channel token lets a client join a channel, not create it (create it with a client that has the relay's secret, or list it in the relay's channels)", name)
	case s.cfg.Secret != "":
		return errf(CodeNoChannel, "channel %q does not exist on this relay (create it first, or run the relay with channel creation allowed)", name)
	default:
		return errf(CodeNoChannel, "channel %q does not exist on this relay (list it in the relay's channels, or run the relay with channel creation allowed)", name)
	}
}

// clientRec remembers a client's recent publishes so a publish retried
// after a reconnect is acknowledged with its first sequence number instead
// of being applied twice.
type clientRec struct {
	mu          sync.Mutex // protects the fields below
	lastCounter uint64
	lastSeq     uint64
	ring        []struct{ counter, seq uint64 } // allocated on first publish
	conns       int                             // live connections of this client (under Server.mu)
	lastSeen    time.Time                       // when the last connection ended (under Server.mu)
}

// dedupRing is how many recent publishes per client are remembered; a
// client keeps at most half of this unacknowledged.
const dedupRing = 1 << 13

// clientIdle is how long the relay remembers a disconnected client's
// publish counters in memory (the durable store keeps the last one).
const clientIdle = 30 * time.Minute

func newClientRec() *clientRec { return &clientRec{} }

func (cr *clientRec) remember(counter, seq uint64) {
	if counter > cr.lastCounter {
		cr.lastCounter, cr.lastSeq = counter, seq
	}
	if cr.ring == nil {
		cr.ring = make([]struct{ counter, seq uint64 }, dedupRing)
	}
	slot := &cr.ring[counter%dedupRing]
	slot.counter, slot.seq = counter, seq
}

// lookup reports whether counter was applied, and its sequence number (0
// when it is too old to remember).
func (cr *clientRec) lookup(counter uint64) (uint64, bool) {
	if counter > cr.lastCounter || counter == 0 {
		return 0, false
	}
	if cr.ring != nil {
		if slot := cr.ring[counter%dedupRing]; slot.counter == counter {
			return slot.seq, true
		}
	}
	if counter == cr.lastCounter {
		return cr.lastSeq, true
	}
	return 0, true
}
