package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// TestTokenGuardsChannelID: a channel token guards its channel however the
// client names it. Joining or removing the channel by its ID needs the
// token (or the secret) as by its name, and a token listed under the ID
// guards the channel under its name too.
func TestTokenGuardsChannelID(t *testing.T) {
	const tid = "0000000000000000000000000000000a"
	const vid = "0000000000000000000000000000000b"
	s := startServer(t, ServerConfig{AllowCreate: true,
		Tokens:   map[string]string{"t": "tok", vid: "vtok"},
		Channels: []transport.ChannelInfo{{Name: "t", ID: tid}, {Name: "v", ID: vid}, {Name: "open"}}})
	addr := s.Addr().String()
	anon := dialClient(t, addr)
	if _, err := anon.Join(ctxT(t), tid, &logHandler{}); !errors.Is(err, transport.ErrDenied) || !strings.Contains(err.Error(), "needs a token") {
		t.Fatalf("join of a token channel by its ID without the token: %v", err)
	}
	if _, err := anon.Join(ctxT(t), "v", &logHandler{}); !errors.Is(err, transport.ErrDenied) {
		t.Fatalf("join by name of a channel whose token is listed under its ID: %v", err)
	}
	if err := anon.RemoveChannel(ctxT(t), tid); !errors.Is(err, transport.ErrDenied) || !strings.Contains(err.Error(), "has a token") {
		t.Fatalf("remove of a token channel by its ID without the secret: %v", err)
	}
	if err := anon.RemoveChannel(ctxT(t), "v"); !errors.Is(err, transport.ErrDenied) {
		t.Fatalf("remove by name of a channel whose token is listed under its ID: %v", err)
	}
	if got := len(s.Channels()); got != 3 {
		t.Fatalf("%d channels left, want 3", got)
	}
	wrong := dialClient(t, addr, func(c *ClientConfig) { c.Tokens = map[string]string{tid: "nope"} })
	if _, err := wrong.Join(ctxT(t), tid, &logHandler{}); !errors.Is(err, transport.ErrDenied) || !strings.Contains(err.Error(), "wrong token") {
		t.Fatalf("join by ID with a wrong token: %v", err)
	}
	// The token works under either key.
	good := dialClient(t, addr, func(c *ClientConfig) { c.Tokens = map[string]string{tid: "tok", "v": "vtok"} })
	m, err := good.Join(ctxT(t), tid, &logHandler{})
	if err != nil {
		t.Fatalf("join by ID with the token: %v", err)
	}
	if _, err := m.Publish(ctxT(t), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := good.Join(ctxT(t), "v", &logHandler{}); err != nil {
		t.Fatalf("join by name with the token listed under the ID: %v", err)
	}
	// Channels without a token stay open.
	if _, err := anon.Join(ctxT(t), "open", &logHandler{}); err != nil {
		t.Fatalf("join of an open channel: %v", err)
	}
}

func channelNames(infos []transport.ChannelInfo) string {
	names := make([]string, 0, len(infos))
	for _, in := range infos {
		names = append(names, in.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func listNames(t *testing.T, c *Client) string {
	t.Helper()
	list, err := c.Channels(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return channelNames(list)
}

// nextChange waits for the next channel change notification.
func nextChange(t *testing.T, changes <-chan ChannelChange) ChannelChange {
	t.Helper()
	select {
	case ch := <-changes:
		return ch
	case <-time.After(10 * time.Second):
		t.Fatal("no channel change notification")
		return ChannelChange{}
	}
}

// TestListShowsJoinableChannels: on a relay with a secret and tokens, a
// client without the secret lists, and hears of, only the token channels it
// joined with their token; the secret's holder sees every channel.
func TestListShowsJoinableChannels(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true, Secret: "s3cret",
		Tokens:   map[string]string{"t": "tok", "u": "utok", "later": "ltok"},
		Channels: []transport.ChannelInfo{{Name: "t"}, {Name: "u"}, {Name: "plain"}}})
	addr := s.Addr().String()
	admin := dialClient(t, addr, func(c *ClientConfig) { c.Secret = "s3cret" })
	tc := dialClient(t, addr, func(c *ClientConfig) { c.Tokens = map[string]string{"t": "tok"} })
	if got := listNames(t, admin); got != "plain,t,u" {
		t.Fatalf("the secret's holder lists %q", got)
	}
	if got := listNames(t, tc); got != "" {
		t.Fatalf("a client without the secret lists %q before joining anything", got)
	}
	if _, err := tc.Join(ctxT(t), "t", &logHandler{}); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, tc); got != "t" {
		t.Fatalf("a client without the secret lists %q after joining t with its token", got)
	}
	changes, stop := tc.Watch()
	defer stop()
	adminChanges, stopAdmin := admin.Watch()
	defer stopAdmin()
	for _, name := range []string{"fresh", "later"} {
		if err := admin.CreateChannel(ctxT(t), transport.ChannelInfo{Name: name}); err != nil {
			t.Fatal(err)
		}
		if ch := nextChange(t, adminChanges); ch.Kind != ChannelAdded || ch.Info.Name != name {
			t.Fatalf("the secret's holder heard %v %q, want %q added", ch.Kind, ch.Info.Name, name)
		}
	}
	if err := admin.RemoveChannel(ctxT(t), "t"); err != nil {
		t.Fatal(err)
	}
	// Notifications come in order: the first tc hears of is t's removal.
	if ch := nextChange(t, changes); ch.Kind != ChannelRemoved || ch.Info.Name != "t" {
		t.Fatalf("a client without the secret heard %v %q first, want t removed", ch.Kind, ch.Info.Name)
	}
}

// TestListWithoutSecret: on a relay with tokens and no secret, every client
// lists and hears of the channels without a token, and a token channel
// only once it joined it with its token.
func TestListWithoutSecret(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true,
		Tokens:   map[string]string{"t": "tok", "later": "ltok"},
		Channels: []transport.ChannelInfo{{Name: "t"}, {Name: "open"}}})
	addr := s.Addr().String()
	anon := dialClient(t, addr)
	tc := dialClient(t, addr, func(c *ClientConfig) { c.Tokens = map[string]string{"t": "tok"} })
	if got := listNames(t, anon); got != "open" {
		t.Fatalf("a client without tokens lists %q", got)
	}
	if _, err := tc.Join(ctxT(t), "t", &logHandler{}); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, tc); got != "open,t" {
		t.Fatalf("the token's holder lists %q after joining t", got)
	}
	changes, stop := anon.Watch()
	defer stop()
	if err := s.CreateChannel(transport.ChannelInfo{Name: "later"}); err != nil {
		t.Fatal(err)
	}
	if err := anon.CreateChannel(ctxT(t), transport.ChannelInfo{Name: "more"}); err != nil {
		t.Fatal(err)
	}
	if ch := nextChange(t, changes); ch.Kind != ChannelAdded || ch.Info.Name != "more" {
		t.Fatalf("a client without tokens heard %v %q first, want more added", ch.Kind, ch.Info.Name)
	}
}

