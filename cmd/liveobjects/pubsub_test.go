package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// startRelay runs "liveobjects relay --listen addr args..." and waits for
// it to listen; it is killed at cleanup. A port just given up by an
// earlier relay may take a moment to be free again, so a relay that exits
// at once is started again.
func startRelay(t *testing.T, addr string, args ...string) *daemon {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := start(t, "", append([]string{"relay", "--listen", addr}, args...)...)
		if listening(d, deadline) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay on %s did not start:\n%s", addr, d.output())
		}
	}
}

// listening waits until the relay d says that it listens (true), exits,
// or the deadline passes.
func listening(d *daemon, deadline time.Time) bool {
	for time.Now().Before(deadline) {
		if strings.Contains(d.output(), "listening") {
			return true
		}
		select {
		case err := <-d.done:
			d.done <- err
			return strings.Contains(d.output(), "listening")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// stopDaemon kills d and waits for it (its cleanup still runs).
func stopDaemon(d *daemon) {
	d.cmd.Process.Kill()
	err := <-d.done
	d.done <- err
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// proc is a liveobjects command run by a test with its stdout and stderr
// kept apart; it is killed at cleanup if still running.
type proc struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser // when asked for
	stdout, stderr lockedBuffer
	done           chan struct{}
}

// startProc starts the binary with args; env is added to the
// environment, and withStdin gives the test a pipe to its stdin
// (otherwise stdin is empty).
func startProc(t *testing.T, env []string, withStdin bool, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if withStdin {
		w, err := p.cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.stdin = w
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s: stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// exit waits up to within for p to exit and returns its exit code.
func (p *proc) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("%s still running after %v; stderr:\n%s", strings.Join(p.cmd.Args[1:], " "), within, p.stderr.String())
		return 0
	}
}

// runCmd runs the binary with stdin and env added to the environment
// and returns its exit code, stdout and stderr.
func runCmd(t *testing.T, stdin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// relayClient dials the relay at addr for the test's own look at it.
func relayClient(t *testing.T, addr string) *relay.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := relay.Dial(ctx, relay.ClientConfig{Addr: addr, Logger: discardLogger(), MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// relayChannel returns what the relay says about channel.
func relayChannel(c *relay.Client, channel string) (transport.ChannelInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := c.Channels(ctx)
	if err != nil {
		return transport.ChannelInfo{}, err
	}
	for _, ch := range list {
		if ch.Name == channel {
			return ch, nil
		}
	}
	return transport.ChannelInfo{}, fmt.Errorf("no channel %s among %v", channel, list)
}

// waitMembers waits until channel has at least n members.
func waitMembers(t *testing.T, c *relay.Client, channel string, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, func() error {
		info, err := relayChannel(c, channel)
		if err != nil {
			return err
		}
		if info.Members < n {
			return fmt.Errorf("channel %s has %d members, want %d", channel, info.Members, n)
		}
		return nil
	})
}

// waitLastSeq waits until the relay has assigned seq in channel.
func waitLastSeq(t *testing.T, c *relay.Client, channel string, seq uint64) {
	t.Helper()
	waitFor(t, 20*time.Second, func() error {
		info, err := relayChannel(c, channel)
		if err != nil {
			return err
		}
		if info.LastSeq != seq {
			return fmt.Errorf("channel %s at %d, want %d", channel, info.LastSeq, seq)
		}
		return nil
	})
}

// waitStopped waits until every thread of process pid is stopped (a
// signal is delivered asynchronously).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(stats) == 0 {
			return fmt.Errorf("no threads of %d: %v", pid, err)
		}
		for _, f := range stats {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			// The state follows the command, which is in parentheses.
			i := bytes.LastIndexByte(b, ')')
			if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				return fmt.Errorf("%s: not stopped: %q", f, b)
			}
		}
		return nil
	})
}

