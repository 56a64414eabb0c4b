package micro

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Local is the interface of local requests: what a trusted application
// (through a Lib) asks of its MO server. *Server implements it in process;
// *LocalClient implements it over the server's unix socket. All methods
// are safe for concurrent use.
type Local interface {
	// HomeAddr returns the address that new objects name as their home.
	HomeAddr(ctx context.Context) (netip.AddrPort, error)
	// Adopt makes the server the home of obj: it is kept in the store
	// until its copy-expire date plus the grace period.
	Adopt(ctx context.Context, obj *Object) (Token, error)
	// Replicate starts or stops a replication policy on t's local copy.
	Replicate(ctx context.Context, t Token, p Policy) error
	// Update adds entries to t's cluster and runs the active policies.
	// It returns the number of entries that were new.
	Update(ctx context.Context, t Token, entries []Entry) (int, error)
	// RequestPayload returns the object t from the store, the cache, or a
	// remote FETCH (home first, then ditto-lists), caching what it fetched.
	RequestPayload(ctx context.Context, t Token) (*Object, error)
	// Sync harmonizes t's cluster with its home and known peers, taking
	// what they have (as a new copy does).
	Sync(ctx context.Context, t Token) error
	// Cluster returns up to limit members of t's cluster after the token
	// after (zero: from the start), in copy-expire order. For a sealed
	// cluster these are opaque ids; use Entries. It fails with ErrNotFound
	// when the server holds no local copy of t or its cluster (it never
	// fetched or synced it, or dropped it since), which an empty cluster
	// is not.
	Cluster(ctx context.Context, t Token, after Token, limit int) ([]Token, error)
	// Entries is Cluster with the signed entries (and sealed boxes).
	Entries(ctx context.Context, t Token, after Token, limit int) ([]Entry, error)
	// WaitChange blocks until the cluster of one of ts changes after the
	// change sequence number seq, and returns the current sequence number.
	// Pass seq 0 to learn the current number at once.
	WaitChange(ctx context.Context, ts []Token, seq uint64) (uint64, error)
	// Shared lists the local copies with active replication policies.
	Shared(ctx context.Context) ([]SharedObject, error)
}

// SharedObject describes a local copy with replication policies.
type SharedObject struct {
	// Token names the object.
	Token Token `json:"token"`
	// Flood is the flooding level, -1 when not flooding.
	Flood int `json:"flood"`
	// SustainUntil is when sustaining ends (zero when not sustained).
	SustainUntil time.Time `json:"sustain_until"`
	// Peers are the servers known to share the object.
	Peers []string `json:"peers,omitempty"`
}

var _ Local = (*Server)(nil)

// HomeAddr implements Local.
func (s *Server) HomeAddr(ctx context.Context) (netip.AddrPort, error) {
	ap := s.self()
	if !ap.IsValid() {
		return ap, fmt.Errorf("micro: server not started")
	}
	return ap, nil
}

// Adopt implements Local (ADOPT).
func (s *Server) Adopt(ctx context.Context, obj *Object) (Token, error) {
	t := obj.Token()
	if err := obj.verifySig(t); err != nil {
		s.stats.rejected.Add(1)
		return t, fmt.Errorf("micro: adopt: %w", err)
	}
	if obj.Home != s.self() {
		return t, fmt.Errorf("micro: adopt %s: %w: object names home %s, this server is %s", t.Short(), ErrNotAccepted, obj.Home, s.self())
	}
	if !obj.Expire.After(s.now()) {
		return t, fmt.Errorf("micro: adopt %s: %w (%s)", t.Short(), ErrExpired, obj.Expire.UTC().Format(time.RFC3339))
	}
	if err := s.st.putStore(t, obj); err != nil {
		return t, fmt.Errorf("micro: adopt %s: %w", t.Short(), err)
	}
	return t, nil
}