// TestListWithoutTokens: a relay without tokens shows every channel to
// every client.
func TestListWithoutTokens(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true, Channels: []transport.ChannelInfo{{Name: "a"}, {Name: "b"}}})
	c := dialClient(t, s.Addr().String())
	changes, stop := c.Watch()
	defer stop()
	if got := listNames(t, c); got != "a,b" {
		t.Fatalf("lists %q", got)
	}
	if err := s.CreateChannel(transport.ChannelInfo{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	if ch := nextChange(t, changes); ch.Kind != ChannelAdded || ch.Info.Name != "c" {
		t.Fatalf("heard %v %q, want c added", ch.Kind, ch.Info.Name)
	}
}

// rawConn is a connection that speaks the relay protocol frame by frame,
// to send what the real client never would.
type rawConn struct {
	t  *testing.T
	nc net.Conn
}

func dialRaw(t *testing.T, addr, id string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &rawConn{t: t, nc: nc}
	r.send(tHello, func(b []byte) []byte {
		b = append(b, magic[:]...)
		b = putU16(putU16(b, ProtocolVersionMin), ProtocolVersionMax)
		return putStr(putStr(putStr(b, id), "raw "+id), "")
	})
	if typ, _ := r.next(); typ != tWelcome {
		t.Fatalf("got a %s frame, want welcome", frameName(typ))
	}
	return r
}

func (r *rawConn) send(typ byte, fn func(b []byte) []byte) error {
	b, off := beginFrame(nil, typ)
	b = endFrame(fn(b), off)
	r.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := r.nc.Write(b)
	return err
}

// next reads one frame; a type of 0 means the connection ended.
func (r *rawConn) next() (byte, []byte) {
	r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(r.nc, hdr[:]); err != nil {
		return 0, nil
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(r.nc, body); err != nil || len(body) == 0 {
		return 0, nil
	}
	return body[0], body[1:]
}

// await reads frames until one of type typ, failing on the end of the
// connection.
func (r *rawConn) await(typ byte) []byte {
	r.t.Helper()
	for {
		got, body := r.next()
		if got == 0 {
			r.t.Fatalf("connection ended while waiting for a %s frame", frameName(typ))
		}
		if got == typ {
			return body
		}
	}
}

// awaitAll reads frames until it has seen one of each of types, in any
// order.
func (r *rawConn) awaitAll(types ...byte) {
	r.t.Helper()
	want := map[byte]bool{}
	for _, typ := range types {
		want[typ] = true
	}
	for len(want) > 0 {
		got, _ := r.next()
		if got == 0 {
			r.t.Fatalf("connection ended while waiting for %d more frames", len(want))
		}
		delete(want, got)
	}
}

// expectClosed reads until the relay closes the connection and returns
// the code of the error frame it sent before.
func (r *rawConn) expectClosed() (Code, string) {
	r.t.Helper()
	var code Code
	var msg string
	for {
		typ, body := r.next()
		switch typ {
		case 0:
			var ne net.Error
			if _, err := r.nc.Read(make([]byte, 1)); errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatal("the relay did not close the connection")
			}
			return code, msg
		case tError:
			d := dec{b: body}
			d.u64()
			code, msg = Code(d.u16()), d.str()
		}
	}
}

// awaitJoin waits for a join started in another goroutine.
func awaitJoin(t *testing.T, joined <-chan error) error {
	t.Helper()
	select {
	case err := <-joined:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("join did not complete")
		return nil
	}
}

func (r *rawConn) ckptData(name string, id, seq, total uint64, flags byte, chunk []byte) error {
	return r.send(tCkptData, func(b []byte) []byte {
		return putBytes(putU8(putU64(putU64(putU64(putStr(b, name), id), seq), total), flags), chunk)
	})
}

// TestUnrequestedCheckpointRefused: checkpoint data for a request the
// relay never sent to that connection is a protocol error that closes that
// connection (nothing is kept); the relay goes on serving the others.
func TestUnrequestedCheckpointRefused(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true})
	addr := s.Addr().String()
	good := dialClient(t, addr)
	h := &logHandler{}
	m, err := good.Join(ctxT(t), "c", h)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, chunkSize)
	for _, tc := range []struct {
		name string
		id   uint64
	}{{"never sent", 1 << 40}, {"zero", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, addr, "forger-"+tc.name)
			// The first chunk of a checkpoint announced at the limit. One
			// frame only: the relay reads it whole, so its close is not a
			// reset that could swallow the error frame.
			if err := r.ckptData("c", tc.id, 1, uint64(s.cfg.MaxCheckpoint), 0, chunk); err != nil {
				t.Fatal(err)
			}
			code, msg := r.expectClosed()
			if code != CodeProtocol || !strings.Contains(msg, "did not send") {
				t.Fatalf("error %v %q, want a protocol error about a request never sent", code, msg)
			}
			if _, err := m.Publish(ctxT(t), []byte("still served")); err != nil {
				t.Fatalf("the relay stopped serving others: %v", err)
			}
		})
	}
	// A request sent to another connection is not this one's to answer.
	donor := dialRaw(t, addr, "donor")
	donor.send(tJoin, func(b []byte) []byte {
		return putU64(putU64(putU8(putStr(putStr(putU64(b, 1), "c"), ""), 0), 0), 0)
	})
	donor.awaitAll(tJoined, tState) // the state may overtake the answer
	// The donor is now the only synced member besides good; make it the
	// most up to date by having good fall out: a new joiner then asks it.
	if err := m.Leave(); err != nil {
		t.Fatal(err)
	}
	joiner := dialClient(t, addr)
	joined := make(chan error, 1)
	go func() {
		_, err := joiner.Join(ctxT(t), "c", &logHandler{})
		joined <- err
	}()
	d := dec{b: donor.await(tCkptReq)}
	name, id := d.str(), d.u64()
	other := dialRaw(t, addr, "other")
	other.ckptData(name, id, 0, 0, chunkLast, nil)
	if code, msg := other.expectClosed(); code != CodeProtocol || !strings.Contains(msg, "did not send") {
		t.Fatalf("answer to another connection's request: error %v %q", code, msg)
	}
	// The donor's own answer (it has none to give) is taken, once.
	if err := donor.ckptData(name, id, 0, 0, chunkFailed|chunkLast, nil); err != nil {
		t.Fatal(err)
	}
	if err := awaitJoin(t, joined); err != nil {
		t.Fatalf("join served after the donor's answer: %v", err)
	}
	donor.ckptData(name, id, 0, 0, chunkFailed|chunkLast, nil)
	if code, msg := donor.expectClosed(); code != CodeProtocol || !strings.Contains(msg, "answered already") {
		t.Fatalf("second answer to one request: error %v %q", code, msg)
	}
}

