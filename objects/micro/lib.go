package micro

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lib is the application's side of the MO system, after the paper's
// lib-server: it holds the keys (the closed shared section), seals and
// opens payloads, signs cluster entries, and speaks to the local MO server
// through Local. A Lib is safe for concurrent use. It owns the goroutines
// that run OnNew callbacks; Close stops them.
type Lib struct {
	local Local
	keys  Keys

	mu     sync.Mutex // protects closed
	closed bool
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // callback goroutines
}

// NewLib returns a Lib that uses keys for the objects it creates and
// copies, and local as its MO server.
func NewLib(local Local, keys Keys) *Lib {
	ctx, cancel := context.WithCancel(context.Background())
	return &Lib{local: local, keys: keys, ctx: ctx, cancel: cancel}
}

// Local returns the server interface the Lib uses.
func (l *Lib) Local() Local { return l.local }

// Keys returns the Lib's keys.
func (l *Lib) Keys() Keys { return l.keys }

// Close stops every callback and waits for them. It is idempotent.
func (l *Lib) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	return nil
}

// MO is the application's handle on one micro object (the paper's mo_t):
// its token, its opened payload, and access to its cluster through the
// local server. An MO is safe for concurrent use.
type MO struct {
	lib   *Lib
	tok   Token
	obj   *Object
	plain []byte
}

// CreateOptions are options of CreateNewWith.
type CreateOptions struct {
	// SealedCluster seals the cluster's members too, so that servers
	// cannot read the cluster (they still reconcile it). Flooding levels
	// above 0 cannot follow a sealed cluster.
	SealedCluster bool
}

// CreateNew creates a micro object with payload and copy-expire date
// expire, and asks the local server to ADOPT it (mo_create_new).
func (l *Lib) CreateNew(ctx context.Context, expire time.Time, payload []byte) (*MO, error) {
	return l.CreateNewWith(ctx, expire, payload, CreateOptions{})
}

// CreateNewWith is CreateNew with options.
func (l *Lib) CreateNewWith(ctx context.Context, expire time.Time, payload []byte, opts CreateOptions) (*MO, error) {
	home, err := l.local.HomeAddr(ctx)
	if err != nil {
		return nil, fmt.Errorf("micro: create: %w", err)
	}
	mk := NewObject
	if opts.SealedCluster {
		mk = NewObjectSealedCluster
	}
	o, err := mk(l.keys, home, expire, payload)
	if err != nil {
		return nil, err
	}
	t, err := l.local.Adopt(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("micro: create: %w", err)
	}
	return &MO{lib: l, tok: t, obj: o, plain: append([]byte(nil), payload...)}, nil
}

// Get returns the object t with its payload opened, fetching it through
// the local server when needed. It does not harmonize the cluster.
func (l *Lib) Get(ctx context.Context, t Token) (*MO, error) {
	o, err := l.local.RequestPayload(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("micro: get %s: %w", t.Short(), err)
	}
	if err := o.Verify(t); err != nil {
		return nil, fmt.Errorf("micro: get %s: %w", t.Short(), err)
	}
	p, err := o.Open(l.keys)
	if err != nil {
		return nil, fmt.Errorf("micro: get %s: %w", t.Short(), err)
	}
	return &MO{lib: l, tok: t, obj: o, plain: p}, nil
}

// CreateCopy makes a local copy of the object named by t: its payload and
// its cluster as the home server and known peers have it (mo_create_copy).
func (l *Lib) CreateCopy(ctx context.Context, t Token) (*MO, error) {
	m, err := l.Get(ctx, t)
	if err != nil {
		return nil, err
	}
	if err := l.local.Sync(ctx, t); err != nil {
		return m, fmt.Errorf("micro: copy %s: cluster: %w", t.Short(), err)
	}
	return m, nil
}

// Token returns the object's token (mo_get_tken).
func (m *MO) Token() Token { return m.tok }

// Object returns the sealed object as servers see it.
func (m *MO) Object() *Object { return m.obj }

// Payload returns the opened payload (mo_get_plod). Do not modify it.
func (m *MO) Payload() []byte { return m.plain }

// Add adds child to the object's cluster (mo_cter_add_mo) and lets the
// server run the active policies.
func (m *MO) Add(ctx context.Context, child Token) error {
	_, err := m.AddMany(ctx, []Token{child})
	return err
}

// AddMany adds children to the cluster; it returns how many were new.
func (m *MO) AddMany(ctx context.Context, children []Token) (int, error) {
	es := make([]Entry, len(children))
	for i, c := range children {
		if m.obj.Flags&FlagSealedCluster != 0 {
			es[i] = NewSealedEntry(m.lib.keys, m.tok, c)
		} else {
			es[i] = NewEntry(m.lib.keys, m.tok, c)
		}
	}
	n, err := m.lib.local.Update(ctx, m.tok, es)
	if err != nil {
		return n, fmt.Errorf("micro: add to %s: %w", m.tok.Short(), err)
	}
	return n, nil
}

// PutReplication starts or stops a replication policy on the local copy
// (mo_put_repl).
func (m *MO) PutReplication(ctx context.Context, p Policy) error {
	return m.lib.local.Replicate(ctx, m.tok, p)
}

