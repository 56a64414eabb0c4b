package services_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/services"
)

// slowSvc is a service whose Start blocks until its context ends (or,
// with ignoreCtx, until release is closed). It records a Close that comes
// while Start is still running.
type slowSvc struct {
	ignoreCtx bool
	release   chan struct{}

	mu            sync.Mutex
	starting      bool
	startReturned bool
	closes        int
	closedEarly   bool
	closed        chan struct{}
}

func newSlowSvc(ignoreCtx bool) *slowSvc {
	return &slowSvc{ignoreCtx: ignoreCtx, release: make(chan struct{}), closed: make(chan struct{})}
}

func (s *slowSvc) Start(ctx context.Context) error {
	s.mu.Lock()
	s.starting = true
	s.mu.Unlock()
	if s.ignoreCtx {
		<-s.release
	} else {
		<-ctx.Done()
	}
	s.mu.Lock()
	s.starting, s.startReturned = false, true
	s.mu.Unlock()
	return errors.New("slow service: start abandoned")
}

func (s *slowSvc) Addr() string { return "" }

func (s *slowSvc) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.starting {
		s.closedEarly = true
	}
	s.closes++
	if s.closes == 1 {
		close(s.closed)
	}
	return nil
}

// hostWith opens a fresh default root and a host whose relay server
// factory returns svc.
func hostWith(t *testing.T, svc services.Service) *services.Host {
	t.Helper()
	return hostWithLog(t, svc, nil)
}

// hostWithLog is hostWith with a host that logs to log.
func hostWithLog(t *testing.T, svc services.Service, log *slog.Logger) *services.Host {
	t.Helper()
	_, reg := freshRoot(t)
	h := services.NewHost(reg, map[string]services.Factory{
		objects.ClassRelayServer: func(services.Definition) (services.Service, error) { return svc, nil },
	}, log)
	t.Cleanup(func() { h.Close() })
	return h
}

// TestStartTimeoutClosesAfterStart: a service whose Start outlasts the
// host's limit has its start context ended and is closed only once Start
// has returned.
func TestStartTimeoutClosesAfterStart(t *testing.T) {
	defer services.SetStartLimits(100*time.Millisecond, 5*time.Second)()
	svc := newSlowSvc(false)
	h := hostWith(t, svc)
	if err := h.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded although the service never started")
	}
	if err := state(h, registry.RelayServiceFile, services.Failed)(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-svc.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the service that did not start was never closed")
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.closedEarly {
		t.Fatal("Close ran while the service's Start was still running")
	}
	if !svc.startReturned {
		t.Fatal("Start had not returned when the host went on")
	}
}

// TestStartIgnoringContext: a service whose Start does not return even
// once its context has ended does not hold the host past the wait, and
// is closed when Start finally returns, not before.
func TestStartIgnoringContext(t *testing.T) {
	defer services.SetStartLimits(50*time.Millisecond, 100*time.Millisecond)()
	svc := newSlowSvc(true)
	h := hostWith(t, svc)
	done := make(chan error, 1)
	go func() { done <- h.Start(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Start succeeded although the service never started")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the host waits for a Start that ignores its context")
	}
	if err := state(h, registry.RelayServiceFile, services.Failed)(); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	early := svc.closes > 0
	svc.mu.Unlock()
	if early {
		t.Fatal("Close ran while the service's Start was still running")
	}
	close(svc.release)
	select {
	case <-svc.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the service was not closed once its Start returned")
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.closedEarly {
		t.Fatal("Close ran while the service's Start was still running")
	}
}
