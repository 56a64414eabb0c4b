package micro

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names in the bbolt file.
var (
	bktStore    = []byte("store")    // token -> record: objects this server keeps (home, sustained, pinned)
	bktCache    = []byte("cache")    // token -> record: fetched objects, LRU-bounded
	bktLRU      = []byte("lru")      // seq(8) -> token: cache use order
	bktLRUIdx   = []byte("lruidx")   // token -> seq(8)
	bktClusters = []byte("clusters") // token -> nested bucket: member token -> signature (+ box)
	bktRepl     = []byte("repl")     // token -> record: replication state (policies, peers)
	bktMeta     = []byte("meta")     // store-wide counters (see keyCacheBytes)
)

// keyCacheBytes names, in bktMeta, the bytes held in bktCache (u64). It
// changes in the same transaction as the cache, so a failed transaction
// leaves it as it was; opening the store recomputes it.
var keyCacheBytes = []byte("cachebytes")

// Record layout: magic "MOR1" | version u8 | kind u8 | crc32 (IEEE) of the
// body | body. The body of an object record is Object.MarshalBinary; of a
// replication record, JSON of replState.
const (
	recMagic   = "MOR1"
	recVersion = 1
	recObject  = 1
	recRepl    = 2
	recHeader  = 4 + 1 + 1 + 4
)

func encodeRecord(kind uint8, body []byte) []byte {
	b := make([]byte, recHeader, recHeader+len(body))
	copy(b, recMagic)
	b[4] = recVersion
	b[5] = kind
	binary.BigEndian.PutUint32(b[6:10], crc32.ChecksumIEEE(body))
	return append(b, body...)
}

// decodeRecord checks a record and returns its body (aliasing b).
func decodeRecord(kind uint8, b []byte) ([]byte, error) {
	if len(b) < recHeader || string(b[:4]) != recMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrInvalid)
	}
	if b[4] != recVersion {
		return nil, fmt.Errorf("%w: record version %d", ErrVersionMismatch, b[4])
	}
	if b[5] != kind {
		return nil, fmt.Errorf("%w: record kind %d, want %d", ErrInvalid, b[5], kind)
	}
	if crc32.ChecksumIEEE(b[recHeader:]) != binary.BigEndian.Uint32(b[6:10]) {
		return nil, ErrChecksum
	}
	return b[recHeader:], nil
}

// replState is the openly shared section of one local copy: its active
// replication policies and their data.
type replState struct {
	// Flood is the flooding level, or -1 when flooding is off.
	Flood int `json:"flood"`
	// SustainUntil keeps the object past its expiry (Unix ms; 0 none).
	SustainUntil int64 `json:"sustain,omitempty"`
	// Peers are the servers known to share the object (replication data).
	Peers []string `json:"peers,omitempty"`
}

// Where tells where a server found an object.
type Where uint8

// Places an object can be in.
const (
	Nowhere Where = iota
	InStore
	InCache
)

// String returns "nowhere", "store" or "cache".
func (w Where) String() string {
	switch w {
	case InStore:
		return "store"
	case InCache:
		return "cache"
	}
	return "nowhere"
}

// store is the server's bbolt file: store, cache, clusters and replication
// state. Its methods are safe for concurrent use.
type store struct {
	db         *bolt.DB
	cacheLimit int64
	log        *slog.Logger

	mu      sync.Mutex // protects lruSeq and touched; taken inside bolt transactions, never around one
	lruSeq  uint64
	touched map[Token]uint64 // cache hits not yet written to the LRU buckets

	// onDrop, if set, is called (inside a write transaction, so it must
	// not touch the store) for every cluster the store deletes.
	onDrop func(Token)
}

func (s *store) dropCluster(tx *bolt.Tx, t Token) error {
	err := tx.Bucket(bktClusters).DeleteBucket(t[:])
	if errors.Is(err, bolt.ErrBucketNotFound) {
		return nil
	}
	if err == nil && s.onDrop != nil {
		s.onDrop(t)
	}
	return err
}