// Sync harmonizes the cluster with the home server and known peers.
func (m *MO) Sync(ctx context.Context) error { return m.lib.local.Sync(ctx, m.tok) }

// clusterPage is the page size for reading clusters.
const clusterPage = 4096

// Cluster returns the cluster in copy-expire order (mo_get_cter). The
// members of a sealed cluster are opened with the Lib's keys.
func (m *MO) Cluster(ctx context.Context) ([]Token, error) {
	if m.obj.Flags&FlagSealedCluster == 0 {
		return clusterOf(ctx, m.lib.local, m.tok)
	}
	var out []Token
	var after Token
	for {
		page, err := m.lib.local.Entries(ctx, m.tok, after, clusterPage)
		if err != nil {
			return out, fmt.Errorf("micro: cluster of %s: %w", m.tok.Short(), err)
		}
		for _, e := range page {
			t, err := OpenEntry(m.lib.keys, m.tok, e)
			if err != nil {
				return out, fmt.Errorf("micro: cluster of %s: %w", m.tok.Short(), err)
			}
			out = append(out, t)
		}
		if len(page) < clusterPage {
			return out, nil
		}
		after = page[len(page)-1].Token
	}
}

// ClusterOf returns the local copy of t's cluster in copy-expire order,
// without fetching or opening t (opaque ids for a sealed cluster; use
// Get and MO.Cluster to open them). It fails with ErrNotFound when the
// local server has no copy of t or its cluster.
func (l *Lib) ClusterOf(ctx context.Context, t Token) ([]Token, error) {
	return clusterOf(ctx, l.local, t)
}

func clusterOf(ctx context.Context, local Local, t Token) ([]Token, error) {
	var out []Token
	var after Token
	for {
		page, err := local.Cluster(ctx, t, after, clusterPage)
		if err != nil {
			return out, fmt.Errorf("micro: cluster of %s: %w", t.Short(), err)
		}
		out = append(out, page...)
		if len(page) < clusterPage {
			return out, nil
		}
		after = page[len(page)-1]
	}
}

// Tracker is the set of cluster members an application has seen already:
// Wait, TryWait and OnNew report only tokens not in it and add them. An
// empty tracker reports every member; a tracker made from the current
// cluster reports only later additions. Safe for concurrent use.
type Tracker struct {
	mu   sync.Mutex // protects seen
	seen map[Token]bool
}

// NewTracker returns a tracker that has seen ts.
func NewTracker(ts ...Token) *Tracker {
	tr := &Tracker{seen: map[Token]bool{}}
	for _, t := range ts {
		tr.seen[t] = true
	}
	return tr
}

// Seen reports whether t has been seen.
func (tr *Tracker) Seen(t Token) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.seen[t]
}

// Len returns the number of tokens seen.
func (tr *Tracker) Len() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.seen)
}

// take marks the first unseen token of ts seen and returns it.
func (tr *Tracker) take(ts []Token) (Token, bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, t := range ts {
		if !tr.seen[t] {
			tr.seen[t] = true
			return t, true
		}
	}
	return Token{}, false
}

// Wait blocks until the cluster holds a token tr has not seen, marks it
// seen and returns it (mo_cter_wait). Tokens come in copy-expire order.
func (m *MO) Wait(ctx context.Context, tr *Tracker) (Token, error) {
	local := m.lib.local
	seq, err := local.WaitChange(ctx, []Token{m.tok}, 0)
	if err != nil {
		return Token{}, err
	}
	for {
		ts, err := m.Cluster(ctx)
		if err != nil {
			return Token{}, err
		}
		if t, ok := tr.take(ts); ok {
			return t, nil
		}
		if seq, err = local.WaitChange(ctx, []Token{m.tok}, seq); err != nil {
			return Token{}, err
		}
	}
}

// TryWait is Wait with a timeout (mo_cter_try_uwait): it returns false
// when no new token came within timeout.
func (m *MO) TryWait(tr *Tracker, timeout time.Duration) (Token, bool, error) {
	ctx, cancel := context.WithTimeout(m.lib.ctx, timeout)
	defer cancel()
	t, err := m.Wait(ctx, tr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return Token{}, false, nil
		}
		return Token{}, false, err
	}
	return t, true, nil
}

// OnNew calls fn for every cluster member tr has not seen, now and as
// they are added (mo_put_cter_clbk). fn runs on one goroutine owned by the
// Lib, one call at a time; it may block, which delays later calls. The
// returned function stops the callback and waits for it to return; Close
// stops it too.
func (m *MO) OnNew(tr *Tracker, fn func(Token)) (stop func()) {
	ctx, cancel := context.WithCancel(m.lib.ctx)
	done := make(chan struct{})
	m.lib.mu.Lock()
	if m.lib.closed {
		m.lib.mu.Unlock()
		cancel()
		return func() {}
	}
	m.lib.wg.Add(1)
	m.lib.mu.Unlock()
	go func() {
		defer m.lib.wg.Done()
		defer close(done)
		for {
			t, err := m.Wait(ctx, tr)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				select { // transient error: retry after a pause
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
			fn(t)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
