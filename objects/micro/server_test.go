package micro

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestObjectTokenVerify(t *testing.T) {
	k := mustKeys(t)
	home := netip.MustParseAddrPort("127.0.0.1:4750")
	o, err := NewObject(k, home, time.Now().Add(time.Hour), []byte("news"))
	if err != nil {
		t.Fatal(err)
	}
	tok := o.Token()
	if tok.Home() != home || tok.Expire().UnixMilli() != o.Expire.UnixMilli() {
		t.Fatalf("token fields: %v %v", tok.Home(), tok.Expire())
	}
	p, err := ParseToken(tok.String())
	if err != nil || p != tok {
		t.Fatalf("parse: %v", err)
	}
	if err := o.Verify(tok); err != nil {
		t.Fatal(err)
	}
	b, _ := o.MarshalBinary()
	var o2 Object
	if err := o2.UnmarshalBinary(b); err != nil || o2.Verify(tok) != nil {
		t.Fatalf("roundtrip: %v", err)
	}
	pl, err := o2.Open(k)
	if err != nil || string(pl) != "news" {
		t.Fatalf("open: %q %v", pl, err)
	}
	if _, err := o2.Open(mustKeys(t)); !errors.Is(err, ErrBadKeys) {
		t.Fatalf("open with other keys: %v", err)
	}
	o2.Payload[len(o2.Payload)-1] ^= 1
	if err := o2.Verify(tok); !errors.Is(err, ErrBadObject) {
		t.Fatalf("tampered payload verified: %v", err)
	}
	if bytes.Contains(o.Payload, []byte("news")) {
		t.Fatal("payload stored in the clear")
	}
	for _, bad := range []string{"", "abc", tok.String()[:78] + "!"} {
		if _, err := ParseToken(bad); !errors.Is(err, ErrBadToken) {
			t.Fatalf("ParseToken(%q) = %v", bad, err)
		}
	}
	e := NewEntry(k, tok, tok)
	if err := VerifyEntry(o, tok, e); err != nil {
		t.Fatal(err)
	}
	e2 := NewEntry(mustKeys(t), tok, tok)
	if err := VerifyEntry(o, tok, e2); !errors.Is(err, ErrBadEntry) {
		t.Fatalf("foreign entry verified: %v", err)
	}
}

