package relay_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

func TestMain(m *testing.M) { os.Exit(clibin.Run(m)) }

// relayProc is a relay running as a real subprocess.
type relayProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startRelayProc runs "liveobjects relay" with args on addr and waits for
// its "listening" line.
func startRelayProc(t *testing.T, addr string, args ...string) *relayProc {
	t.Helper()
	bin := clibin.Path(t)
	level := "-q"
	if os.Getenv("LIVEOBJECTS_TEST_LOG") != "" {
		level = "-v"
	}
	all := append([]string{level, "relay", "--listen", addr}, args...)
	cmd := exec.Command(bin, all...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProc{t: t, cmd: cmd, done: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	select {
	case l := <-lines:
		p.addr = strings.TrimPrefix(l, "listening ")
	case <-p.done:
		t.Fatalf("relay exited before listening")
	case <-time.After(20 * time.Second):
		p.kill()
		t.Fatalf("relay did not start listening")
	}
	return p
}

// kill sends SIGKILL and waits. Idempotent.
func (p *relayProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// startRelayProcRetry retries while the old process's port is released.
func startRelayProcRetry(t *testing.T, addr string, args ...string) *relayProc {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return startRelayProc(t, addr, args...)
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %s not free again: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string, mod ...func(*relay.ClientConfig)) *relay.Client {
	t.Helper()
	cfg := relay.ClientConfig{Addr: addr, Logger: quiet(), MaxBackoff: 100 * time.Millisecond}
	for _, f := range mod {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// seqRecorder records delivered events and checks contiguity.
type seqRecorder struct {
	mu       sync.Mutex
	events   map[string]uint64 // data -> seq
	order    []string
	last     uint64
	dups     int
	gaps     int
	restores int
	state    []string
}

func newSeqRecorder() *seqRecorder { return &seqRecorder{events: map[string]uint64{}} }

func (r *seqRecorder) Deliver(ev transport.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev.Seq != r.last+1 {
		r.gaps++
	}
	r.last = ev.Seq
	if _, ok := r.events[string(ev.Data)]; ok {
		r.dups++
	}
	r.events[string(ev.Data)] = ev.Seq
	r.order = append(r.order, string(ev.Data))
	r.state = append(r.state, string(ev.Data))
}

func (r *seqRecorder) Checkpoint() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return []byte(strings.Join(r.state, "\n")), nil
}

func (r *seqRecorder) Restore(cp []byte, seq uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restores++
	r.last = seq
	r.state = nil
	if len(cp) > 0 {
		r.state = strings.Split(string(cp), "\n")
	}
	return nil
}

func (r *seqRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func poll(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// TestSIGKILLRestart kills the relay (a real subprocess) with SIGKILL in
// the middle of a stream, twice, and restarts it: every acknowledged event
// reaches every member exactly once, in one order, with the acknowledged
// sequence number.
func TestSIGKILLRestart(t *testing.T) {
	addr := freePort(t)
	data := t.TempDir()
	p := startRelayProc(t, addr, "--data", data)
	subs := []*seqRecorder{newSeqRecorder(), newSeqRecorder()}
	for _, r := range subs {
		c := dial(t, addr)
		if _, err := c.Join(context.Background(), "k", r); err != nil {
			t.Fatal(err)
		}
	}
	pc := dial(t, addr)
	pm, err := pc.JoinMember(context.Background(), "k", newSeqRecorder())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := map[string]uint64{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	const publishers, per = 4, 600
	for g := 0; g < publishers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < per; k++ {
				d := fmt.Sprintf("g%d-%d", g, k)
				seq, err := pm.Publish(ctx, []byte(d))
				if err != nil {
					t.Errorf("publish %s: %v", d, err)
					return
				}
				mu.Lock()
				acked[d] = seq
				mu.Unlock()
			}
		}()
	}
	ackedN := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for round, at := range []int{500, 1400} {
		poll(t, 30*time.Second, "publishing", func() error {
			if n := ackedN(); n < at {
				return fmt.Errorf("%d acked", n)
			}
			return nil
		})
		p.kill()
		t.Logf("round %d: killed the relay after %d acknowledged events", round, ackedN())
		p = startRelayProcRetry(t, addr, "--data", data)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := publishers * per
	poll(t, 30*time.Second, "all delivered", func() error {
		for i, r := range subs {
			if n := r.count(); n < total {
				return fmt.Errorf("member %d has %d of %d", i, n, total)
			}
		}
		return nil
	})
	for i, r := range subs {
		r.mu.Lock()
		if r.dups != 0 || r.gaps != 0 {
			t.Errorf("member %d: %d duplicates, %d gaps", i, r.dups, r.gaps)
		}
		for d, seq := range acked {
			if got, ok := r.events[d]; !ok || got != seq {
				t.Errorf("member %d: event %s acknowledged as %d, delivered as %d (present %v)", i, d, seq, got, ok)
				break
			}
		}
		if len(r.order) != total {
			t.Errorf("member %d delivered %d events, want %d", i, len(r.order), total)
		}
		r.mu.Unlock()
	}
	if strings.Join(subs[0].order, ",") != strings.Join(subs[1].order, ",") {
		t.Error("members delivered different orders")
	}
}

// frame builds a raw frame.
func frame(typ byte, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)+1))
	b = append(b, typ)
	return append(b, body...)
}

func helloBody(id string) []byte {
	b := []byte("LORY")
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, 1)
	for _, s := range []string{id, "raw", ""} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// readErrorCode reads frames until an error frame and returns its code.
func readErrorCode(t *testing.T, nc net.Conn) (uint16, error) {
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(nc, hdr[:]); err != nil {
			return 0, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		body := make([]byte, n)
		if _, err := io.ReadFull(nc, body); err != nil {
			return 0, err
		}
		if body[0] == 3 { // error
			return binary.BigEndian.Uint16(body[9:11]), nil
		}
	}
}

// TestBadFramesSubprocess sends garbage, truncated and oversized frames to
// a relay subprocess: each bad connection gets an error code and is
// closed; a good client keeps working throughout.
func TestBadFramesSubprocess(t *testing.T) {
	p := startRelayProc(t, freePort(t), "--memory")
	good := dial(t, p.addr)
	r := newSeqRecorder()
	m, err := good.Join(context.Background(), "g", r)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		send []byte
		code uint16 // 0: only expect the connection to close
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), uint16(relay.CodeTooLarge)},
		{"zero length", []byte{0, 0, 0, 0, 1}, uint16(relay.CodeProtocol)},
		{"oversized hello", binary.BigEndian.AppendUint32(nil, 1<<30), uint16(relay.CodeTooLarge)},
		{"wrong magic", frame(1, append([]byte("XXXX"), helloBody("a")[4:]...)), uint16(relay.CodeProtocol)},
		{"version", frame(1, append([]byte("LORY"), 0, 9, 0, 9)), uint16(relay.CodeProtocol)},
		{"oversized after hello", append(frame(1, helloBody("b")), binary.BigEndian.AppendUint32(nil, 1<<31)...), uint16(relay.CodeTooLarge)},
		{"unknown type", append(frame(1, helloBody("c")), frame(200, []byte("x"))...), uint16(relay.CodeProtocol)},
		{"short publish", append(frame(1, helloBody("d")), frame(7, []byte{1, 2})...), uint16(relay.CodeProtocol)},
		{"truncated", append(frame(1, helloBody("e")), 0, 0, 0, 50, 7, 1), 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.code == 0 {
				// Half a frame, then hang up: the relay just drops us.
				nc.(*net.TCPConn).CloseWrite()
				nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, nc)
			} else {
				code, err := readErrorCode(t, nc)
				if err != nil {
					t.Fatalf("no error frame: %v", err)
				}
				if code != tc.code {
					t.Fatalf("error code %d, want %d", code, tc.code)
				}
				nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, nc); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Fatalf("the relay did not close the connection: %v", err)
					}
					// A reset is a close too (the relay left our bytes unread).
				}
			}
			// The relay still serves the good client.
			before := r.count()
			if _, err := m.Publish(context.Background(), []byte(fmt.Sprint("ok", i))); err != nil {
				t.Fatalf("good client after %s: %v", tc.name, err)
			}
			poll(t, 5*time.Second, "good delivery", func() error {
				if r.count() <= before {
					return fmt.Errorf("%d events", r.count())
				}
				return nil
			})
		})
	}
}

type transportEvent = transport.Event

func startInProc(t *testing.T, cfg relay.ServerConfig) *relay.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	s, err := relay.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