// TestLateCheckpointAnswer: an answer that comes after the relay stopped
// waiting for it is dropped, not refused: the member keeps its connection.
func TestLateCheckpointAnswer(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true, CheckpointTimeout: 100 * time.Millisecond})
	addr := s.Addr().String()
	donor := dialRaw(t, addr, "donor")
	donor.send(tJoin, func(b []byte) []byte {
		return putU64(putU64(putU8(putStr(putStr(putU64(b, 1), "c"), ""), 0), 0), 0)
	})
	donor.awaitAll(tJoined, tState) // the state may overtake the answer
	joiner := dialClient(t, addr)
	joined := make(chan error, 1)
	go func() {
		_, err := joiner.Join(ctxT(t), "c", &logHandler{})
		joined <- err
	}()
	d := dec{b: donor.await(tCkptReq)}
	name, id := d.str(), d.u64()
	// The relay gives up on the donor and serves the joiner itself.
	if err := awaitJoin(t, joined); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 3*chunkSize/2)
	donor.ckptData(name, id, 0, uint64(len(data)), 0, data[:chunkSize])
	donor.ckptData(name, id, 0, uint64(len(data)), chunkLast, data[chunkSize:])
	donor.send(tPing, func(b []byte) []byte { return putU64(b, 77) })
	if d := (dec{b: donor.await(tPong)}); d.u64() != 77 {
		t.Fatal("wrong pong")
	}
}