func TestFetchAndCopy(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	a := startServer(t, nil)
	b := startServer(t, nil)
	la := newLib(t, a, keys)
	lb := newLib(t, b, keys)
	m, err := la.CreateNew(ctx, time.Now().Add(time.Hour), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Has(m.Token()) != InStore {
		t.Fatal("home object not in store")
	}
	n1, _ := la.CreateNew(ctx, time.Now().Add(time.Hour), []byte("n1"))
	if err := m.Add(ctx, n1.Token()); err != nil {
		t.Fatal(err)
	}
	c, err := lb.CreateCopy(ctx, m.Token())
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Payload()) != "hello" || b.Has(m.Token()) != InCache {
		t.Fatalf("copy: %q where=%v", c.Payload(), b.Has(m.Token()))
	}
	ts, err := c.Cluster(ctx)
	if err != nil || len(ts) != 1 || ts[0] != n1.Token() {
		t.Fatalf("copied cluster %v %v", ts, err)
	}
	if a.Stats().FetchesServed != 1 {
		t.Fatalf("fetches served %d", a.Stats().FetchesServed)
	}
	// Second get is local.
	if _, err := lb.Get(ctx, m.Token()); err != nil || a.Stats().FetchesServed != 1 {
		t.Fatalf("second get: %v, served %d", err, a.Stats().FetchesServed)
	}
	// Wrong keys cannot open the payload.
	lc := newLib(t, b, mustKeys(t))
	if _, err := lc.Get(ctx, m.Token()); !errors.Is(err, ErrBadKeys) {
		t.Fatalf("get with other keys: %v", err)
	}
	// An unknown token is not found.
	o, _ := NewObject(keys, a.PeerAddr(), time.Now().Add(time.Hour), []byte("never adopted"))
	if _, err := lb.Get(ctx, o.Token()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	// Foreign entries are refused by UPDATE.
	if _, err := b.Update(ctx, m.Token(), []Entry{NewEntry(mustKeys(t), m.Token(), n1.Token())}); !errors.Is(err, ErrBadEntry) {
		t.Fatalf("foreign entry: %v", err)
	}
}

func TestWaitTrackerCallback(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	a := startServer(t, nil)
	lib := newLib(t, a, keys)
	m, _ := lib.CreateNew(ctx, time.Now().Add(time.Hour), nil)
	old, _ := lib.CreateNew(ctx, time.Now().Add(time.Hour), []byte("old"))
	m.Add(ctx, old.Token())
	cur, _ := m.Cluster(ctx)
	tr := NewTracker(cur...)
	if _, ok, err := m.TryWait(tr, 50*time.Millisecond); ok || err != nil {
		t.Fatalf("try-wait with nothing new: %v %v", ok, err)
	}
	all := NewTracker()
	got := make(chan Token, 10)
	stop := m.OnNew(NewTracker(), func(t Token) { got <- t })
	defer stop()
	if tk, err := m.Wait(ctx, all); err != nil || tk != old.Token() {
		t.Fatalf("wait with empty tracker: %v", err)
	}
	nw, _ := lib.CreateNew(ctx, time.Now().Add(2*time.Hour), []byte("new"))
	go func() {
		time.Sleep(30 * time.Millisecond)
		m.Add(context.Background(), nw.Token())
	}()
	tk, ok, err := m.TryWait(tr, 5*time.Second)
	if err != nil || !ok || tk != nw.Token() {
		t.Fatalf("try-wait: %v %v", ok, err)
	}
	seen := map[Token]bool{}
	for len(seen) < 2 {
		select {
		case tk := <-got:
			seen[tk] = true
		case <-ctx.Done():
			t.Fatal("callback did not see both tokens")
		}
	}
	stop()
	stop2 := m.OnNew(NewTracker(), func(Token) {})
	lib.Close() // stops the callback goroutine
	stop2()
}

func TestLocalSocketClient(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	a := startServer(t, nil)
	lc, err := DialLocal(ctx, a.LocalSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	lib := newLib(t, lc, keys)
	m, err := lib.CreateNew(ctx, time.Now().Add(time.Hour), []byte("via socket"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := lib.CreateNew(ctx, time.Now().Add(time.Hour), []byte("child"))
	if err := m.Add(ctx, c.Token()); err != nil {
		t.Fatal(err)
	}
	if err := m.PutReplication(ctx, Policy{Kind: Flooding, Level: 2}); err != nil {
		t.Fatal(err)
	}
	sh, err := lc.Shared(ctx)
	if err != nil || len(sh) != 1 || sh[0].Flood != 2 {
		t.Fatalf("shared %+v %v", sh, err)
	}
	g, err := lib.Get(ctx, m.Token())
	if err != nil || string(g.Payload()) != "via socket" {
		t.Fatalf("get %v", err)
	}
	tk, ok, err := g.TryWait(NewTracker(), time.Second)
	if err != nil || !ok || tk != c.Token() {
		t.Fatalf("try-wait over socket: %v %v", ok, err)
	}
	if _, err := lc.Update(ctx, m.Token(), []Entry{{Token: c.Token()}}); !errors.Is(err, ErrBadEntry) {
		t.Fatalf("bad entry over socket: %v", err)
	}
	if err := lc.Replicate(ctx, m.Token(), Policy{Kind: Flooding, Level: 99}); !errors.Is(err, ErrBadPolicy) {
		t.Fatalf("bad policy: %v", err)
	}
}

func TestBusyDitto(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	a := startServer(t, nil)
	b := startServer(t, nil)
	c := startServer(t, nil)
	la := newLib(t, a, keys)
	m, _ := la.CreateNew(ctx, time.Now().Add(time.Hour), []byte("hot"))
	if _, err := newLib(t, b, keys).Get(ctx, m.Token()); err != nil {
		t.Fatal(err)
	}
	a.forceBusy.Store(true)
	g, err := newLib(t, c, keys).Get(ctx, m.Token())
	if err != nil || string(g.Payload()) != "hot" {
		t.Fatalf("re-routed get: %v", err)
	}
	if a.Stats().Busy != 1 || b.Stats().FetchesServed != 1 {
		t.Fatalf("busy=%d served by b=%d", a.Stats().Busy, b.Stats().FetchesServed)
	}
}

func TestCacheEviction(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	a := startServer(t, nil)
	b := startServer(t, func(c *ServerConfig) { c.CacheBytes = 10 << 10 })
	la, lb := newLib(t, a, keys), newLib(t, b, keys)
	var toks []Token
	for i := 0; i < 20; i++ {
		m, err := la.CreateNew(ctx, time.Now().Add(time.Hour), bytes.Repeat([]byte{byte(i)}, 1000))
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, m.Token())
	}
	for i, tk := range toks {
		if _, err := lb.Get(ctx, tk); err != nil {
			t.Fatal(err)
		}
		if i == 5 { // keep toks[0] recently used
			lb.Get(ctx, toks[0])
		}
		if b.CacheBytes() > 10<<10 {
			t.Fatalf("cache holds %d bytes, bound %d", b.CacheBytes(), 10<<10)
		}
	}
	if b.Has(toks[1]) != Nowhere || b.Has(toks[19]) != InCache {
		t.Fatalf("LRU order: first=%v last=%v", b.Has(toks[1]), b.Has(toks[19]))
	}
	if b.CacheBytes() < 8<<10 {
		t.Fatalf("cache evicted too much: %d", b.CacheBytes())
	}
	// Evicted objects are fetched again from home.
	if _, err := lb.Get(ctx, toks[1]); err != nil || b.Has(toks[1]) != InCache {
		t.Fatalf("refetch: %v", err)
	}
}

func TestExpiryGraceSustain(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	clk := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := startServer(t, func(c *ServerConfig) {
		c.Clock = clk.Now
		c.Grace = time.Minute
		c.SweepInterval = -1
		c.MaxSustain = 24 * time.Hour
	})
	lib := newLib(t, a, keys)
	plain, _ := lib.CreateNew(ctx, clk.Now().Add(time.Hour), []byte("plain"))
	kept, _ := lib.CreateNew(ctx, clk.Now().Add(time.Hour), []byte("sustained"))
	if err := kept.PutReplication(ctx, Policy{Kind: Sustain, For: 3 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := lib.CreateNew(ctx, clk.Now().Add(-time.Second), nil); !errors.Is(err, ErrExpired) {
		t.Fatalf("adopt expired: %v", err)
	}
	clk.Advance(time.Hour + 30*time.Second) // past expiry, within grace
	if n, _ := a.Sweep(); n != 0 || a.Has(plain.Token()) != InStore {
		t.Fatalf("removed within grace: %d", n)
	}
	clk.Advance(time.Minute) // past grace
	if n, _ := a.Sweep(); n != 1 || a.Has(plain.Token()) != Nowhere || a.Has(kept.Token()) != InStore {
		t.Fatalf("after grace: removed %d, plain %v kept %v", n, a.Has(plain.Token()), a.Has(kept.Token()))
	}
	clk.Advance(time.Hour) // renew before the sustain runs out
	if err := kept.PutReplication(ctx, Policy{Kind: Sustain, For: 3 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(150 * time.Minute)
	if n, _ := a.Sweep(); n != 0 {
		t.Fatal("renewed sustain not honoured")
	}
	clk.Advance(time.Hour)
	if n, _ := a.Sweep(); n != 1 || a.Has(kept.Token()) != Nowhere {
		t.Fatalf("sustain end: removed %d", n)
	}
	// A sustain request is capped by MaxSustain.
	long, _ := lib.CreateNew(ctx, clk.Now().Add(time.Minute), nil)
	long.PutReplication(ctx, Policy{Kind: Sustain, For: 1000 * time.Hour})
	clk.Advance(25 * time.Hour)
	if n, _ := a.Sweep(); n != 1 {
		t.Fatal("sustain not capped")
	}
}

func TestRestartKeepsStore(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	dir := t.TempDir()
	a := startServer(t, func(c *ServerConfig) { c.DataDir = dir })
	addr := a.Addr().String()
	lib := NewLib(a, keys)
	m, _ := lib.CreateNew(ctx, time.Now().Add(time.Hour), []byte("durable"))
	n, _ := lib.CreateNew(ctx, time.Now().Add(time.Hour), []byte("child"))
	m.Add(ctx, n.Token())
	m.PutReplication(ctx, Policy{Kind: Flooding, Level: 1})
	// c keeps an idle connection to a across the restart.
	c := startServer(t, nil)
	lcc := newLib(t, c, keys)
	if _, err := lcc.Get(ctx, m.Token()); err != nil {
		t.Fatal(err)
	}
	lib.Close()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	a2 := startServer(t, func(c *ServerConfig) { c.DataDir = dir; c.Listen = addr })
	bdir := t.TempDir()
	b := startServer(t, func(c *ServerConfig) { c.DataDir = bdir })
	g, err := newLib(t, b, keys).CreateCopy(ctx, m.Token())
	if err != nil || string(g.Payload()) != "durable" {
		t.Fatalf("after restart: %v", err)
	}
	if g, err := lcc.Get(ctx, n.Token()); err != nil || string(g.Payload()) != "child" {
		t.Fatalf("fetch over a connection from before the restart: %v", err)
	}
	cached := b.CacheBytes()
	b.Close()
	b = startServer(t, func(c *ServerConfig) { c.DataDir = bdir })
	if b.Has(m.Token()) != InCache || b.CacheBytes() != cached || cached == 0 {
		t.Fatalf("cache lost in restart: %v %d/%d", b.Has(m.Token()), b.CacheBytes(), cached)
	}
	if err := clusterHas(ctx, a2, m.Token(), n.Token()); err != nil {
		t.Fatal(err)
	}
	if sh, _ := a2.Shared(ctx); len(sh) != 1 || sh[0].Flood != 1 {
		t.Fatalf("policy lost: %+v", sh)
	}
}

// lyingPeer answers every FETCH with answer(token).
func lyingPeer(t *testing.T, answer func(tok Token) (uint8, []byte)) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				f, err := readFrame(c, 1024)
				if err != nil {
					return
				}
				writeFrame(c, msgHelloAck, f.id, helloAck{version: 1}.encode())
				for {
					f, err := readFrame(c, MaxFrame)
					if err != nil {
						return
					}
					tok, _ := TokenFromBytes(f.body)
					typ, body := answer(tok)
					if typ == 0 {
						var h [9]byte
						h[0] = msgObject
						copy(h[1:5], []byte{0, 0, 0, byte(f.id)})
						copy(h[5:9], []byte{0xff, 0xff, 0xff, 0xff}) // oversized frame
						c.Write(h[:])
						return
					}
					writeFrame(c, typ, f.id, body)
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestLyingPeerRejected(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	b := startServer(t, nil)
	lb := newLib(t, b, keys)
	var liar netip.AddrPort
	var realObj *Object
	mode := "hash"
	other, _ := NewObject(keys, netip.MustParseAddrPort("127.0.0.1:9"), time.Now().Add(time.Hour), []byte("other"))
	liar = lyingPeer(t, func(tok Token) (uint8, []byte) {
		switch mode {
		case "hash": // the right header but a changed payload
			o, _ := NewObject(keys, liar, tok.Expire(), []byte("forged"))
			return msgObject, o.appendTo(nil)
		case "swap": // a valid object, but another one
			return msgObject, other.appendTo(nil)
		case "garbage":
			return msgObject, []byte("not an object")
		case "sig": // the real object with a forged signature
			o := *realObj
			o.Sig[0] ^= 1
			return msgObject, o.appendTo(nil)
		}
		return 0, nil // oversized frame
	})
	real, _ := NewObject(keys, liar, time.Now().Add(time.Hour), []byte("real"))
	realObj = real
	for _, m := range []string{"hash", "swap", "garbage", "sig", "oversized"} {
		mode = m
		before := b.Stats().Rejected
		_, err := lb.Get(ctx, real.Token())
		if err == nil {
			t.Fatalf("%s: bogus object accepted", m)
		}
		if m != "oversized" && b.Stats().Rejected != before+1 {
			t.Fatalf("%s: not counted (%v)", m, err)
		}
		if m == "oversized" && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("oversized: %v", err)
		}
		if b.Has(real.Token()) != Nowhere {
			t.Fatalf("%s: bogus object cached", m)
		}
	}
	// The server keeps serving, also after raw garbage on its own port.
	c, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{msgHello, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.Read(buf)
	c.Close()
	la := newLib(t, startServer(t, nil), keys)
	m, _ := la.CreateNew(ctx, time.Now().Add(time.Hour), []byte("fine"))
	if g, err := lb.Get(ctx, m.Token()); err != nil || string(g.Payload()) != "fine" {
		t.Fatalf("server stopped serving: %v", err)
	}
	if b.Stats().BadFrames == 0 {
		t.Fatal("bad frame not counted")
	}
}

// TestNoStoreWithoutCooperation pushes objects and cluster items at a
// server over the wire: without a matching policy it takes nothing, and
// with one it still rejects entries not signed by the writer key.
func TestNoStoreWithoutCooperation(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	a := startServer(t, nil)
	lib := newLib(t, a, keys)
	m, _ := lib.CreateNew(ctx, time.Now().Add(time.Hour), []byte("root"))
	child, _ := NewObject(keys, netip.MustParseAddrPort("127.0.0.1:9"), time.Now().Add(time.Hour), []byte("pushed"))
	p := newPool(func() netip.AddrPort { return netip.MustParseAddrPort("127.0.0.2:9") })
	defer p.close()
	peer := a.PeerAddr()
	good := NewEntry(keys, m.Token(), child.Token())
	bogus := NewEntry(mustKeys(t), m.Token(), m.Token())
	assent := func(es ...Entry) assentReply {
		t.Helper()
		msg := encodeRecon([]rrange{{mode: modeItems, items: es}})
		f, err := p.call(ctx, peer, msgAssent, assentMsg{root: m.Token(), obj: m.Token(), flags: assentFlooding, recon: msg}.encode())
		if err != nil {
			t.Fatal(err)
		}
		rep, err := decodeAssentReply(f.body)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := assent(good); rep.accepted || a.st.clusterLen(m.Token()) != 0 {
		t.Fatal("item taken without a flooding policy")
	}
	if f, err := p.call(ctx, peer, msgPush, pushMsg{root: m.Token(), objs: []*Object{child}}.encode()); err != nil || f.body[1] != 0 || a.Has(child.Token()) != Nowhere {
		t.Fatalf("object pushed without a policy: %v", err)
	}
	if err := a.Replicate(ctx, m.Token(), Policy{Kind: Flooding, Level: 1}); err != nil {
		t.Fatal(err)
	}
	before := a.Stats().Rejected
	if rep := assent(good, bogus); !rep.accepted {
		t.Fatal("not accepted with a policy")
	}
	if err := clusterHas(ctx, a, m.Token(), child.Token()); err != nil || a.st.clusterLen(m.Token()) != 1 {
		t.Fatalf("cluster after assent: %v, %d members", err, a.st.clusterLen(m.Token()))
	}
	if a.Stats().Rejected != before+1 {
		t.Fatal("bogus entry not counted")
	}
	// Now child is in the cluster and the level is 1: a push is taken.
	if f, err := p.call(ctx, peer, msgPush, pushMsg{root: m.Token(), objs: []*Object{child}}.encode()); err != nil || f.body[1] != 1 || a.Has(child.Token()) != InCache {
		t.Fatalf("push with policy: %v", err)
	}
	// A peer claiming another address is not learned.
	if sh, _ := a.Shared(ctx); len(sh) != 1 || len(sh[0].Peers) != 0 {
		t.Fatalf("peers %v", sh)
	}
}