func openStore(dir string, cacheLimit int64, log *slog.Logger) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("micro: store: %w", err)
	}
	path := filepath.Join(dir, "mo.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("micro: store: open %s: %w (is another MO server using this data directory?)", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("micro: store: open %s: %w", path, err)
	}
	s := &store{db: db, cacheLimit: cacheLimit, log: log, touched: map[Token]uint64{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktStore, bktCache, bktLRU, bktLRUIdx, bktClusters, bktRepl, bktMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		var n int64
		c := tx.Bucket(bktCache)
		if err := c.ForEach(func(k, v []byte) error { n += int64(len(v)); return nil }); err != nil {
			return err
		}
		if err := setCacheBytes(tx, n); err != nil {
			return err
		}
		if k, _ := tx.Bucket(bktLRU).Cursor().Last(); k != nil {
			s.lruSeq = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("micro: store: init %s: %w", path, err)
	}
	return s, nil
}

func (s *store) close() error {
	err := s.db.Update(func(tx *bolt.Tx) error { return s.applyTouches(tx) })
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// applyTouches writes the cache hits recorded by get into the LRU order.
// Callers are in a write tx.
func (s *store) applyTouches(tx *bolt.Tx) error {
	s.mu.Lock()
	touched := s.touched
	s.touched = map[Token]uint64{}
	s.mu.Unlock()
	if len(touched) == 0 {
		return nil
	}
	idx, lru, cache := tx.Bucket(bktLRUIdx), tx.Bucket(bktLRU), tx.Bucket(bktCache)
	for t, seq := range touched {
		if cache.Get(t[:]) == nil {
			continue
		}
		if old := idx.Get(t[:]); old != nil {
			if err := lru.Delete(old); err != nil {
				return err
			}
		}
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		if err := lru.Put(k[:], t[:]); err != nil {
			return err
		}
		if err := idx.Put(t[:], k[:]); err != nil {
			return err
		}
	}
	return nil
}

func decodeObjectRecord(v []byte) (*Object, error) {
	body, err := decodeRecord(recObject, v)
	if err != nil {
		return nil, err
	}
	o := new(Object)
	if err := o.UnmarshalBinary(body); err != nil {
		return nil, err
	}
	return o, nil
}

// putStore puts o in the store (and takes it out of the cache).
func (s *store) putStore(t Token, o *Object) error {
	rec := encodeRecord(recObject, o.appendTo(nil))
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := s.uncache(tx, t); err != nil {
			return err
		}
		return tx.Bucket(bktStore).Put(t[:], rec)
	})
}

// putCache puts o in the cache unless it is in the store, then evicts the
// least recently used objects beyond the size bound.
func (s *store) putCache(t Token, o *Object) error {
	rec := encodeRecord(recObject, o.appendTo(nil))
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bktStore).Get(t[:]) != nil {
			return nil
		}
		if err := s.uncache(tx, t); err != nil {
			return err
		}
		if err := tx.Bucket(bktCache).Put(t[:], rec); err != nil {
			return err
		}
		if err := setCacheBytes(tx, cacheBytes(tx)+int64(len(rec))); err != nil {
			return err
		}
		if err := s.touch(tx, t); err != nil {
			return err
		}
		if err := s.applyTouches(tx); err != nil {
			return err
		}
		return s.evict(tx)
	})
}

// touch moves t to the most recently used end. Callers are in a write tx.
func (s *store) touch(tx *bolt.Tx, t Token) error {
	idx, lru := tx.Bucket(bktLRUIdx), tx.Bucket(bktLRU)
	if old := idx.Get(t[:]); old != nil {
		if err := lru.Delete(old); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.lruSeq++
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], s.lruSeq)
	s.mu.Unlock()
	if err := lru.Put(seq[:], t[:]); err != nil {
		return err
	}
	return idx.Put(t[:], seq[:])
}

