package micro

import (
	"testing"
	"time"
)

// TestCopyLargeClusterPastRoundLimit: copying a cluster whose transfer
// takes more rounds than one reconciliation may run (at the default
// bound: about half a million entries onto an empty copy) keeps what each
// reconciliation brought and goes on until the copy is complete, instead
// of failing and dropping everything it learned. The bound is lowered so
// that a cluster of 28000 entries needs more than one reconciliation.
func TestCopyLargeClusterPastRoundLimit(t *testing.T) {
	old := maxReconRounds
	maxReconRounds = 3
	t.Cleanup(func() { maxReconRounds = old })
	ctx := tctx(t)
	keys := mustKeys(t)
	a, b := startServer(t, nil), startServer(t, nil)
	m, err := newLib(t, a, keys).CreateNew(ctx, time.Now().Add(time.Hour), []byte("big"))
	if err != nil {
		t.Fatal(err)
	}
	// About 3.5 MB of entries: more rounds of items (at reconBudget each) than one reconciliation may run.
	const n = 28000
	toks := randTokens(n, time.Now().Add(time.Hour).UnixMilli())
	es := make([]Entry, n)
	for i, tk := range toks {
		tk[26] = 1 // a valid port
		es[i] = NewEntry(keys, m.Token(), tk)
	}
	if _, err := a.st.addEntries(m.Token(), es); err != nil {
		t.Fatal(err)
	}
	a.notify(m.Token())
	if _, err := newLib(t, b, keys).CreateCopy(ctx, m.Token()); err != nil {
		t.Fatalf("copy: %v (has %d of %d)", err, b.st.clusterLen(m.Token()), n)
	}
	if got := b.st.clusterLen(m.Token()); got != n {
		t.Fatalf("copy holds %d of %d members", got, n)
	}
}
