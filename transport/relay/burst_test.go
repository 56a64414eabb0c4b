package relay

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

type cntHandler struct{ n atomic.Int64 }

func (h *cntHandler) Deliver(ev transport.Event)          { h.n.Add(1) }
func (h *cntHandler) Checkpoint() ([]byte, error)         { return nil, nil }
func (h *cntHandler) Restore(cp []byte, seq uint64) error { return nil }

// TestFanoutBurst: a pipelining publisher and four subscribers; every
// event reaches every handler (a regression test for queue buffer reuse).
func TestFanoutBurst(t *testing.T) {
	for iter := 0; iter < 3; iter++ {
		s := startServer(t, ServerConfig{AllowCreate: true})
		var hs []*cntHandler
		var subs []*Client
		for i := 0; i < 4; i++ {
			c := dialClient(t, s.Addr().String())
			h := &cntHandler{}
			if _, err := c.Join(ctxT(t), "b", h); err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
			subs = append(subs, c)
		}
		pc := dialClient(t, s.Addr().String())
		pm, err := pc.JoinMember(ctxT(t), "b", &cntHandler{})
		if err != nil {
			t.Fatal(err)
		}
		min := func() int64 {
			m := hs[0].n.Load()
			for _, h := range hs {
				m = minI(m, h.n.Load())
			}
			return m
		}
		const N = 50000
		buf := make([]byte, 128)
		for n := 0; n < N; n++ {
			for int64(n)-min() >= 4096 {
				time.Sleep(20 * time.Microsecond)
			}
			if err := pm.PublishAsync(context.Background(), buf, func(uint64, error) {}); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for min() < N && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if min() < N {
			ch := s.channels["b"]
			ch.mu.Lock()
			t.Logf("channel last %d committed %d base %d", ch.lastSeq, ch.committed, ch.base)
			for m := range ch.members {
				t.Logf("  member %s cursor %d synced %v xfer %v", m.c.name, m.cursor, m.synced, m.xfer != nil)
			}
			ch.mu.Unlock()
			for i, c := range subs {
				m := c.members["b"]
				m.mu.Lock()
				t.Logf("  client %d received %d delivered %d nev %d behind %v handler %d q %d", i, m.received, m.delivered.Load(), m.nev, m.behind, hs[i].n.Load(), len(m.q))
				m.mu.Unlock()
			}
			pc.mu.Lock()
			t.Logf("pending pubs %d", pc.pubs.Len())
			pc.mu.Unlock()
			t.Fatal("events were lost between the relay and the handlers")
		}
		s.Close()
	}
}

func minI(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}
