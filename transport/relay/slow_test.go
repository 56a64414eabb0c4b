package relay_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport/relay"
)

// blockingRecorder blocks in Deliver until released.
type blockingRecorder struct {
	*seqRecorder
	release chan struct{}
}

func (b *blockingRecorder) Deliver(ev transportEvent) {
	<-b.release
	b.seqRecorder.Deliver(ev)
}

// TestStalledHandler: a member whose Handler stalls overflows its bounded
// client queue, the others are not slowed, and once it resumes it catches
// up by state transfer to exactly the others' history.
func TestStalledHandler(t *testing.T) {
	s := startInProc(t, relay.ServerConfig{AllowCreate: true})
	fast := newSeqRecorder()
	pc := dial(t, s.Addr().String())
	pm, err := pc.Join(context.Background(), "s", fast)
	if err != nil {
		t.Fatal(err)
	}
	slow := &blockingRecorder{seqRecorder: newSeqRecorder(), release: make(chan struct{})}
	sc := dial(t, s.Addr().String(), func(c *relay.ClientConfig) { c.MemberQueue = 100 })
	if _, err := sc.Join(context.Background(), "s", slow); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := pm.Publish(context.Background(), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, 10*time.Second, "fast member", func() error {
		if fast.count() < n {
			return fmt.Errorf("%d", fast.count())
		}
		return nil
	})
	t.Logf("%d events to the fast member in %v while the other stalled", n, time.Since(start))
	close(slow.release)
	poll(t, 10*time.Second, "slow member catches up", func() error {
		slow.mu.Lock()
		defer slow.mu.Unlock()
		if slow.last != n {
			return fmt.Errorf("at %d", slow.last)
		}
		return nil
	})
	slow.mu.Lock()
	defer slow.mu.Unlock()
	if slow.restores < 2 {
		t.Errorf("slow member restored %d times; want a catch-up restore", slow.restores)
	}
	fast.mu.Lock()
	defer fast.mu.Unlock()
	if strings.Join(slow.state, ",") != strings.Join(fast.state, ",") {
		t.Errorf("slow member's state differs after catching up (%d vs %d entries)", len(slow.state), len(fast.state))
	}
	if slow.dups != 0 {
		t.Errorf("%d duplicates", slow.dups)
	}
}

// TestStalledConnectionSubprocess: a client that joins and then stops
// reading its socket does not slow anyone; once past the member queue
// bound it is told it fell behind (a state frame flagged so) when it reads
// again.
func TestStalledConnectionSubprocess(t *testing.T) {
	p := startRelayProc(t, freePort(t), "--memory", "--member-queue", "2000")
	fast := newSeqRecorder()
	pc := dial(t, p.addr, func(c *relay.ClientConfig) { c.MaxInFlight = 256 })
	pm, err := pc.JoinMember(context.Background(), "st", fast)
	if err != nil {
		t.Fatal(err)
	}
	// The stalled client: hello, join, then no reading.
	nc, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	join := binary.BigEndian.AppendUint64(nil, 1)
	for _, s := range []string{"st", ""} {
		join = binary.AppendUvarint(join, uint64(len(s)))
		join = append(join, s...)
	}
	join = append(join, 0)
	join = binary.BigEndian.AppendUint64(join, 0)
	join = binary.BigEndian.AppendUint64(join, 0)
	if _, err := nc.Write(append(frame(1, helloBody("stalled")), frame(4, join)...)); err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 1000)
	const n = 20000
	start := time.Now()
	var wg sync.WaitGroup
	var perr error
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		wg.Add(1)
		if err := pm.PublishAsync(ctx, []byte(fmt.Sprint(i, payload)), func(_ uint64, err error) {
			if err != nil {
				mu.Lock()
				perr = err
				mu.Unlock()
			}
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if perr != nil {
		t.Fatal(perr)
	}
	poll(t, 20*time.Second, "fast member", func() error {
		if fast.count() < n {
			return fmt.Errorf("%d", fast.count())
		}
		return nil
	})
	t.Logf("%d x 1 KB events delivered in %v with a stalled member", n, time.Since(start))
	// Now read: the stalled member must see a state flagged "fell behind".
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	sawBehind := false
	for !sawBehind {
		var hdr [4]byte
		if _, err := io.ReadFull(nc, hdr[:]); err != nil {
			t.Fatalf("reading the stalled connection: %v", err)
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(nc, body); err != nil {
			t.Fatal(err)
		}
		if body[0] == 12 { // state
			d := body[1:]
			l, k := binary.Uvarint(d)
			d = d[k+int(l):]
			flags := d[16]
			if flags&4 != 0 {
				sawBehind = true
			}
		}
	}
}
