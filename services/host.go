package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
)

// Service is one running service.
type Service interface {
	// Start starts serving and returns once the service is ready.
	Start(ctx context.Context) error
	// Addr is the address the service listens on, for its status.
	Addr() string
	// Close stops the service. It is idempotent.
	Close() error
}

// Reporter is implemented by services that can say more about their
// state than the host knows (a QSM local service: its link to the
// coordinator, its clients). While the service runs, each line of Report,
// "name: value", is shown after the host's own in its status text.
type Reporter interface {
	Report() []string
}

// Definition is a service's definition, resolved through the registry.
type Definition struct {
	// Path is the definition's path in the root ("services/cc.liveobject").
	Path string
	// Class is the service's class.
	Class objects.Class
	// Params are the definition's settings, flattened: parameters with
	// simple values by id, Configuration entries by name; settings of an
	// outer object override those of the registry object it refers to.
	Params map[string]string
}

// Factory makes a service from its definition.
type Factory func(def Definition) (Service, error)

// State is a service's state.
type State string

// The states a service can be in.
const (
	Disabled State = "disabled" // a null object: switched off
	Running  State = "running"
	Failed   State = "failed"
	Unknown  State = "unknown" // no factory for its class in this program
)

// Status is what a service's file shows.
type Status struct {
	Path string
	// Class is the service's class name; ClassID its id.
	Class   string
	ClassID string
	State   State
	Addr    string
	Since   time.Time
	Err     string
}

// String renders the status as the lines a service file shows.
func (s Status) String() string {
	var b strings.Builder
	class := s.Class
	if class == "" && s.State == Disabled {
		class = "none (switched off: 'liveobjects service on' starts it)"
	}
	fmt.Fprintf(&b, "service: %s\nclass: %s\nstate: %s\n", s.Path, class, s.State)
	if s.Addr != "" {
		fmt.Fprintf(&b, "address: %s\n", s.Addr)
	}
	if !s.Since.IsZero() {
		fmt.Fprintf(&b, "since: %s\n", s.Since.UTC().Format(time.RFC3339))
	}
	if s.Err != "" {
		fmt.Fprintf(&b, "error: %s\n", s.Err)
	}
	return b.String()
}

type entry struct {
	status Status
	svc    Service
	cancel context.CancelFunc // ends the context the service was started with
	params string             // the definition's settings, to tell a change
}

// stop closes the service and ends its context.
func (e *entry) stop() error {
	var err error
	if e.svc != nil {
		err = e.svc.Close()
	}
	if e.cancel != nil {
		e.cancel()
	}
	return err
}

// Host runs the services of a root.
type Host struct {
	root      *registry.Root
	factories map[string]Factory
	log       *slog.Logger

	mu       sync.Mutex // protects services, closed, late
	services map[string]*entry
	closed   bool
	// late holds, for each service whose Start was still running when
	// its context ended, a channel closed once the service is stopped,
	// and its path (see stopAfterStart).
	late map[chan struct{}]string

	stop chan struct{}
	done chan struct{}
}

// NewHost returns a Host for root that makes services with factories,
// keyed by class id.
func NewHost(root *registry.Root, factories map[string]Factory, log *slog.Logger) *Host {
	if log == nil {
		log = slog.Default()
	}
	return &Host{root: root, factories: factories, log: log, services: map[string]*entry{}}
}

