package micro

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSealedCluster floods a sealed cluster between two servers: the
// servers reconcile it without being able to read its members.
func TestSealedCluster(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	adir := t.TempDir()
	alice := startServer(t, func(c *ServerConfig) { c.DataDir = adir })
	bob := startServer(t, nil)
	la, lb := newLib(t, alice, keys), newLib(t, bob, keys)
	m, err := la.CreateNewWith(ctx, time.Now().Add(time.Hour), []byte("secret group"), CreateOptions{SealedCluster: true})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := lb.CreateCopy(ctx, m.Token())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*MO{m, mb} {
		if err := x.PutReplication(ctx, Policy{Kind: Flooding}); err != nil {
			t.Fatal(err)
		}
	}
	tr := NewTracker()
	n1, _ := lb.CreateNew(ctx, time.Now().Add(time.Hour), []byte("N1"))
	if err := mb.Add(ctx, n1.Token()); err != nil {
		t.Fatal(err)
	}
	got, ok, err := m.TryWait(tr, 10*time.Second)
	if err != nil || !ok || got != n1.Token() {
		t.Fatalf("alice waits: %v %v %v", ok, err, got == n1.Token())
	}
	ids, _ := alice.Cluster(ctx, m.Token(), Token{}, 0)
	if len(ids) != 1 || ids[0] == n1.Token() || ids[0].Expire() != n1.Token().Expire() {
		t.Fatalf("server sees %v", ids)
	}
	// A clear entry does not go into a sealed cluster.
	if _, err := bob.Update(ctx, m.Token(), []Entry{NewEntry(keys, m.Token(), n1.Token())}); !errors.Is(err, ErrBadEntry) {
		t.Fatalf("clear entry in sealed cluster: %v", err)
	}
	// Other keys cannot open the members.
	other := newLib(t, alice, mustKeys(t))
	if _, err := OpenEntry(other.Keys(), m.Token(), mustEntries(t, alice, m.Token())[0]); !errors.Is(err, ErrBadKeys) {
		t.Fatalf("open with other keys: %v", err)
	}
	// Over the local socket too, the server lists ids and the Lib opens them.
	lc, err := DialLocal(ctx, alice.LocalSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	sl := newLib(t, lc, keys)
	if ids2, err := sl.ClusterOf(ctx, m.Token()); err != nil || len(ids2) != 1 || ids2[0] != ids[0] {
		t.Fatalf("ids over the socket: %v %v", ids2, err)
	}
	ms, err := sl.Get(ctx, m.Token())
	if err != nil {
		t.Fatal(err)
	}
	if ts, err := ms.Cluster(ctx); err != nil || len(ts) != 1 || ts[0] != n1.Token() {
		t.Fatalf("opened over the socket: %v %v", ts, err)
	}
	// Alice's bbolt file never holds N1's token.
	alice.Close()
	db, err := os.ReadFile(filepath.Join(adir, "mo.db"))
	if err != nil {
		t.Fatal(err)
	}
	h := n1.Token().Hash()
	if bytes.Contains(db, h[:16]) {
		t.Fatal("the member token is readable in alice's store")
	}
}

func mustEntries(t *testing.T, s *Server, tok Token) []Entry {
	es, err := s.Entries(tctx(t), tok, Token{}, 0)
	if err != nil || len(es) == 0 {
		t.Fatal(fmt.Errorf("entries: %v (%d)", err, len(es)))
	}
	return es
}