// TestMaxEventLimit: NewServer refuses a largest event the handshake
// cannot carry in 32 bits, and says the limit.
func TestMaxEventLimit(t *testing.T) {
	for _, n := range []int64{1 << 32, MaxEventLimit + 1, 1 << 40} {
		s, err := NewServer(ServerConfig{Listen: "127.0.0.1:0", MaxEvent: int(n), Logger: testLogger()})
		if err == nil {
			s.Close()
			t.Fatalf("MaxEvent %d accepted", n)
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), fmt.Sprint(MaxEventLimit)) {
			t.Fatalf("MaxEvent %d: %v", n, err)
		}
	}
	s, err := NewServer(ServerConfig{Listen: "127.0.0.1:0", MaxEvent: int(MaxEventLimit), Logger: testLogger()})
	if err != nil {
		t.Fatalf("MaxEvent at the limit: %v", err)
	}
	s.Close()
}

// syncBuffer is a bytes.Buffer for a logger shared by goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestEpochLogged: a relay says at start whether it begins a new history
// (in memory always, durable on a new data directory) or continues one,
// with the epoch clients see.
func TestEpochLogged(t *testing.T) {
	start := func(dir string) (*Server, string) {
		var buf syncBuffer
		s := startServer(t, ServerConfig{DataDir: dir, NoSync: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
		s.Close()
		return s, buf.String()
	}
	for i := 0; i < 2; i++ {
		s, logs := start("")
		if !strings.Contains(logs, "new history (epoch "+epochString(s.Epoch())+")") || !strings.Contains(logs, "in memory") {
			t.Fatalf("in-memory start %d logged:\n%s", i, logs)
		}
	}
	dir := t.TempDir()
	s1, logs := start(dir)
	if !strings.Contains(logs, "new history (epoch "+epochString(s1.Epoch())+")") {
		t.Fatalf("first durable start logged:\n%s", logs)
	}
	s2, logs := start(dir)
	if s2.Epoch() != s1.Epoch() || !strings.Contains(logs, "continuing the history (epoch "+epochString(s1.Epoch())+")") || strings.Contains(logs, "new history") {
		t.Fatalf("second durable start (epoch %x, was %x) logged:\n%s", s2.Epoch(), s1.Epoch(), logs)
	}
}

// TestJoinMissingTokenChannel: a client with a channel's token but not the
// secret, joining that channel before it exists, is told that a token does
// not create channels, not to allow channel creation (already allowed).
func TestJoinMissingTokenChannel(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true, Secret: "s3cret", Tokens: map[string]string{"ghost": "g"}})
	c := dialClient(t, s.Addr().String(), func(c *ClientConfig) { c.Tokens = map[string]string{"ghost": "g"} })
	_, err := c.Join(ctxT(t), "ghost", &logHandler{})
	var re *Error
	if !errors.As(err, &re) || re.Code != CodeNoChannel {
		t.Fatalf("join of a missing token channel: %v", err)
	}
	if strings.Contains(re.Msg, "creation allowed") || !strings.Contains(re.Msg, "token") || !strings.Contains(re.Msg, "secret") {
		t.Fatalf("misleading message: %q", re.Msg)
	}
	// With the secret, the same join creates the channel.
	admin := dialClient(t, s.Addr().String(), func(c *ClientConfig) { c.Secret = "s3cret" })
	if _, err := admin.Join(ctxT(t), "ghost", &logHandler{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join(ctxT(t), "ghost", &logHandler{}); err != nil {
		t.Fatalf("join with the token once the channel exists: %v", err)
	}
}