// Start starts every enabled service of the root. Services that fail are
// shown as failed; the joined error names each.
func (h *Host) Start(ctx context.Context) error {
	var errs []error
	for _, e := range h.root.Objects() {
		if !strings.HasPrefix(e.Path, "services/") {
			continue
		}
		if err := h.apply(ctx, e.Path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RetryEvery is how often Follow tries again the services that failed to
// start: what they lacked (a key file, a free port) may be there now.
var RetryEvery = 5 * time.Second

// Follow applies the root's changes until Close: a changed definition
// restarts its service, a removed one stops it. Services that failed are
// tried again every RetryEvery; a failure is logged again only when its
// reason changed.
func (h *Host) Follow() {
	ch, cancel := h.root.Subscribe()
	h.stop = make(chan struct{})
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		defer cancel()
		retry := time.NewTicker(RetryEvery)
		defer retry.Stop()
		// What changed between Start and Subscribe.
		h.applyAll()
		for {
			select {
			case <-h.stop:
				return
			case <-retry.C:
				h.retryFailed()
			case c, ok := <-ch:
				if !ok {
					return
				}
				if !strings.HasPrefix(c.Path, "services/") && !strings.HasPrefix(c.Path, "registry/") {
					continue
				}
				// A registry entry can change any service's settings:
				// re-apply every service; unchanged ones are left alone.
				h.applyAll()
			}
		}
	}()
}

// retryFailed starts again the services that failed.
func (h *Host) retryFailed() {
	h.mu.Lock()
	var paths []string
	for p, e := range h.services {
		if e.status.State == Failed {
			paths = append(paths, p)
		}
	}
	h.mu.Unlock()
	sort.Strings(paths)
	for _, p := range paths {
		h.applyLogged(p)
	}
}

// applyAll brings every service in line with its definition.
func (h *Host) applyAll() {
	for _, p := range h.paths() {
		h.applyLogged(p)
	}
}

// applyLogged applies path and logs a failure, unless the service had
// already failed for the same reason (it was said then).
func (h *Host) applyLogged(path string) {
	prev, _ := h.Status(path)
	if err := h.apply(context.Background(), path); err != nil {
		if st, _ := h.Status(path); prev.State == Failed && st.State == Failed && st.Err == prev.Err {
			return
		}
		h.log.Error("service", "path", path, "err", err)
	}
}

// paths returns the service definitions in the root and those running.
func (h *Host) paths() []string {
	set := map[string]bool{}
	for _, e := range h.root.Objects() {
		if strings.HasPrefix(e.Path, "services/") {
			set[e.Path] = true
		}
	}
	h.mu.Lock()
	for p := range h.services {
		set[p] = true
	}
	h.mu.Unlock()
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// apply brings the service at path in line with its definition.
func (h *Host) apply(ctx context.Context, path string) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	old := h.services[path]
	h.mu.Unlock()

	e, ok := h.root.Lookup(path)
	var def Definition
	var derr error
	disabled := false
	switch {
	case !ok:
		disabled = true
	case e.Def == nil:
		derr = fmt.Errorf("%s: %v", path, e.Err)
	case e.Def.Nil:
		disabled = true
	default:
		def, derr = Resolve(h.root, path, e.Def)
	}
	sig := ""
	if derr == nil && !disabled {
		sig = def.Class.ID + "\x00" + flatten(def.Params)
	}
	if old != nil && old.params == sig && sig != "" && old.status.State == Running {
		return nil // unchanged
	}
	if old != nil && old.svc != nil {
		if err := old.stop(); err != nil {
			h.log.Warn("service stop", "path", path, "err", err)
		}
		h.log.Info("service stopped", "path", path)
	}
	if !ok {
		h.mu.Lock()
		delete(h.services, path)
		h.mu.Unlock()
		return nil
	}
	n := &entry{status: Status{Path: path, Since: time.Now()}, params: sig}
	var err error
	switch {
	case derr != nil:
		n.status.State, n.status.Err = Failed, derr.Error()
		err = derr
	case disabled:
		n.status.State = Disabled
	default:
		n.status.Class, n.status.ClassID = def.Class.Name, def.Class.ID
		f := h.factories[def.Class.ID]
		if f == nil {
			n.status.State = Unknown
			n.status.Err = "this program does not host " + def.Class.Name
			break
		}
		svc, ferr := f(def)
		var returned <-chan struct{} // closed once svc.Start has returned
		if ferr == nil {
			// Some services tie their lifetime to the context they start
			// with: it lives until the service is stopped.
			var sctx context.Context
			sctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
			returned, ferr = startWithin(sctx, n.cancel, svc, startTimeout)
		}
		if ferr != nil {
			n.status.State, n.status.Err = Failed, ferr.Error()
			err = fmt.Errorf("%s (%s): %w", path, def.Class.Name, ferr)
			if svc != nil {
				h.stopAfterStart(path, &entry{svc: svc, cancel: n.cancel}, returned)
			}
			n.cancel = nil
			break
		}
		n.svc = svc
		n.status.State, n.status.Addr = Running, svc.Addr()
		h.log.Info("service started", "path", path, "class", def.Class.Name, "addr", svc.Addr())
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		n.stop()
		return nil
	}
	if cur := h.services[path]; cur != nil && cur.status.State == Failed && n.status.State == Failed && cur.status.Err == n.status.Err {
		// Failed again, for the same reason: since the first time.
		n.status.Since = cur.status.Since
	}
	h.services[path] = n
	h.mu.Unlock()
	return err
}

func flatten(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + m[k] + "\x00")
	}
	return b.String()
}

// Status returns the state of the service defined at path.
func (h *Host) Status(path string) (Status, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.services[path]
	if !ok {
		return Status{}, false
	}
	return e.status, true
}

