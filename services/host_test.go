package services_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/services"
	"github.com/liveobjects/liveobjects/transport/relay"
)

type relaySvc struct{ *relay.Server }

func (r relaySvc) Addr() string { return r.Server.Addr().String() }

func relayFactory(def services.Definition) (services.Service, error) {
	s, err := relay.NewServer(relay.ServerConfig{Listen: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	return relaySvc{s}, nil
}

// freshRoot writes a fresh root (registry.Init) and opens it, closed when
// the test ends; it returns the root's folder too.
func freshRoot(t *testing.T) (string, *registry.Root) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	if err := registry.Init(dir); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return dir, reg
}

func checkFor(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func state(h *services.Host, path string, want services.State) func() error {
	return func() error {
		s, ok := h.Status(path)
		if !ok {
			return fmt.Errorf("%s: no status", path)
		}
		if s.State != want {
			return fmt.Errorf("%s: state %s (%s), want %s", path, s.State, s.Err, want)
		}
		return nil
	}
}

// TestHostFollowsRoot starts the default root's services, then switches
// the relay off and on again by editing its definition.
func TestHostFollowsRoot(t *testing.T) {
	dir, reg := freshRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := reg.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	var params map[string]string
	h := services.NewHost(reg, map[string]services.Factory{
		objects.ClassRelayServer: func(def services.Definition) (services.Service, error) {
			params = def.Params
			return relayFactory(def)
		},
	}, nil)
	defer h.Close()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h.Follow()
	if err := state(h, registry.RelayServiceFile, services.Running)(); err != nil {
		t.Fatal(err)
	}
	if params["address"] != registry.DefaultRelayAddress || params["durable"] != "true" || params["root"] != "channels" {
		t.Fatalf("relay settings not resolved through the registry: %v", params)
	}
	for _, p := range []string{registry.QSMLocalServiceFile, registry.MOServiceFile} {
		if err := state(h, p, services.Disabled)(); err != nil {
			t.Fatal(err)
		}
	}
	// A service switched off says so, and how to start it.
	if txt, _ := h.StatusText(registry.MOServiceFile); !strings.Contains(string(txt), "class: none (switched off: 'liveobjects service on' starts it)\nstate: disabled") {
		t.Fatalf("status text of a service switched off:\n%s", txt)
	}
	st, _ := h.Status(registry.RelayServiceFile)
	// The running relay is the one its status names; no service of a
	// class switched off runs.
	if rs := h.Running(objects.ClassRelayServer); len(rs) != 1 || rs[0].Addr() != st.Addr {
		t.Fatalf("running relays: %v, want the one at %s", rs, st.Addr)
	}
	if rs := h.Running(objects.ClassQSMLocalService); len(rs) != 0 {
		t.Fatalf("running QSM services: %v, want none", rs)
	}
	c, err := relay.Dial(ctx, relay.ClientConfig{Addr: st.Addr})
	if err != nil {
		t.Fatalf("the hosted relay does not answer: %v", err)
	}
	c.Close()
	txt, _ := h.StatusText(registry.RelayServiceFile)
	if !strings.Contains(string(txt), "state: running") || !strings.Contains(string(txt), "address: 127.0.0.1:") {
		t.Fatalf("status text: %s", txt)
	}

	// Switch it off: a null object.
	file := filepath.Join(dir, filepath.FromSlash(registry.RelayServiceFile))
	orig, _ := os.ReadFile(file)
	off := []byte(`<?xml version="1.0" encoding="utf-8"?>
<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><Object xsi:nil="true"/></Root>
`)
	if err := os.WriteFile(file, off, 0o644); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 3*time.Second, state(h, registry.RelayServiceFile, services.Disabled))
	if rs := h.Running(objects.ClassRelayServer); len(rs) != 0 {
		t.Fatalf("running relays after switching it off: %v", rs)
	}
	if c, err := relay.Dial(ctx, relay.ClientConfig{Addr: st.Addr, MaxBackoff: 10 * time.Millisecond}); err == nil {
		dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, lerr := c.Channels(dctx)
		dcancel()
		c.Close()
		if lerr == nil {
			t.Fatal("the relay still answers after it was switched off")
		}
	}
	// And on again.
	if err := os.WriteFile(file, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 3*time.Second, state(h, registry.RelayServiceFile, services.Running))

	// A broken edit fails the service with a message, and the host stays up.
	if err := os.WriteFile(file, []byte("<Root><Object"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if s, ok := h.Status(registry.RelayServiceFile); !ok || (s.State != services.Running && s.State != services.Failed) {
		t.Fatalf("after a broken edit: %+v", s)
	}
}

// TestNoFactory: a service class this program does not host is shown as
// unknown, not started.
func TestNoFactory(t *testing.T) {
	_, reg := freshRoot(t)
	h := services.NewHost(reg, nil, nil)
	defer h.Close()
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := state(h, registry.RelayServiceFile, services.Unknown)(); err != nil {
		t.Fatal(err)
	}
}

// TestCloseWaitsForLateStart: a service whose Start returns only after
// the host gave up on it, while the host is closing, has been closed by
// the time Close returns.
func TestCloseWaitsForLateStart(t *testing.T) {
	defer services.SetStartLimits(50*time.Millisecond, 100*time.Millisecond)()
	svc := newSlowSvc(true)
	h := hostWith(t, svc)
	if err := h.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded although the service never started")
	}
	// Start returns while Close is waiting.
	time.AfterFunc(300*time.Millisecond, func() { close(svc.release) })
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.closes == 0 {
		t.Fatal("Close returned before the service whose Start returned late was closed")
	}
	if svc.closedEarly {
		t.Fatal("Close ran while the service's Start was still running")
	}
}

// syncBuffer is a bytes.Buffer that goroutines may write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCloseBoundsLateStart: Close does not wait past its limit for a
// service whose Start never returns, and names it in a warning.
func TestCloseBoundsLateStart(t *testing.T) {
	defer services.SetStartLimits(50*time.Millisecond, 100*time.Millisecond)()
	defer services.SetCloseWait(100 * time.Millisecond)()
	svc := newSlowSvc(true)
	t.Cleanup(func() { close(svc.release) })
	var logs syncBuffer
	h := hostWithLog(t, svc, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := h.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded although the service never started")
	}
	done := make(chan error, 1)
	go func() { done <- h.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a Start that never returns")
	}
	if !strings.Contains(logs.String(), "at close") || !strings.Contains(logs.String(), "path="+registry.RelayServiceFile) {
		t.Fatalf("no warning naming the service at close:\n%s", logs.String())
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.closes > 0 {
		t.Fatal("Close ran while the service's Start was still running")
	}
}

// TestRetryFailed: a service that failed to start is tried again while
// the host follows the root. While it fails for the same reason, its
// status keeps the time it first failed and the failure is logged once;
// once what it lacked is there, it runs.
func TestRetryFailed(t *testing.T) {
	old := services.RetryEvery
	services.RetryEvery = 30 * time.Millisecond
	defer func() { services.RetryEvery = old }()
	_, reg := freshRoot(t)
	var ready atomic.Bool
	var tries atomic.Int32
	var logs syncBuffer
	h := services.NewHost(reg, map[string]services.Factory{
		objects.ClassRelayServer: func(def services.Definition) (services.Service, error) {
			tries.Add(1)
			if !ready.Load() {
				return nil, errors.New("the port is not free yet")
			}
			return relayFactory(def)
		},
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	defer h.Close()
	if err := h.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded although the relay could not start")
	}
	first, _ := h.Status(registry.RelayServiceFile)
	h.Follow()
	checkFor(t, 5*time.Second, func() error {
		if n := tries.Load(); n < 6 {
			return fmt.Errorf("tried %d times", n)
		}
		return nil
	})
	st, _ := h.Status(registry.RelayServiceFile)
	if st.State != services.Failed || !st.Since.Equal(first.Since) || !strings.Contains(st.Err, "not free yet") {
		t.Fatalf("status while failing again: %+v, want failed since %v", st, first.Since)
	}
	if n := strings.Count(logs.String(), "not free yet"); n > 1 {
		t.Fatalf("the same failure was logged %d times:\n%s", n, logs.String())
	}
	ready.Store(true)
	checkFor(t, 5*time.Second, state(h, registry.RelayServiceFile, services.Running))
}