// Replicate implements Local (REPLICATE).
func (s *Server) Replicate(ctx context.Context, t Token, p Policy) error {
	if !p.Stop {
		if _, err := s.RequestPayload(ctx, t); err != nil {
			return fmt.Errorf("micro: replicate %s: %w", t.Short(), err)
		}
		if _, err := s.st.pin(t); err != nil {
			return fmt.Errorf("micro: replicate %s: %w", t.Short(), err)
		}
	}
	st, err := s.st.updateRepl(t, func(st *replState) error {
		switch p.Kind {
		case Flooding:
			if p.Stop {
				st.Flood = -1
				return nil
			}
			if p.Level < 0 || p.Level > MaxFloodLevel {
				return fmt.Errorf("%w: level %d", ErrBadPolicy, p.Level)
			}
			st.Flood = p.Level
			if h := t.Home(); h != s.self() && !slices.Contains(st.Peers, h.String()) {
				st.Peers = append(st.Peers, h.String())
			}
		case Sustain:
			if p.Stop {
				st.SustainUntil = 0
				return nil
			}
			d := min(p.For, s.cfg.MaxSustain)
			st.SustainUntil = s.now().Add(d).UnixMilli()
		default:
			return fmt.Errorf("%w: kind %d", ErrBadPolicy, p.Kind)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("micro: replicate %s: %w", t.Short(), err)
	}
	if st.Flood >= 0 {
		s.scheduleFlood(t)
	}
	return nil
}

// Update implements Local (UPDATE).
func (s *Server) Update(ctx context.Context, t Token, entries []Entry) (int, error) {
	o, _, err := s.st.get(t)
	if err != nil {
		return 0, err
	}
	if o == nil {
		if o, err = s.RequestPayload(ctx, t); err != nil {
			return 0, fmt.Errorf("micro: update %s: %w", t.Short(), err)
		}
	}
	for _, e := range entries {
		if err := VerifyEntry(o, t, e); err != nil {
			s.stats.rejected.Add(1)
			return 0, fmt.Errorf("micro: update %s: %w", t.Short(), err)
		}
	}
	added, err := s.st.addEntries(t, entries)
	if err != nil {
		return 0, err
	}
	if len(added) > 0 {
		s.changedCluster(t)
	}
	return len(added), nil
}

// changedCluster wakes waiters and runs the flooding policies the change
// may concern.
func (s *Server) changedCluster(t Token) {
	s.notify(t)
	m, err := s.st.replicated()
	if err != nil {
		return
	}
	for r, st := range m {
		if r == t && st.Flood >= 0 || r != t && st.Flood >= 2 {
			s.scheduleFlood(r)
		}
	}
}

// RequestPayload implements Local (REQUEST-PAYLOAD).
func (s *Server) RequestPayload(ctx context.Context, t Token) (*Object, error) {
	o, _, err := s.st.get(t)
	if err != nil {
		return nil, err
	}
	if o != nil {
		return o, nil
	}
	o, err = s.fetchRemote(ctx, t)
	if err != nil {
		return nil, err
	}
	if err := s.st.putCache(t, o); err != nil {
		return nil, fmt.Errorf("micro: cache %s: %w", t.Short(), err)
	}
	return o, nil
}

// maxFetchHops bounds the servers one REQUEST-PAYLOAD tries.
const maxFetchHops = 8

// fetchRemote FETCHes t from its home, then from the servers on ditto-lists.
func (s *Server) fetchRemote(ctx context.Context, t Token) (*Object, error) {
	queue := []netip.AddrPort{t.Home()}
	seen := map[netip.AddrPort]bool{s.self(): true}
	var lastErr error = fmt.Errorf("%w: %s (this server is its home)", ErrNotFound, t.Short())
	for hops := 0; len(queue) > 0 && hops < maxFetchHops; {
		addr := queue[0]
		queue = queue[1:]
		if seen[addr] || !addr.IsValid() {
			continue
		}
		seen[addr] = true
		hops++
		s.stats.fetchesRemote.Add(1)
		f, err := s.pool.call(ctx, addr, msgFetch, t[:])
		if err == nil {
			if f.typ != msgObject {
				err = fmt.Errorf("micro: fetch from %s: %w: answer type %d", addr, ErrProtocol, f.typ)
			} else {
				o := new(Object)
				if err = o.UnmarshalBinary(f.body); err == nil {
					err = o.Verify(t) // hash and signature, before anything is cached
				}
				if err == nil {
					return o, nil
				}
				s.stats.rejected.Add(1)
				s.log.Warn("rejected object from peer", "peer", addr, "token", t.Short(), "err", err)
				err = fmt.Errorf("micro: fetch %s from %s: %w", t.Short(), addr, err)
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("micro: fetch %s: %w", t.Short(), ctx.Err())
		}
		lastErr = err
		queue = append(queue, dittoOf(err)...)
	}
	return nil, fmt.Errorf("micro: fetch %s: %w", t.Short(), lastErr)
}

// Sync implements Local.
func (s *Server) Sync(ctx context.Context, t Token) error {
	if _, err := s.RequestPayload(ctx, t); err != nil {
		return err
	}
	st, err := s.st.repl(t)
	if err != nil {
		return err
	}
	peers := []netip.AddrPort{t.Home()}
	for _, p := range st.Peers {
		if ap, err := netip.ParseAddrPort(p); err == nil && !slices.Contains(peers, ap) {
			peers = append(peers, ap)
		}
	}
	var firstErr error
	ok := false
	for _, p := range peers {
		if p == s.self() {
			ok = true
			continue
		}
		if err := s.assentWith(ctx, p, t, t); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		ok = true
	}
	if !ok {
		return fmt.Errorf("micro: sync %s: %w", t.Short(), firstErr)
	}
	return nil
}

// Cluster implements Local.
func (s *Server) Cluster(ctx context.Context, t Token, after Token, limit int) ([]Token, error) {
	es, err := s.Entries(ctx, t, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Token, len(es))
	for i, e := range es {
		out[i] = e.Token
	}
	return out, nil
}

// Entries implements Local.
func (s *Server) Entries(ctx context.Context, t Token, after Token, limit int) ([]Entry, error) {
	es, err := s.st.entries(t, after, limit)
	if err != nil {
		return nil, err
	}
	if len(es) == 0 && !s.st.holds(t) {
		return nil, fmt.Errorf("%w: this server has no local copy of %s or its cluster", ErrNotFound, t.Short())
	}
	return es, nil
}

// WaitChange implements Local.
func (s *Server) WaitChange(ctx context.Context, ts []Token, seq uint64) (uint64, error) {
	for {
		s.chMu.Lock()
		cur, ch := s.seq, s.changed
		hit := seq == 0 || seq < s.pruned
		for _, t := range ts {
			if s.last[t] > seq {
				hit = true
			}
		}
		s.chMu.Unlock()
		if hit {
			return cur, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return seq, ctx.Err()
		case <-s.quit:
			return seq, ErrClosed
		}
	}
}

// Shared implements Local.
func (s *Server) Shared(ctx context.Context) ([]SharedObject, error) {
	m, err := s.st.replicated()
	if err != nil {
		return nil, err
	}
	var out []SharedObject
	for t, st := range m {
		so := SharedObject{Token: t, Flood: st.Flood, Peers: st.Peers}
		if st.SustainUntil > 0 {
			so.SustainUntil = time.UnixMilli(st.SustainUntil)
		}
		out = append(out, so)
	}
	slices.SortFunc(out, func(a, b SharedObject) int { return a.Token.Compare(b.Token) })
	return out, nil
}