// StatusText is Status as the text a service file shows, with what a
// running Reporter adds.
func (h *Host) StatusText(path string) ([]byte, bool) {
	h.mu.Lock()
	e, ok := h.services[path]
	var s Status
	var r Reporter
	if ok {
		s = e.status
		if rep, isReporter := e.svc.(Reporter); isReporter && s.State == Running {
			r = rep
		}
	}
	h.mu.Unlock()
	if !ok {
		return nil, false
	}
	text := s.String()
	if r != nil {
		for _, l := range r.Report() {
			text += l + "\n"
		}
	}
	return []byte(text), true
}

// Running returns the services of class classID that are running now,
// by path, for a program that uses them in process. A service returned
// may be stopped at any time after (its definition changed or was
// switched off); a caller must cope with it closing.
func (h *Host) Running(classID string) []Service {
	h.mu.Lock()
	defer h.mu.Unlock()
	paths := make([]string, 0, len(h.services))
	for p, e := range h.services {
		if e.svc != nil && e.status.State == Running && e.status.ClassID == classID {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	out := make([]Service, len(paths))
	for i, p := range paths {
		out[i] = h.services[p].svc
	}
	return out
}

// All returns the status of every service, by path.
func (h *Host) All() []Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Status, 0, len(h.services))
	for _, e := range h.services {
		out = append(out, e.status)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Close stops following the root and stops every service. It waits up to
// closeWait for the services whose Start was still running when it was
// given up on to be stopped, and logs those it stops waiting for.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	svcs := h.services
	h.services = map[string]*entry{}
	h.mu.Unlock()
	if h.stop != nil {
		close(h.stop)
		<-h.done
	}
	var errs []error
	for p, e := range svcs {
		if err := e.stop(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	h.waitLate()
	return errors.Join(errs...)
}

// waitLate waits, up to closeWait in all, for the late stops (see
// stopAfterStart) to be done, and names the services it stops waiting
// for.
func (h *Host) waitLate() {
	h.mu.Lock()
	late := maps.Clone(h.late)
	h.mu.Unlock()
	if len(late) == 0 {
		return
	}
	limit := time.NewTimer(closeWait)
	defer limit.Stop()
	over := false
	for stopped, path := range late {
		if !over {
			select {
			case <-stopped:
				continue
			case <-limit.C:
				over = true
			}
		}
		select {
		case <-stopped:
		default:
			h.log.Warn("service start still running at close; it is closed once the start returns", "path", path, "waited", closeWait)
		}
	}
}

// Limits on a service's start (variables so that tests can shorten them).
var (
	// startTimeout bounds Service.Start.
	startTimeout = 30 * time.Second
	// startStopWait bounds the wait, after startTimeout, for Start to
	// return once its context has ended.
	startStopWait = 5 * time.Second
	// closeWait bounds Host.Close's wait for the services whose Start
	// had not returned within startStopWait to return and be stopped.
	closeWait = 5 * time.Second
)

// startWithin starts svc with ctx, which cancel ends. If Start has not
// returned after d, startWithin ends ctx and waits up to startStopWait for
// Start to return, then reports the timeout; the caller stops the service
// (see stopAfterStart). The returned channel is closed once Start has
// returned.
func startWithin(ctx context.Context, cancel context.CancelFunc, svc Service, d time.Duration) (<-chan struct{}, error) {
	returned := make(chan struct{})
	var err error
	go func() {
		err = svc.Start(ctx)
		close(returned)
	}()
	limit := time.NewTimer(d)
	defer limit.Stop()
	select {
	case <-returned:
		return returned, err
	case <-limit.C:
	}
	cancel()
	wait := time.NewTimer(startStopWait)
	defer wait.Stop()
	select {
	case <-returned:
	case <-wait.C:
	}
	return returned, fmt.Errorf("did not start within %v; its log may say why", d)
}

// stopAfterStart stops the service of e, which failed to start, once its
// Start has returned (returned closed; nil: Start never ran). A Start that
// has not returned even though its context ended is left to finish on its
// own goroutine, which then stops the service: Close never runs while
// Start does. The host's Close waits for that goroutine (see waitLate).
func (h *Host) stopAfterStart(path string, e *entry, returned <-chan struct{}) {
	if returned != nil {
		select {
		case <-returned:
		default:
			h.log.Warn("service start still running after its context ended; it is closed once the start returns", "path", path)
			stopped := make(chan struct{})
			h.mu.Lock()
			if h.late == nil {
				h.late = map[chan struct{}]string{}
			}
			h.late[stopped] = path
			h.mu.Unlock()
			go func() {
				defer func() {
					h.mu.Lock()
					delete(h.late, stopped)
					h.mu.Unlock()
					close(stopped)
				}()
				<-returned
				if err := e.stop(); err != nil {
					h.log.Warn("service stop", "path", path, "err", err)
				}
			}()
			return
		}
	}
	if err := e.stop(); err != nil {
		h.log.Warn("service stop", "path", path, "err", err)
	}
}
