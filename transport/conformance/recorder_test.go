package conformance

import (
	"testing"

	"github.com/liveobjects/liveobjects/transport"
)

func TestRecorderCheckpointRoundTrip(t *testing.T) {
	a := NewRecorder(true)
	a.Deliver(transport.Event{Seq: 1, Data: []byte("x")})
	a.Deliver(transport.Event{Seq: 2, Data: []byte("y")})
	cp, err := a.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	b := NewRecorder(true)
	if err := b.Restore(cp, 2); err != nil {
		t.Fatal(err)
	}
	b.Deliver(transport.Event{Seq: 3, Data: []byte("z")})
	if got := b.State(); len(got) != 3 || got[2] != "z" {
		t.Fatalf("state %v", got)
	}
	if len(b.Errors()) != 0 {
		t.Fatalf("errors %v", b.Errors())
	}
	b.Deliver(transport.Event{Seq: 9, Data: []byte("gap")})
	if len(b.Errors()) != 1 {
		t.Fatal("a gap under total order was not reported")
	}
	if err := b.Restore([]byte("5\nonly-one"), 1); err == nil {
		t.Fatal("a malformed checkpoint was accepted")
	}
}
