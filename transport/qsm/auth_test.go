package qsm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testKey(t testing.TB) []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// TestDatagramAuth: a keyed datagram opens with its key only; one that
// lost its tag, was changed (with its checksum made good again), or
// comes without a tag to a keyed node fails with ErrAuth, never as a
// parsed packet.
func TestDatagramAuth(t *testing.T) {
	key := testKey(t)
	a := newDgAuth(key)
	plain := sampleData()
	p0, err := parseDatagram(plain, netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	keyed := a.seal(bytes.Clone(plain))
	if len(keyed) != len(plain)+tagSize || keyed[3]&dgAuthFlag == 0 {
		t.Fatalf("sealed datagram of %d bytes (plain %d), type byte %#x", len(keyed), len(plain), keyed[3])
	}
	p, err := parseDatagramInto(keyed, netip.AddrPort{}, newDgAuth(key), nil, nil)
	if err != nil {
		t.Fatalf("keyed datagram with its key: %v", err)
	}
	if p.hdr != p0.hdr || p.data == nil || len(p.data.Msgs) != len(p0.data.Msgs) || !bytes.Equal(p.data.Msgs[0].Data, p0.data.Msgs[0].Data) {
		t.Fatalf("keyed datagram parsed as %+v, plain as %+v", p.hdr, p0.hdr)
	}
	changed := bytes.Clone(keyed)
	changed[len(changed)-tagSize-1] ^= 1 // last payload byte
	sealDatagram(changed)                // a forger can make the checksum good
	stripped := bytes.Clone(keyed[:len(keyed)-tagSize])
	stripped[3] &^= dgAuthFlag
	sealDatagram(stripped)
	otherKey := newDgAuth(testKey(t)).seal(bytes.Clone(plain))
	cut := bytes.Clone(keyed[:dgHeaderSize+tagSize-1])
	sealDatagram(cut)
	for _, c := range []struct {
		name string
		b    []byte
		a    *dgAuth
		want error
	}{
		{"no key at the receiver", keyed, nil, errNoKey},
		{"another key", otherKey, newDgAuth(key), errBadTag},
		{"changed payload", changed, newDgAuth(key), errBadTag},
		{"tag stripped", stripped, newDgAuth(key), errUnauthenticated},
		{"plain datagram to a keyed node", plain, newDgAuth(key), errUnauthenticated},
		{"shorter than a header and a tag", cut, newDgAuth(key), ErrTruncated},
	} {
		_, err := parseDatagramInto(c.b, netip.AddrPort{}, c.a, nil, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// Noise is still noise: a flipped bit fails the checksum first.
	noisy := bytes.Clone(keyed)
	noisy[dgHeaderSize] ^= 4
	if _, err := parseDatagramInto(noisy, netip.AddrPort{}, newDgAuth(key), nil, nil); !errors.Is(err, ErrChecksum) {
		t.Errorf("noisy keyed datagram: %v, want %v", err, ErrChecksum)
	}
}

// TestKeyedClusterDelivers: with a key on every node, events go through
// with loss (so repairs, tokens and acks are all tagged) and nothing is
// refused; a datagram forged from the sender's own socket with a good
// checksum but no tag is counted and its event never delivered.
func TestKeyedClusterDelivers(t *testing.T) {
	cfg := testConfig(t)
	cfg.Key = testKey(t)
	cl := newCluster(t, cfg, 3)
	ctx := context.Background()
	sender := cl.svcs[0]
	pub, err := dial(t, sender.Addr()).JoinMember(ctx, "g", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	recs := []*recorder{newRecorder(true), newRecorder(true)}
	for i, r := range recs {
		if _, err := dial(t, cl.svcs[i+1].Addr()).JoinMember(ctx, "g", r); err != nil {
			t.Fatal(err)
		}
	}
	waitGroupView(t, cl, "g", 3)
	for _, s := range cl.svcs[1:] {
		s.SetDropRate(0.1)
	}
	const n = 2000
	for i := 0; i < n; i++ {
		if _, err := pub.Publish(ctx, []byte(fmt.Sprintf("event %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range recs {
		r.waitCount(t, n, 30*time.Second)
	}
	for _, s := range cl.svcs[1:] {
		s.SetDropRate(0)
	}
	var resent uint64
	for i, s := range cl.svcs {
		st := s.Stats()
		if st.BadAuth != 0 || st.BadChecksum != 0 {
			t.Errorf("node %d refused honest datagrams: %d failed authentication, %d checksum", i, st.BadAuth, st.BadChecksum)
		}
		resent += st.Resent + st.Forwarded
	}
	if resent == 0 {
		t.Error("no message was repaired: the loss did not exercise repair")
	}

	// A forgery from the sender's own address: the next message of its
	// stream, with a good checksum and no tag.
	receiver := cl.svcs[1]
	b := forgeNext(t, sender, receiver, n+1, "evil")
	before := receiver.Stats().BadAuth
	sender.send(b, receiver.DataAddr())
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if receiver.Stats().BadAuth == before {
			return errors.New("the untagged datagram was not refused")
		}
		return nil
	})
	if _, err := pub.Publish(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	recs[0].waitCount(t, n+1, 10*time.Second)
	if p := recs[0].problems(); len(p) > 0 {
		t.Fatal(p)
	}
	recs[0].mu.Lock()
	defer recs[0].mu.Unlock()
	for i, ev := range recs[0].events {
		want := fmt.Sprintf("event %d", i)
		if i == n {
			want = "after"
		}
		if string(ev.Data) != want {
			t.Fatalf("event %d is %q, want %q", i, ev.Data, want)
		}
	}
}

// TestKeyHandshake: a coordinator with a key takes in a service only
// after it proved it holds the same key; a service without it, with
// another key, or replaying an earlier proof is refused with a
// denial; a service with a key refuses a coordinator that cannot prove
// it holds it.
func TestKeyHandshake(t *testing.T) {
	cfg := testConfig(t)
	cfg.Key = testKey(t)
	cl := newCluster(t, cfg, 0)
	coord, cfg := cl.coord, cl.cfg

	hello := func(id uint64, nonce []byte) []byte {
		e := encoder{}
		e.b = append(e.b, gmsMagic...)
		e.u8(ProtocolVersionMin)
		e.u8(ProtocolVersionMax)
		e.u64(id)
		e.str("peer")
		e.str(fmt.Sprintf("127.0.0.1:%d", 40000+id))
		return append(e.b, nonce...)
	}
	// handshake says hello and answers the challenge with proof (nil:
	// the right one); it returns the frame that follows.
	handshake := func(id uint64, key, nonce []byte, proof func(nonceC []byte) []byte) (uint8, []byte) {
		t.Helper()
		conn, err := net.Dial("tcp", coord.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		h := hello(id, nonce)
		conn.Write(appendFrame(nil, gmsHello, h))
		fr := newFrameReader(conn, maxFrame)
		typ, body, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		if typ != gmsChallenge {
			return typ, bytes.Clone(body)
		}
		nonceC := bytes.Clone(body[:nonceSize])
		if want := handshakeTag(cfg.Key, labelCoordinator, nonce, nonceC, h); !bytes.Equal(body[nonceSize:], want) {
			t.Fatal("the coordinator's tag is not the one its key gives")
		}
		p := handshakeTag(key, labelService, nonce, nonceC, h)
		if proof != nil {
			p = proof(nonceC)
		}
		conn.Write(appendFrame(nil, gmsProof, p))
		typ, body, err = fr.next()
		if err != nil {
			t.Fatal(err)
		}
		return typ, bytes.Clone(body)
	}
	denied := func(name string, typ uint8, body []byte) {
		t.Helper()
		if typ != gmsError {
			t.Fatalf("%s: frame %d, want an error", name, typ)
		}
		d := decoder{b: body}
		if code, msg := d.u16(), d.str(); code != codeDenied || !strings.Contains(msg, "key") {
			t.Fatalf("%s: code %d %q, want a denial that speaks of the key", name, code, msg)
		}
	}

	nonce := newNonce()
	if typ, _ := handshake(1, cfg.Key, nonce, nil); typ != gmsWelcome {
		t.Fatalf("right key: frame %d, want welcome", typ)
	}
	typ, body := handshake(2, testKey(t), newNonce(), nil)
	denied("another key", typ, body)
	typ, body = handshake(3, nil, nil, nil)
	denied("no key", typ, body)
	// A proof recorded from another handshake does not fit a new one.
	var recorded []byte
	nonce4 := newNonce()
	handshake(4, cfg.Key, nonce4, func(nonceC []byte) []byte {
		recorded = handshakeTag(cfg.Key, labelService, nonce4, nonceC, hello(4, nonce4))
		return recorded
	})
	typ, body = handshake(4, cfg.Key, nonce4, func([]byte) []byte { return recorded })
	denied("replayed proof", typ, body)
	// The coordinator's own tag does not pass for a proof.
	nonce5 := newNonce()
	typ, body = handshake(5, cfg.Key, nonce5, func(nonceC []byte) []byte {
		return handshakeTag(cfg.Key, labelCoordinator, nonce5, nonceC, hello(5, nonce5))
	})
	denied("reflected tag", typ, body)

	// Services: only the one with the key gets a view.
	good := cfg
	good.Name = "good"
	s := startService(t, good)
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("service with the key got no view")
	}
	for _, c := range []struct {
		name string
		key  []byte
	}{{"nokey", nil}, {"otherkey", testKey(t)}} {
		bad := cfg
		bad.Name, bad.Key = c.name, c.key
		s := startService(t, bad)
		select {
		case <-s.Ready():
			t.Fatalf("service %s got a view", c.name)
		case <-time.After(time.Second):
		}
	}
	for _, n := range coord.View().Nodes {
		if n.Name != "good" && n.Name != "peer" {
			t.Fatalf("node %q is in the view", n.Name)
		}
	}

	// A coordinator that cannot prove it holds the key: the service
	// sends no proof and hangs up.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fake := cfg
	fake.GMSAddress = ln.Addr().String()
	fake.Name = "fooled"
	startService(t, fake)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fr := newFrameReader(conn, maxFrame)
	if typ, _, err := fr.next(); err != nil || typ != gmsHello {
		t.Fatalf("hello from the service: %d %v", typ, err)
	}
	conn.Write(appendFrame(nil, gmsChallenge, append(newNonce(), testKey(t)...)))
	if typ, _, err := fr.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("service answered a coordinator without the key: frame %d, %v (want the link closed)", typ, err)
	}
}

// TestKeyFileSetting: key_file reads the key from a file (white space
// around it ignored); a short, empty or missing file is a configuration
// error that says what to do.
func TestKeyFileSetting(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := ParseConfig(map[string]string{"key_file": write("good", "  0123456789abcdef0123\n")})
	if err != nil || string(c.Key) != "0123456789abcdef0123" {
		t.Fatalf("good key: %q %v", c.Key, err)
	}
	for _, bad := range []struct{ file, want string }{
		{write("short", "0123456789\n"), "too short"},
		{write("empty", " \n"), "empty"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		_, err := ParseConfig(map[string]string{"key_file": bad.file})
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "key_file") {
			t.Errorf("%s: %v, want a bad key_file error saying %q", bad.file, err, bad.want)
		}
	}
}

// FuzzDatagramAuth: whatever a keyed node accepts carries a tag made
// with its key, so re-sealing what it parsed gives the same bytes.
func FuzzDatagramAuth(f *testing.F) {
	key := []byte("fuzzing key 0123456789")
	a := newDgAuth(key)
	f.Add(a.seal(sampleData()))
	f.Add(a.seal(sampleToken()))
	f.Add(sampleAck())
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		_, err := parseDatagramInto(b, netip.AddrPort{}, a, nil, nil)
		if err != nil {
			return
		}
		again := a.seal(bytes.Clone(in[:len(in)-tagSize]))
		if !bytes.Equal(again, in) {
			t.Fatalf("accepted a datagram whose tag is not its own: %x", in)
		}
	})
}
