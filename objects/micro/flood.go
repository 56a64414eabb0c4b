package micro

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// maxPeersPerObject bounds the replication data (known peers) of one object.
const maxPeersPerObject = 64

// maxGraphWalk bounds the objects visited when following a flooding level.
const maxGraphWalk = 100000

// maxReconPasses bounds the reconciliations one assent runs in a row when
// each reaches maxReconRounds while still bringing new entries.
const maxReconPasses = 64

// maxCachedSets bounds the clusters kept in memory for reconciliation.
const maxCachedSets = 8

type cachedSet struct {
	set *Set
	seq uint64 // lastChange(t) when loading began
}

// lastChange returns the change number of t's cluster (or a number that
// differs from any cached one once t's number was pruned).
func (s *Server) lastChange(t Token) uint64 {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	if v, ok := s.last[t]; ok {
		return v
	}
	return s.pruned
}

// loadSet returns t's cluster (with signatures) for reconciliation, from
// memory while it has not changed, else from the store.
func (s *Server) loadSet(t Token) (*Set, error) {
	seq := s.lastChange(t)
	s.setsMu.Lock()
	if c, ok := s.sets[t]; ok && c.seq == seq {
		s.setsMu.Unlock()
		return c.set, nil
	}
	s.setsMu.Unlock()
	es, err := s.st.entries(t, Token{}, 0)
	if err != nil {
		return nil, err
	}
	if es == nil {
		es = []Entry{}
	}
	set := NewSet(nil, es)
	s.setsMu.Lock()
	if len(s.sets) >= maxCachedSets {
		for k := range s.sets {
			delete(s.sets, k)
			break
		}
	}
	s.sets[t] = cachedSet{set: set, seq: seq}
	s.setsMu.Unlock()
	return set, nil
}

// accepts reports whether this server takes flooded cluster items of obj
// under root: root must have a flooding policy whose level reaches obj's
// cluster (depth d needs level >= 2d).
func (s *Server) accepts(root, obj Token) bool {
	st, err := s.st.repl(root)
	if err != nil || st.Flood < 0 {
		return false
	}
	if root == obj {
		return true
	}
	d := s.depthOf(root, obj, st.Flood/2)
	return d > 0 && 2*d <= st.Flood
}

// acceptsObject reports whether this server takes obj pushed under root:
// depth d needs level >= 2d-1.
func (s *Server) acceptsObject(root, obj Token) bool {
	st, err := s.st.repl(root)
	if err != nil || st.Flood < 1 {
		return false
	}
	d := s.depthOf(root, obj, (st.Flood+1)/2)
	return d > 0 && 2*d-1 <= st.Flood
}

// depthOf returns the depth of target in the graph from root, following
// local clusters up to maxDepth; 0 when not found.
func (s *Server) depthOf(root, target Token, maxDepth int) int {
	frontier := []Token{root}
	seen := map[Token]bool{root: true}
	for d := 1; d <= maxDepth && len(frontier) > 0; d++ {
		var next []Token
		for _, f := range frontier {
			es, err := s.st.entries(f, Token{}, 0)
			if err != nil {
				return 0
			}
			for _, e := range es {
				if e.Token == target {
					return d
				}
				if !seen[e.Token] && len(seen) < maxGraphWalk {
					seen[e.Token] = true
					next = append(next, e.Token)
				}
			}
		}
		frontier = next
	}
	return 0
}

// learnPeers adds addresses to root's replication data; it reports whether
// one was new.
func (s *Server) learnPeers(root Token, addrs []netip.AddrPort) bool {
	added := false
	_, err := s.st.updateRepl(root, func(st *replState) error {
		if st.Flood < 0 {
			return nil
		}
		for _, a := range addrs {
			if !a.IsValid() || a.Port() == 0 || a == s.self() || len(st.Peers) >= maxPeersPerObject {
				continue
			}
			if as := a.String(); !slices.Contains(st.Peers, as) {
				st.Peers = append(st.Peers, as)
				added = true
			}
		}
		return nil
	})
	return err == nil && added
}

// forgetPeer removes addr from root's replication data, unless it is
// root's home.
func (s *Server) forgetPeer(root Token, addr netip.AddrPort) {
	if addr == root.Home() {
		return
	}
	s.st.updateRepl(root, func(st *replState) error {
		st.Peers = slices.DeleteFunc(st.Peers, func(p string) bool { return p == addr.String() })
		return nil
	})
}

func (s *Server) peersOf(root Token) []netip.AddrPort {
	st, err := s.st.repl(root)
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, p := range st.Peers {
		if ap, err := netip.ParseAddrPort(p); err == nil {
			out = append(out, ap)
		}
	}
	return out
}