// cacheBytes returns the bytes held in the cache as tx sees them.
func cacheBytes(tx *bolt.Tx) int64 {
	v := tx.Bucket(bktMeta).Get(keyCacheBytes)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// setCacheBytes records n as the bytes held in the cache. Callers are in
// a write tx.
func setCacheBytes(tx *bolt.Tx, n int64) error {
	if n < 0 {
		n = 0
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(n))
	return tx.Bucket(bktMeta).Put(keyCacheBytes, v[:])
}

// uncache removes t from the cache, its LRU entries and (unless the object
// is in the store) nothing else. Callers are in a write tx.
func (s *store) uncache(tx *bolt.Tx, t Token) error {
	c := tx.Bucket(bktCache)
	if v := c.Get(t[:]); v != nil {
		n := int64(len(v))
		if err := c.Delete(t[:]); err != nil {
			return err
		}
		if err := setCacheBytes(tx, cacheBytes(tx)-n); err != nil {
			return err
		}
	}
	idx := tx.Bucket(bktLRUIdx)
	if seq := idx.Get(t[:]); seq != nil {
		if err := tx.Bucket(bktLRU).Delete(seq); err != nil {
			return err
		}
		return idx.Delete(t[:])
	}
	return nil
}

// evict removes least recently used cache entries (and their clusters,
// unless replication state pins them) until the cache fits its bound.
// Every pass deletes the first LRU entry, so it ends even on a damaged
// file: an entry that is not the one its token's index names is stale and
// is dropped (and logged); its token is evicted there only if it is cached
// and has no other place in the order.
func (s *store) evict(tx *bolt.Tx) error {
	lru, idx := tx.Bucket(bktLRU), tx.Bucket(bktLRUIdx)
	for cacheBytes(tx) > s.cacheLimit {
		k, v := lru.Cursor().First()
		if k == nil {
			return nil
		}
		t, err := TokenFromBytes(v)
		if err != nil {
			s.log.Warn("micro: store: dropping an LRU entry that holds no token", "seq", fmt.Sprintf("%x", k))
			if err := lru.Delete(k); err != nil {
				return err
			}
			continue
		}
		if at := idx.Get(t[:]); string(at) != string(k) {
			s.log.Warn("micro: store: dropping an LRU entry its index does not name", "seq", fmt.Sprintf("%x", k), "token", t.Short())
			if err := lru.Delete(k); err != nil {
				return err
			}
			if string(lru.Get(at)) == string(t[:]) || tx.Bucket(bktCache).Get(t[:]) == nil {
				continue // t is evicted at its own place, or is not cached
			}
			// t is cached with no other place in the order: evict it here.
			if err := idx.Delete(t[:]); err != nil {
				return err
			}
		}
		if err := s.uncache(tx, t); err != nil {
			return err
		}
		if tx.Bucket(bktRepl).Get(t[:]) == nil {
			if err := s.dropCluster(tx, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// get returns the object for t and where it was; a cache hit refreshes its
// place in the LRU order (lazily: see applyTouches).
func (s *store) get(t Token) (*Object, Where, error) {
	var o *Object
	var where Where
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktStore).Get(t[:]); v != nil {
			var err error
			o, err = decodeObjectRecord(v)
			where = InStore
			return err
		}
		if v := tx.Bucket(bktCache).Get(t[:]); v != nil {
			var err error
			o, err = decodeObjectRecord(v)
			where = InCache
			return err
		}
		return nil
	})
	if err != nil {
		return nil, Nowhere, fmt.Errorf("micro: store: get %s: %w", t.Short(), err)
	}
	if where == InCache {
		// Record the hit in memory; the next cache write (or close)
		// applies it, before anything is evicted.
		s.mu.Lock()
		s.lruSeq++
		s.touched[t] = s.lruSeq
		s.mu.Unlock()
	}
	return o, where, nil
}

// where reports where t is without touching the LRU order.
func (s *store) where(t Token) Where {
	w := Nowhere
	_ = s.db.View(func(tx *bolt.Tx) error {
		switch {
		case tx.Bucket(bktStore).Get(t[:]) != nil:
			w = InStore
		case tx.Bucket(bktCache).Get(t[:]) != nil:
			w = InCache
		}
		return nil
	})
	return w
}

// pin moves t from the cache into the store; it reports whether t was
// held at all.
func (s *store) pin(t Token) (bool, error) {
	held := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bktStore).Get(t[:]) != nil {
			held = true
			return nil
		}
		v := tx.Bucket(bktCache).Get(t[:])
		if v == nil {
			return nil
		}
		held = true
		rec := append([]byte(nil), v...)
		if err := s.uncache(tx, t); err != nil {
			return err
		}
		return tx.Bucket(bktStore).Put(t[:], rec)
	})
	return held, err
}

// cacheSize returns the bytes held in the cache.
func (s *store) cacheSize() int64 {
	var n int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		n = cacheBytes(tx)
		return nil
	})
	return n
}

// addEntries adds entries to t's cluster and returns those that were new.
func (s *store) addEntries(t Token, es []Entry) ([]Entry, error) {
	var added []Entry
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bktClusters).CreateBucketIfNotExists(t[:])
		if err != nil {
			return err
		}
		for _, e := range es {
			if b.Get(e.Token[:]) != nil {
				continue
			}
			if err := b.Put(e.Token[:], append(e.Sig[:], e.Box...)); err != nil {
				return err
			}
			added = append(added, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("micro: store: cluster %s: %w", t.Short(), err)
	}
	return added, nil
}

