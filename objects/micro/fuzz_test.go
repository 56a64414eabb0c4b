package micro

import (
	"bytes"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"
	"time"
)

// wireSeeds returns one valid frame of every message type.
func wireSeeds(t testing.TB) [][]byte {
	k := mustKeys(t)
	ap := netip.MustParseAddrPort("127.0.0.1:4750")
	o, _ := NewObject(k, ap, time.Unix(2e9, 0), []byte("seed"))
	tok := o.Token()
	set := NewSet(randTokens(40, 1e12), nil)
	frames := []frame{
		{msgHello, 1, helloMsg{1, 1, ap}.encode()},
		{msgHelloAck, 1, helloAck{1, ap}.encode()},
		{msgFetch, 2, tok[:]},
		{msgObject, 2, o.appendTo(nil)},
		{msgBusy, 3, appendAddrs(nil, []netip.AddrPort{ap, ap})},
		{msgError, 4, errorMsg{CodeNotFound, "not here", []netip.AddrPort{ap}}.encode()},
		{msgAssent, 5, assentMsg{tok, tok, assentFlooding, []netip.AddrPort{ap}, set.reconInitiate()}.encode()},
		{msgAssentReply, 5, assentReply{true, nil, encodeRecon([]rrange{{bound: []byte{1, 2}, mode: modeItems, items: []Entry{NewEntry(k, tok, tok)}}, {mode: modeSkip}})}.encode()},
		{msgAssentReply, 5, assentReply{false, []netip.AddrPort{ap}, encodeRecon([]rrange{{mode: modeItemsBack, items: []Entry{NewSealedEntry(k, tok, tok)}}})}.encode()},
		{msgOffer, 6, offerMsg{tok, []Token{tok, tok}}.encode()},
		{msgWant, 6, encodeWant([]uint16{1})},
		{msgPush, 7, pushMsg{tok, []*Object{o}}.encode()},
		{msgPushReply, 7, []byte{0, 1}},
	}
	var out [][]byte
	for _, f := range frames {
		out = append(out, appendFrame(nil, f.typ, f.id, f.body))
	}
	return out
}

// TestWireByteAtATime decodes every seed fed one byte at a time.
func TestWireByteAtATime(t *testing.T) {
	for _, seed := range wireSeeds(t) {
		f, err := readFrame(iotest.OneByteReader(bytes.NewReader(seed)), MaxFrame)
		if err != nil {
			t.Fatalf("type %d: %v", seed[0], err)
		}
		if _, err := decodeMessage(f); err != nil {
			t.Fatalf("type %d: %v", f.typ, err)
		}
		if !bytes.Equal(appendFrame(nil, f.typ, f.id, f.body), seed) {
			t.Fatalf("type %d: re-encoding differs", f.typ)
		}
		// Every truncation fails cleanly.
		for i := 0; i < len(seed); i++ {
			f, err := readFrame(bytes.NewReader(seed[:i]), MaxFrame)
			if err == nil {
				t.Fatalf("type %d: truncated at %d read", f.typ, i)
			}
		}
	}
}

// FuzzWireDecoder feeds arbitrary bytes, split in two reads, to the frame
// reader and the message decoders: they must fail cleanly, never panic,
// and never allocate past the frame limit.
func FuzzWireDecoder(f *testing.F) {
	for _, s := range wireSeeds(f) {
		f.Add(s, uint16(len(s)/2))
	}
	f.Add([]byte{msgObject, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}, uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		c := min(int(cut), len(data))
		r := io.MultiReader(bytes.NewReader(data[:c]), bytes.NewReader(data[c:]))
		for i := 0; i < 4; i++ {
			fr, err := readFrame(r, 1<<16)
			if err != nil {
				return
			}
			if len(fr.body) > 1<<16 {
				t.Fatal("frame past its limit")
			}
			m, err := decodeMessage(fr)
			if err != nil {
				continue
			}
			if o, ok := m.(*Object); ok {
				o.Verify(o.Token())
			}
		}
	})
}

// FuzzReconcile feeds arbitrary reconciliation messages to a set.
func FuzzReconcile(f *testing.F) {
	set := NewSet(randTokens(200, 1e12), nil)
	other := NewSet(randTokens(50, 1e12), nil)
	f.Add(set.reconInitiate())
	f.Add(other.reconInitiate())
	f.Add([]byte{1, 2, 0xff, 1, 5, 0, 0xff, 2, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		ans, _, err := set.reconRespond(msg)
		if err != nil {
			return
		}
		if ans != nil {
			if _, err := decodeRecon(ans); err != nil {
				t.Fatalf("answer does not decode: %v", err)
			}
		}
	})
}

// FuzzParsers covers the text and record parsers.
func FuzzParsers(f *testing.F) {
	k := mustKeys(f)
	kt, _ := k.MarshalText()
	o, _ := NewObject(k, netip.MustParseAddrPort("127.0.0.1:1"), time.Unix(2e9, 0), []byte("x"))
	f.Add(o.Token().String())
	f.Add(string(kt))
	f.Add("flooding:3")
	f.Add("sustain:720h")
	f.Add(string(encodeRecord(recObject, o.appendTo(nil))))
	f.Fuzz(func(t *testing.T, s string) {
		if tok, err := ParseToken(s); err == nil && tok.String() != s {
			t.Fatalf("token %q does not round-trip", s)
		}
		ParseKeys(s)
		if p, err := ParsePolicy(s); err == nil {
			if _, err := ParsePolicy(p.String()); err != nil {
				t.Fatalf("policy %q does not round-trip: %v", p, err)
			}
		}
		decodeObjectRecord([]byte(s))
		parseFilePayload([]byte(s))
	})
}