// mergeEntries verifies and adds entries learned for obj's cluster.
func (s *Server) mergeEntries(objTok Token, obj *Object, es []Entry) (int, error) {
	good := es[:0:0]
	for _, e := range es {
		if err := VerifyEntry(obj, objTok, e); err != nil {
			s.stats.rejected.Add(1)
			s.log.Warn("rejected cluster entry", "object", objTok.Short(), "err", err)
			continue
		}
		good = append(good, e)
	}
	if len(good) == 0 {
		return 0, nil
	}
	added, err := s.st.addEntries(objTok, good)
	if err != nil {
		return 0, err
	}
	if len(added) > 0 {
		s.changedCluster(objTok)
	}
	return len(added), nil
}

// serveAssent answers one ASSENT message.
func (s *Server) serveAssent(ctx context.Context, peer netip.AddrPort, m assentMsg) (assentReply, error) {
	s.stats.assents.Add(1)
	obj, _, err := s.st.get(m.obj)
	if err != nil {
		return assentReply{}, err
	}
	if obj == nil {
		return assentReply{}, fmt.Errorf("%w: %s", ErrNotFound, m.obj.Short())
	}
	accepted := s.accepts(m.root, m.obj)
	if !accepted && m.root != m.obj {
		return assentReply{}, fmt.Errorf("%w: %s under %s", ErrNotAccepted, m.obj.Short(), m.root.Short())
	}
	set, err := s.loadSet(m.obj)
	if err != nil {
		return assentReply{}, err
	}
	ans, learned, err := set.reconRespond(m.recon)
	if err != nil {
		return assentReply{}, err
	}
	rep := assentReply{accepted: accepted, recon: ans}
	if accepted {
		if _, err := s.mergeEntries(m.obj, obj, learned); err != nil {
			return assentReply{}, err
		}
		if m.flags&assentFlooding != 0 && s.learnPeers(m.root, append([]netip.AddrPort{peer}, m.peers...)) {
			s.scheduleFlood(m.root)
		}
		rep.peers = s.peersOf(m.root)
	}
	return rep, nil
}

// assentWith harmonizes obj's cluster with peer, under root. It takes
// what the peer has; the peer takes what it lacks if its policy matches.
func (s *Server) assentWith(ctx context.Context, peer netip.AddrPort, root, objTok Token) error {
	_, err := s.assentStats(ctx, peer, root, objTok)
	return err
}

// assentStats is assentWith that also returns the cost.
func (s *Server) assentStats(ctx context.Context, peer netip.AddrPort, root, objTok Token) (ReconStats, error) {
	obj, _, err := s.st.get(objTok)
	if err != nil {
		return ReconStats{}, err
	}
	if obj == nil {
		return ReconStats{}, fmt.Errorf("micro: assent %s: %w locally", objTok.Short(), ErrNotFound)
	}
	first := true
	accepted := false
	rootSt, err := s.st.repl(root)
	if err != nil {
		return ReconStats{}, err
	}
	var peersBack []netip.AddrPort
	exchange := func(ctx context.Context, msg []byte) ([]byte, error) {
		m := assentMsg{root: root, obj: objTok, recon: msg}
		if rootSt.Flood >= 0 {
			m.flags = assentFlooding
		}
		if first {
			m.peers = s.peersOf(root)
			first = false
		}
		f, err := s.pool.call(ctx, peer, msgAssent, m.encode())
		if err != nil {
			return nil, err
		}
		if f.typ != msgAssentReply {
			return nil, fmt.Errorf("%w: answer type %d to assent", ErrProtocol, f.typ)
		}
		rep, err := decodeAssentReply(f.body)
		if err != nil {
			return nil, err
		}
		peersBack = append(peersBack, rep.peers...)
		accepted = rep.accepted
		return rep.recon, nil
	}
	var rst ReconStats
	for pass := 1; ; pass++ {
		set, err := s.loadSet(objTok)
		if err != nil {
			return rst, err
		}
		learned, st, rerr := reconcile(ctx, set, exchange)
		rst.RoundTrips += st.RoundTrips
		rst.BytesSent += st.BytesSent
		rst.BytesReceived += st.BytesReceived
		rst.Learned += st.Learned
		// What was learned is kept even when the reconciliation stopped
		// short: every entry is verified on its own.
		added, err := s.mergeEntries(objTok, obj, learned)
		if err != nil {
			return rst, err
		}
		if rerr == nil {
			break
		}
		// A large difference takes more rounds than one reconciliation
		// may run: go on from what is now known, as long as each pass
		// brings entries that verify.
		if !isReconRounds(rerr) || added == 0 || pass >= maxReconPasses || ctx.Err() != nil {
			return rst, fmt.Errorf("micro: assent %s with %s: %w", objTok.Short(), peer, rerr)
		}
	}
	if !accepted {
		// The peer does not flood root: stop flooding it (it will
		// teach us again when it starts).
		s.forgetPeer(root, peer)
	} else if s.learnPeers(root, append([]netip.AddrPort{peer}, peersBack...)) {
		s.scheduleFlood(root)
	}
	return rst, nil
}

// serveOffer answers which offered objects this server wants under root.
func (s *Server) serveOffer(m offerMsg) ([]uint16, error) {
	var want []uint16
	for i, t := range m.toks {
		if s.st.where(t) == Nowhere && s.acceptsObject(m.root, t) {
			want = append(want, uint16(i))
		}
	}
	return want, nil
}