// TestSubExitsWhenChannelRemoved: sub prints what it got, then exits with
// status 1 saying that the channel was removed, instead of waiting
// forever for events that cannot come.
func TestSubExitsWhenChannelRemoved(t *testing.T) {
	addr := freePort(t)
	startRelay(t, addr, "--memory")
	c := relayClient(t, addr)
	sub := startProc(t, nil, false, "sub", "--relay", addr, "--seq", "news")
	waitMembers(t, c, "news", 1)
	if code, out, errOut := runCmd(t, "one\ntwo\n", nil, "pub", "--relay", addr, "news"); code != exitOK {
		t.Fatalf("pub: exit %d %q %q", code, out, errOut)
	}
	waitFor(t, 10*time.Second, func() error {
		if got := sub.stdout.String(); got != "1\tone\n2\ttwo\n" {
			return fmt.Errorf("sub printed %q", got)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.RemoveChannel(ctx, "news"); err != nil {
		t.Fatal(err)
	}
	if code := sub.exit(t, 10*time.Second); code != exitFailure {
		t.Fatalf("sub exited with %d after the channel was removed, want %d", code, exitFailure)
	}
	if errOut := sub.stderr.String(); !strings.Contains(errOut, "liveobjects sub: channel news was removed on the relay") {
		t.Fatalf("sub's stderr does not say the channel was removed: %q", errOut)
	}
	if got := sub.stdout.String(); got != "1\tone\n2\ttwo\n" {
		t.Fatalf("sub's output changed to %q", got)
	}
}

// TestSubNoticesRelayEpochChange: when the in-memory relay restarts, sub
// rejoins a relay with a new history; it says on stderr that the channel
// starts again and that sequence numbers begin again, the client logs a
// warning, and the new history's events follow.
func TestSubNoticesRelayEpochChange(t *testing.T) {
	addr := freePort(t)
	r := startRelay(t, addr, "--memory")
	c := relayClient(t, addr)
	sub := startProc(t, nil, false, "sub", "--relay", addr, "--seq", "news")
	waitMembers(t, c, "news", 1)
	if code, out, errOut := runCmd(t, "one\ntwo\nthree\n", nil, "pub", "--relay", addr, "news"); code != exitOK {
		t.Fatalf("pub: exit %d %q %q", code, out, errOut)
	}
	waitFor(t, 10*time.Second, func() error {
		if got := sub.stdout.String(); got != "1\tone\n2\ttwo\n3\tthree\n" {
			return fmt.Errorf("sub printed %q", got)
		}
		return nil
	})
	if strings.Contains(sub.stderr.String(), "lost its history") {
		t.Fatalf("a notice before the relay restarted: %q", sub.stderr.String())
	}
	stopDaemon(r)
	startRelay(t, addr, "--memory")
	waitMembers(t, c, "news", 1) // sub is back, in the relay's new history
	if code, out, errOut := runCmd(t, "after\n", nil, "pub", "--relay", addr, "--seq", "news"); code != exitOK || out != "1\n" {
		t.Fatalf("pub after the restart: exit %d %q %q", code, out, errOut)
	}
	waitFor(t, 10*time.Second, func() error {
		if got := sub.stdout.String(); got != "1\tone\n2\ttwo\n3\tthree\n1\tafter\n" {
			return fmt.Errorf("sub printed %q", got)
		}
		return nil
	})
	errOut := sub.stderr.String()
	if !strings.Contains(errOut, "liveobjects sub: the relay lost its history") ||
		!strings.Contains(errOut, "channel news starts again from the relay's state at event 0") ||
		!strings.Contains(errOut, "sequence numbers begin again (the last event before was 3)") {
		t.Fatalf("sub's stderr has no notice of the relay's new history: %q", errOut)
	}
	if !strings.Contains(errOut, "level=WARN") || !strings.Contains(errOut, "reconnected to a relay that lost its history") {
		t.Fatalf("the client logged no warning of the new epoch: %q", errOut)
	}
	if strings.Contains(errOut, "fell behind") {
		t.Fatalf("the new history was taken for a catch-up: %q", errOut)
	}
}

// TestPubStopsOnSignal: interrupted while it waits for stdin, or for the
// acknowledgements of a relay that stopped answering, pub exits at once
// with status 1, saying how many lines the relay acknowledged; with --seq
// it prints their numbers.
func TestPubStopsOnSignal(t *testing.T) {
	t.Run("reading", func(t *testing.T) {
		addr := freePort(t)
		startRelay(t, addr, "--memory")
		c := relayClient(t, addr)
		pub := startProc(t, nil, true, "pub", "--relay", addr, "--seq", "news")
		if _, err := io.WriteString(pub.stdin, "a\nb\n"); err != nil {
			t.Fatal(err)
		}
		waitLastSeq(t, c, "news", 2)
		pub.cmd.Process.Signal(syscall.SIGINT)
		if code := pub.exit(t, 5*time.Second); code != exitFailure {
			t.Fatalf("pub exited with %d on SIGINT, want %d", code, exitFailure)
		}
		if errOut := pub.stderr.String(); !strings.Contains(errOut, "liveobjects pub: interrupted: the relay acknowledged 2 of the 2 lines read") {
			t.Fatalf("pub's stderr: %q", errOut)
		}
		if out := pub.stdout.String(); out != "1\n2\n" {
			t.Fatalf("pub --seq printed %q", out)
		}
	})
	t.Run("waiting-for-acks", func(t *testing.T) {
		addr := freePort(t)
		r := startRelay(t, addr, "--memory")
		c := relayClient(t, addr)
		pub := startProc(t, nil, true, "pub", "--relay", addr, "--seq", "news")
		if _, err := io.WriteString(pub.stdin, "first\n"); err != nil {
			t.Fatal(err)
		}
		waitLastSeq(t, c, "news", 1)
		// A stopped relay keeps its connections open and answers nothing.
		if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer r.cmd.Process.Signal(syscall.SIGCONT)
		waitStopped(t, r.cmd.Process.Pid)
		if _, err := io.WriteString(pub.stdin, "second\nthird\n"); err != nil {
			t.Fatal(err)
		}
		pub.stdin.Close()
		pub.cmd.Process.Signal(syscall.SIGTERM)
		if code := pub.exit(t, 5*time.Second); code != exitFailure {
			t.Fatalf("pub exited with %d on SIGTERM, want %d", code, exitFailure)
		}
		if errOut := pub.stderr.String(); !strings.Contains(errOut, "liveobjects pub: interrupted: the relay acknowledged 1 of the") {
			t.Fatalf("pub's stderr: %q", errOut)
		}
		if out := pub.stdout.String(); out != "1\n" {
			t.Fatalf("pub --seq printed %q", out)
		}
	})
}

// TestPubUsesRelayMaxEvent: pub takes the largest event from the relay's
// handshake: a relay with a larger limit than the default takes a line
// over the default, and one with a small limit refuses a longer line with
// an error naming the line and the limit.
func TestPubUsesRelayMaxEvent(t *testing.T) {
	big := freePort(t)
	startRelay(t, big, "--memory", "--max-event", fmt.Sprint(2<<20))
	line := strings.Repeat("x", relay.DefaultMaxEvent+1000)
	if code, out, errOut := runCmd(t, line+"\n", nil, "pub", "--relay", big, "--seq", "big"); code != exitOK || out != "1\n" {
		t.Fatalf("pub of a %d-byte line to a relay taking %d: exit %d %q %q", len(line), 2<<20, code, out, errOut)
	}

	small := freePort(t)
	startRelay(t, small, "--memory", "--max-event", "100")
	c := relayClient(t, small)
	code, _, errOut := runCmd(t, "short\n"+strings.Repeat("y", 101)+"\nnever\n", nil, "pub", "--relay", small, "small")
	if code != exitFailure || !strings.Contains(errOut, "line 2 is 101 bytes, longer than the relay's largest event (100 bytes") {
		t.Fatalf("pub of a line over the relay's limit: exit %d %q", code, errOut)
	}
	waitLastSeq(t, c, "small", 1) // the line before it was published
	code, _, errOut = runCmd(t, strings.Repeat("z", 5000)+"\n", nil, "pub", "--relay", small, "small")
	if code != exitFailure || !strings.Contains(errOut, "line 1 is longer than the relay's largest event (100 bytes") {
		t.Fatalf("pub of a line far over the relay's limit: exit %d %q", code, errOut)
	}
}

// TestPubAuthHintsAndTLSUsage: a relay that refuses the secret gets a
// hint about the secret's variable (not about starting a relay), one that
// refuses the channel a hint about --token; TLS flags that cannot work
// alone are refused as bad usage.
func TestPubAuthHintsAndTLSUsage(t *testing.T) {
	t.Setenv("LIVEOBJECTS_TEST_RELAY_SECRET", "s3cret")
	secret := freePort(t)
	startRelay(t, secret, "--memory", "--secret-env", "LIVEOBJECTS_TEST_RELAY_SECRET")
	code, _, errOut := runCmd(t, "x\n", []string{"LIVEOBJECTS_RELAY_SECRET="}, "pub", "--relay", secret, "news")
	if code != exitFailure || !strings.Contains(errOut, "needs a secret") ||
		!strings.Contains(errOut, "no secret was sent: put the relay's shared secret in $LIVEOBJECTS_RELAY_SECRET, or name another variable with --secret-env") ||
		strings.Contains(errOut, "is the relay running") {
		t.Fatalf("pub without the secret: exit %d %q", code, errOut)
	}
	code, _, errOut = runCmd(t, "x\n", []string{"LIVEOBJECTS_RELAY_SECRET=wrong"}, "pub", "--relay", secret, "news")
	if code != exitFailure || !strings.Contains(errOut, "wrong relay secret") ||
		!strings.Contains(errOut, "the secret in $LIVEOBJECTS_RELAY_SECRET is not the relay's") ||
		strings.Contains(errOut, "is the relay running") {
		t.Fatalf("pub with a wrong secret: exit %d %q", code, errOut)
	}
	code, out, errOut := runCmd(t, "x\n", []string{"LIVEOBJECTS_RELAY_SECRET=s3cret"}, "pub", "--relay", secret, "--seq", "news")
	if code != exitOK || out != "1\n" {
		t.Fatalf("pub with the secret: exit %d %q %q", code, out, errOut)
	}

	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("guarded tok123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	guarded := freePort(t)
	startRelay(t, guarded, "--memory", "--tokens", tokens, "--secret-env", "")
	code, _, errOut = runCmd(t, "x\n", []string{"LIVEOBJECTS_RELAY_SECRET="}, "pub", "--relay", guarded, "guarded")
	if code != exitFailure || !strings.Contains(errOut, "needs a token") || !strings.Contains(errOut, "give channel guarded's token with --token") {
		t.Fatalf("pub without the channel's token: exit %d %q", code, errOut)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pub", "--tls-key", "client.key", "news"}, "--tls-key needs --tls-cert"},
		{[]string{"sub", "--tls-key", "client.key", "news"}, "--tls-key needs --tls-cert"},
		{[]string{"channels", "--tls-key", "client.key"}, "--tls-key needs --tls-cert"},
		{[]string{"pub", "--tls-cert", "client.pem", "news"}, "--tls-cert needs --tls-key"},
		{[]string{"pub", "--tls-server-name", "relay.example", "news"}, "--tls-server-name needs TLS"},
	} {
		args := append(tc.args, "--relay", secret)
		code, _, errOut := runCmd(t, "x\n", []string{"LIVEOBJECTS_RELAY_SECRET=s3cret"}, args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "usage: liveobjects") {
			t.Errorf("%s: exit %d %q, want %d and %q", strings.Join(args, " "), code, errOut, exitUsage, tc.want)
		}
	}
}
