package relay

import (
	"fmt"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func TestJoinPublishDeliver(t *testing.T) {
	s := startServer(t, ServerConfig{Channels: []transport.ChannelInfo{{Name: "chat"}}})
	a := dialClient(t, s.Addr().String())
	b := dialClient(t, s.Addr().String())
	ha, hb := &logHandler{}, &logHandler{}
	ma, err := a.Join(ctxT(t), "chat", ha)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := b.Join(ctxT(t), "chat", hb)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 100; i++ {
		m := ma
		if i%2 == 0 {
			m = mb
		}
		seq, err := m.Publish(ctxT(t), []byte(fmt.Sprintf("e%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("publish %d got seq %d", i, seq)
		}
	}
	waitFor(t, 5*time.Second, func() error {
		for _, h := range []*logHandler{ha, hb} {
			if _, last := h.snapshot(); last != 100 {
				return fmt.Errorf("last %d", last)
			}
		}
		return nil
	})
	sa, _ := ha.snapshot()
	sb, _ := hb.snapshot()
	if fmt.Sprint(sa) != fmt.Sprint(sb) {
		t.Fatalf("members disagree:\n%v\n%v", sa, sb)
	}
	// A third member joins and gets the state from a member.
	c := dialClient(t, s.Addr().String())
	hc := &logHandler{}
	if _, err := c.Join(ctxT(t), "chat", hc); err != nil {
		t.Fatal(err)
	}
	sc, last := hc.snapshot()
	if last != 100 || fmt.Sprint(sc) != fmt.Sprint(sa) {
		t.Fatalf("joiner state at %d: %v", last, sc)
	}
	if hc.restores != 1 {
		t.Fatalf("restores %d", hc.restores)
	}
}
