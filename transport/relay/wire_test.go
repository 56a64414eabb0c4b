package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

type parsed struct {
	typ  byte
	body []byte
}

func parseAll(p *Parser, chunks ...[]byte) ([]parsed, error) {
	var out []parsed
	for _, c := range chunks {
		err := p.Feed(c, func(typ byte, body []byte) error {
			out = append(out, parsed{typ, append([]byte(nil), body...)})
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func sampleStream() []byte {
	var b []byte
	var off int
	b, off = beginFrame(b, tPublish)
	b = putBytes(putStr(putU64(b, 7), "chat"), []byte("hello"))
	b = endFrame(b, off)
	b, off = beginFrame(b, tPing)
	b = endFrame(putU64(b, 1), off)
	b, off = beginFrame(b, tEvent)
	b = putBytes(putStr(putU64(putStr(b, "chat"), 3), "me"), bytes.Repeat([]byte{9}, 3000))
	b = endFrame(b, off)
	return b
}

// TestParserByteAtATime: the parser keeps its state across reads.
func TestParserByteAtATime(t *testing.T) {
	stream := sampleStream()
	whole, err := parseAll(NewParser(1<<20), stream)
	if err != nil || len(whole) != 3 {
		t.Fatalf("whole: %d frames, %v", len(whole), err)
	}
	var chunks [][]byte
	for i := range stream {
		chunks = append(chunks, stream[i:i+1])
	}
	bytewise, err := parseAll(NewParser(1<<20), chunks...)
	if err != nil {
		t.Fatal(err)
	}
	if len(bytewise) != len(whole) {
		t.Fatalf("%d frames byte by byte, %d whole", len(bytewise), len(whole))
	}
	for i := range whole {
		if whole[i].typ != bytewise[i].typ || !bytes.Equal(whole[i].body, bytewise[i].body) {
			t.Fatalf("frame %d differs", i)
		}
	}
	d := dec{b: whole[0].body}
	if d.u64() != 7 || d.str() != "chat" || string(d.raw(100)) != "hello" || d.end() != nil {
		t.Fatal("publish body did not round-trip")
	}
}

// TestParserLimits: lengths are checked before allocation.
func TestParserLimits(t *testing.T) {
	p := NewParser(100)
	err := p.Feed(binary.BigEndian.AppendUint32(nil, 101), func(byte, []byte) error { return nil })
	var re *Error
	if !errors.As(err, &re) || re.Code != CodeTooLarge {
		t.Fatalf("oversized: %v", err)
	}
	if p.Buffered() != 0 {
		t.Fatalf("buffered %d bytes of a refused frame", p.Buffered())
	}
	err = NewParser(100).Feed([]byte{0, 0, 0, 0}, func(byte, []byte) error { return nil })
	if !errors.As(err, &re) || re.Code != CodeProtocol {
		t.Fatalf("empty frame: %v", err)
	}
	d := dec{b: []byte{0xff, 0xff, 0xff, 0xff, 0x0f}}
	if d.raw(10) != nil || d.err == nil {
		t.Fatal("a field longer than its limit was accepted")
	}
}

// FuzzParser feeds arbitrary input whole and split in two; both must give
// the same frames (or the same failure), and decoding any frame body as
// any message must not panic.
func FuzzParser(f *testing.F) {
	f.Add(sampleStream(), 3)
	f.Add([]byte{0, 0, 0, 5, 7, 1, 2, 3, 4}, 2)
	f.Add([]byte{0, 0, 0, 0}, 1)
	f.Add([]byte("GET / HTTP/1.1\r\n"), 5)
	f.Add(binary.BigEndian.AppendUint32(nil, 1<<31), 2)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		if split < 0 {
			split = -split
		}
		if len(in) > 0 {
			split %= len(in) + 1
		} else {
			split = 0
		}
		a, errA := parseAll(NewParser(4096), in)
		b, errB := parseAll(NewParser(4096), in[:split], in[split:])
		if (errA == nil) != (errB == nil) {
			t.Fatalf("whole: %v, split: %v", errA, errB)
		}
		if len(a) != len(b) {
			t.Fatalf("whole gave %d frames, split %d", len(a), len(b))
		}
		for i := range a {
			if a[i].typ != b[i].typ || !bytes.Equal(a[i].body, b[i].body) {
				t.Fatalf("frame %d differs", i)
			}
			decodeAny(a[i].typ, a[i].body)
		}
	})
}

// decodeAny runs the decoders of every message on body.
func decodeAny(typ byte, body []byte) {
	d := dec{b: body}
	switch typ {
	case tPublish:
		d.u64()
		d.str()
		d.raw(1 << 20)
	case tJoin:
		d.u64()
		d.str()
		d.str()
		d.u8()
		d.u64()
		d.u64()
	case tEvent:
		d.str()
		d.u64()
		d.str()
		d.raw(1 << 20)
	case tChannels:
		d.u64()
		n := d.u32()
		for i := uint32(0); i < n && d.err == nil; i++ {
			getInfo(&d)
		}
	default:
		for d.err == nil && len(d.b) > 0 {
			d.str()
		}
	}
	_ = d.end()
}