// entries loads t's cluster in order. after and limit page through it
// (zero after: from the start; limit <= 0: all).
func (s *store) entries(t Token, after Token, limit int) ([]Entry, error) {
	var es []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktClusters).Bucket(t[:])
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var k, v []byte
		if after.IsZero() {
			k, v = c.First()
		} else {
			k, v = c.Seek(after[:])
			if k != nil && string(k) == string(after[:]) {
				k, v = c.Next()
			}
		}
		for ; k != nil && (limit <= 0 || len(es) < limit); k, v = c.Next() {
			if len(k) != TokenSize || len(v) != 64 && len(v) != 64+boxSize {
				continue
			}
			var e Entry
			copy(e.Token[:], k)
			copy(e.Sig[:], v)
			if len(v) > 64 {
				e.Box = append([]byte(nil), v[64:]...)
			}
			es = append(es, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("micro: store: cluster %s: %w", t.Short(), err)
	}
	return es, nil
}

// holds reports whether the server holds anything of t: the object (in
// the store or the cache), a cluster, or replication state. A server that
// holds nothing of t has no local copy of its cluster, which is not the
// same as an empty one.
func (s *store) holds(t Token) bool {
	held := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		held = tx.Bucket(bktStore).Get(t[:]) != nil ||
			tx.Bucket(bktCache).Get(t[:]) != nil ||
			tx.Bucket(bktClusters).Bucket(t[:]) != nil ||
			tx.Bucket(bktRepl).Get(t[:]) != nil
		return nil
	})
	return held
}

// clusterLen returns the size of t's cluster.
func (s *store) clusterLen(t Token) int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bktClusters).Bucket(t[:]); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n
}

// repl returns the replication state of t (Flood -1 when none).
func (s *store) repl(t Token) (replState, error) {
	st := replState{Flood: -1}
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktRepl).Get(t[:])
		if v == nil {
			return nil
		}
		body, err := decodeRecord(recRepl, v)
		if err != nil {
			return err
		}
		return json.Unmarshal(body, &st)
	})
	if err != nil {
		return st, fmt.Errorf("micro: store: replication state of %s: %w", t.Short(), err)
	}
	return st, nil
}

// updateRepl changes t's replication state under one transaction; a state
// with no policy left is deleted.
func (s *store) updateRepl(t Token, fn func(*replState) error) (replState, error) {
	var st replState
	err := s.db.Update(func(tx *bolt.Tx) error {
		st = replState{Flood: -1}
		b := tx.Bucket(bktRepl)
		if v := b.Get(t[:]); v != nil {
			body, err := decodeRecord(recRepl, v)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(body, &st); err != nil {
				return err
			}
		}
		if err := fn(&st); err != nil {
			return err
		}
		if st.Flood < 0 && st.SustainUntil == 0 {
			return b.Delete(t[:])
		}
		body, err := json.Marshal(&st)
		if err != nil {
			return err
		}
		return b.Put(t[:], encodeRecord(recRepl, body))
	})
	return st, err
}

// replicated lists the tokens with replication state.
func (s *store) replicated() (map[Token]replState, error) {
	m := map[Token]replState{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktRepl).ForEach(func(k, v []byte) error {
			t, err := TokenFromBytes(k)
			if err != nil {
				return nil
			}
			body, err := decodeRecord(recRepl, v)
			if err != nil {
				return nil
			}
			st := replState{Flood: -1}
			if json.Unmarshal(body, &st) == nil {
				m[t] = st
			}
			return nil
		})
	})
	return m, err
}

// sweep removes stored objects whose copy-expire date plus grace has
// passed and that no SUSTAIN keeps, and expired cache entries. It returns
// the tokens removed.
func (s *store) sweep(now time.Time, grace time.Duration) ([]Token, error) {
	var gone []Token
	err := s.db.Update(func(tx *bolt.Tx) error {
		repl := tx.Bucket(bktRepl)
		for _, name := range [][]byte{bktStore, bktCache} {
			var dead []Token
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				t, err := TokenFromBytes(k)
				if err != nil {
					return nil
				}
				if !now.After(t.Expire().Add(grace)) {
					return nil
				}
				if rv := repl.Get(k); rv != nil {
					if body, err := decodeRecord(recRepl, rv); err == nil {
						var st replState
						if json.Unmarshal(body, &st) == nil && st.SustainUntil > now.UnixMilli() {
							return nil
						}
					}
				}
				dead = append(dead, t)
				return nil
			})
			if err != nil {
				return err
			}
			for _, t := range dead {
				if string(name) == string(bktCache) {
					if err := s.uncache(tx, t); err != nil {
						return err
					}
				} else if err := tx.Bucket(bktStore).Delete(t[:]); err != nil {
					return err
				}
				if err := s.dropCluster(tx, t); err != nil {
					return err
				}
				_ = repl.Delete(t[:])
				gone = append(gone, t)
			}
		}
		return nil
	})
	return gone, err
}
