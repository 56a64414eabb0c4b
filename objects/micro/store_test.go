package micro

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testObject makes a signed object of about size payload bytes.
func testObject(t *testing.T, keys Keys, size int) (Token, *Object) {
	t.Helper()
	home := netip.MustParseAddrPort("127.0.0.1:4000")
	o, err := NewObject(keys, home, time.Now().Add(time.Hour), make([]byte, size))
	if err != nil {
		t.Fatal(err)
	}
	return o.Token(), o
}

// cacheBytesOnDisk sums the records in the cache bucket.
func cacheBytesOnDisk(t *testing.T, s *store) int64 {
	t.Helper()
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktCache).ForEach(func(k, v []byte) error { n += int64(len(v)); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An LRU entry whose token's index points elsewhere (a damaged file) is
// dropped by eviction instead of being picked again and again.
func TestStoreEvictStaleLRUEntry(t *testing.T) {
	dir := t.TempDir()
	keys := mustKeys(t)
	s, err := openStore(dir, 1<<20, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t1, o1 := testObject(t, keys, 1000)
	t2, o2 := testObject(t, keys, 1000)
	for _, p := range []struct {
		t Token
		o *Object
	}{{t1, o1}, {t2, o2}} {
		if err := s.putCache(p.t, p.o); err != nil {
			t.Fatal(err)
		}
	}
	// Damage the file: a second, older LRU entry for t1 that its index
	// does not name, and an LRU entry for t2 whose index is gone.
	err = s.db.Update(func(tx *bolt.Tx) error {
		var k [8]byte
		if err := tx.Bucket(bktLRU).Put(k[:], t1[:]); err != nil {
			return err
		}
		return tx.Bucket(bktLRUIdx).Delete(t2[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	// Reopen the damaged file with a bound that forces eviction.
	s, err = openStore(dir, 1500, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t3, o3 := testObject(t, keys, 1000)
	done := make(chan error, 1)
	go func() { done <- s.putCache(t3, o3) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		// The store is stuck inside a write transaction; closing it
		// would block too, so leave it.
		t.Fatal("putCache did not return: eviction makes no progress on a stale LRU entry")
	}
	defer s.close()
	if w := s.where(t3); w != InCache {
		t.Fatalf("new object is in %v, want cache", w)
	}
	if got, limit := s.cacheSize(), int64(1500); got > limit {
		t.Fatalf("cache holds %d bytes, bound %d", got, limit)
	}
	if got, want := s.cacheSize(), cacheBytesOnDisk(t, s); got != want {
		t.Fatalf("cache size %d, records hold %d", got, want)
	}
	// No LRU entry is left that its index does not name.
	err = s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bktLRUIdx)
		return tx.Bucket(bktLRU).ForEach(func(k, v []byte) error {
			if string(idx.Get(v)) != string(k) {
				t.Errorf("stale LRU entry %d left", binary.BigEndian.Uint64(k))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A write transaction that fails leaves the cache size as it was.
func TestStoreCacheSizeFailedTx(t *testing.T) {
	dir := t.TempDir()
	keys := mustKeys(t)
	s, err := openStore(dir, 2500, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	t1, o1 := testObject(t, keys, 1000)
	t2, o2 := testObject(t, keys, 1000)
	for _, p := range []struct {
		t Token
		o *Object
	}{{t1, o1}, {t2, o2}} {
		if err := s.putCache(p.t, p.o); err != nil {
			t.Fatal(err)
		}
	}
	before := s.cacheSize()
	if want := cacheBytesOnDisk(t, s); before != want {
		t.Fatalf("cache size %d, records hold %d", before, want)
	}
	// A plain value where t1's cluster bucket belongs makes dropping the
	// cluster, and so evicting t1, fail.
	err = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bktClusters).Put(t1[:], []byte("x")) })
	if err != nil {
		t.Fatal(err)
	}
	t3, o3 := testObject(t, keys, 1500)
	if err := s.putCache(t3, o3); err == nil {
		t.Fatal("putCache succeeded although evicting t1 must fail")
	}
	if got := s.cacheSize(); got != before {
		t.Fatalf("cache size %d after a failed putCache, want %d", got, before)
	}
	if got, want := s.cacheSize(), cacheBytesOnDisk(t, s); got != want {
		t.Fatalf("cache size %d, records hold %d", got, want)
	}
}
