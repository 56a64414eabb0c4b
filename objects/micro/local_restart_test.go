package micro

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestLocalClientAcrossRestart: a LocalClient kept by a long-lived
// process (the mount) goes on working when its MO server restarts; idle
// connections to the old server are replaced, not reported as errors.
func TestLocalClientAcrossRestart(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	dir := t.TempDir()
	a := startServer(t, func(c *ServerConfig) { c.DataDir = dir })
	addr := a.Addr().String()
	lc, err := DialLocal(ctx, a.LocalSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	lib := newLib(t, lc, keys)
	m, err := lib.CreateNew(ctx, time.Now().Add(time.Hour), []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	// Several idle connections, as concurrent users leave them.
	done := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() { _, err := lc.Shared(ctx); done <- err }()
	}
	for i := 0; i < 4; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	startServer(t, func(c *ServerConfig) { c.DataDir = dir; c.Listen = addr })
	for i := 0; i < 10; i++ {
		g, err := lib.Get(ctx, m.Token())
		if err != nil {
			t.Fatalf("call %d after the restart: %v", i, err)
		}
		if string(g.Payload()) != "before" {
			t.Fatalf("payload %q", g.Payload())
		}
	}
}

// TestLocalAnswerTooLarge: a local request whose answer would exceed the
// frame limit (a whole large cluster at once) gets an error that says so
// and what to do; the connection and the server stay up.
func TestLocalAnswerTooLarge(t *testing.T) {
	ctx := tctx(t)
	s := startServer(t, nil)
	lc, err := DialLocal(ctx, s.LocalSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	var root Token
	root[8] = tokenVersion
	toks := randTokens(30000, 1e12) // about 5.5 MB of JSON at once
	es := make([]Entry, len(toks))
	for i, tk := range toks {
		es[i] = Entry{Token: tk}
	}
	if _, err := s.st.addEntries(root, es); err != nil {
		t.Fatal(err)
	}
	_, err = lc.Entries(ctx, root, Token{}, 0)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("whole cluster at once: %v, want ErrTooLarge naming the limit", err)
	}
	page, err := lc.Entries(ctx, root, Token{}, clusterPage)
	if err != nil || len(page) != clusterPage {
		t.Fatalf("a page after the refusal: %d %v", len(page), err)
	}
	all, err := clusterOf(ctx, lc, root)
	if err != nil || len(all) != len(toks) {
		t.Fatalf("paged cluster: %d %v", len(all), err)
	}
}

// TestLocalNoCopyIsNotEmpty: a server that holds nothing of an object (its
// home could not be reached) answers a cluster listing with ErrNotFound,
// over the local socket too; an empty cluster it knows lists nothing.
func TestLocalNoCopyIsNotEmpty(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	home := startServer(t, nil)
	local := startServer(t, nil)
	lc, err := DialLocal(ctx, local.LocalSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	hl := newLib(t, home, keys)
	known, err := hl.CreateNew(ctx, time.Now().Add(time.Hour), []byte("known"))
	if err != nil {
		t.Fatal(err)
	}
	unseen, err := hl.CreateNew(ctx, time.Now().Add(time.Hour), []byte("unseen"))
	if err != nil {
		t.Fatal(err)
	}
	if err := lc.Sync(ctx, known.Token()); err != nil {
		t.Fatal(err)
	}
	if ts, err := hl.ClusterOf(ctx, unseen.Token()); err != nil || len(ts) != 0 {
		t.Errorf("the home's own empty cluster: %v %v", ts, err)
	}
	if err := home.Close(); err != nil {
		t.Fatal(err)
	}
	lib := newLib(t, lc, keys)
	if ts, err := lib.ClusterOf(ctx, known.Token()); err != nil || len(ts) != 0 {
		t.Errorf("known empty cluster: %v %v, want none and no error", ts, err)
	}
	if ts, err := lib.ClusterOf(ctx, unseen.Token()); !errors.Is(err, ErrNotFound) || len(ts) != 0 {
		t.Errorf("cluster never copied, home gone: %v %v, want ErrNotFound", ts, err)
	}
	if _, err := lc.Entries(ctx, unseen.Token(), Token{}, clusterPage); !errors.Is(err, ErrNotFound) {
		t.Errorf("entries of a cluster never copied: %v, want ErrNotFound", err)
	}
}