// servePush takes pushed objects that match their tokens and this
// server's policy for root.
func (s *Server) servePush(m pushMsg) (int, error) {
	n := 0
	for _, o := range m.objs {
		t := o.Token()
		if err := o.verifySig(t); err != nil {
			s.stats.rejected.Add(1)
			continue
		}
		if !s.acceptsObject(m.root, t) {
			continue
		}
		if err := s.st.putCache(t, o); err != nil {
			return n, err
		}
		s.stats.pushed.Add(1)
		n++
	}
	return n, nil
}

// pushTo offers objects to peer under root and sends the ones it wants.
func (s *Server) pushTo(ctx context.Context, peer netip.AddrPort, root Token, toks []Token) error {
	for len(toks) > 0 {
		batch := toks[:min(len(toks), maxBatch)]
		toks = toks[len(batch):]
		var have []Token
		for _, t := range batch {
			if s.st.where(t) != Nowhere {
				have = append(have, t)
			}
		}
		if len(have) == 0 {
			continue
		}
		f, err := s.pool.call(ctx, peer, msgOffer, offerMsg{root: root, toks: have}.encode())
		if err != nil {
			return err
		}
		idx, err := decodeWant(f.body, len(have))
		if err != nil {
			return err
		}
		var objs []*Object
		size := 0
		flush := func() error {
			if len(objs) == 0 {
				return nil
			}
			_, err := s.pool.call(ctx, peer, msgPush, pushMsg{root: root, objs: objs}.encode())
			objs, size = nil, 0
			return err
		}
		for _, i := range idx {
			o, _, err := s.st.get(have[i])
			if err != nil || o == nil {
				continue
			}
			if size+o.Size() > MaxFrame/2 {
				if err := flush(); err != nil {
					return err
				}
			}
			objs = append(objs, o)
			size += o.Size() + 4
		}
		if err := flush(); err != nil {
			return err
		}
	}
	return nil
}

// scheduleFlood queues a flooding pass for root.
func (s *Server) scheduleFlood(root Token) {
	s.floodMu.Lock()
	s.floodQ[root] = true
	s.floodMu.Unlock()
	select {
	case s.floodKick <- struct{}{}:
	default:
	}
}

// flooder runs queued flooding passes, and all of them every
// FloodInterval. It is the one goroutine that floods.
func (s *Server) flooder() {
	var tick <-chan time.Time
	if s.cfg.FloodInterval > 0 {
		tk := time.NewTicker(s.cfg.FloodInterval)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-s.quit:
			return
		case <-s.floodKick:
		case <-tick:
			if m, err := s.st.replicated(); err == nil {
				for t, st := range m {
					if st.Flood >= 0 {
						s.scheduleFlood(t)
					}
				}
			}
			continue
		}
		s.floodMu.Lock()
		q := s.floodQ
		s.floodQ = map[Token]bool{}
		s.floodMu.Unlock()
		for root := range q {
			s.floodRoot(root)
		}
	}
}

// floodParallel bounds the peers one flooding pass talks to at once.
const floodParallel = 8

// floodRoot runs root's flooding policy against every known peer, a few
// at a time; it returns when all are done.
func (s *Server) floodRoot(root Token) {
	st, err := s.st.repl(root)
	if err != nil || st.Flood < 0 {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, floodParallel)
	for _, peer := range s.peersOf(root) {
		if peer == s.self() {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := s.ctx(30 * time.Second)
			defer cancel()
			if err := s.floodTo(ctx, peer, root, st.Flood); err != nil && ctx.Err() == nil {
				s.log.Debug("flood", "root", root.Short(), "peer", peer, "err", err)
			}
		}()
	}
	wg.Wait()
}

// floodTo floods root's graph to peer up to level.
func (s *Server) floodTo(ctx context.Context, peer netip.AddrPort, root Token, level int) error {
	if err := s.assentWith(ctx, peer, root, root); err != nil {
		return err
	}
	frontier := []Token{root}
	seen := map[Token]bool{root: true}
	for d := 1; 2*d-1 <= level && len(frontier) > 0; d++ {
		var members []Token
		for _, f := range frontier {
			es, err := s.st.entries(f, Token{}, 0)
			if err != nil {
				return err
			}
			for _, e := range es {
				if !seen[e.Token] && len(seen) < maxGraphWalk {
					seen[e.Token] = true
					members = append(members, e.Token)
				}
			}
		}
		if err := s.pushTo(ctx, peer, root, members); err != nil {
			return err
		}
		if 2*d <= level {
			for _, m := range members {
				if s.st.where(m) == Nowhere {
					continue
				}
				if err := s.assentWith(ctx, peer, root, m); err != nil && !errors.Is(err, ErrNotAccepted) && !errors.Is(err, ErrNotFound) {
					return err
				}
			}
		}
		frontier = members
	}
	return nil
}
