package micro

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestFolderConcurrentCreate: writes that race to create one new name
// make one shared file, the one the folder lists, holding one writer's
// content.
func TestFolderConcurrentCreate(t *testing.T) {
	ctx := tctx(t)
	srv := startServer(t, nil)
	lib := newLib(t, srv, mustKeys(t))
	f := NewFolder(lib, 2, testLogger())
	t.Cleanup(func() { f.Close() })

	const n = 4
	start := make(chan struct{})
	errs := make(chan error, n)
	written := map[string]bool{}
	for i := range n {
		data := fmt.Sprintf("writer %d\n", i)
		written[data] = true
		go func() {
			<-start
			errs <- f.Write(ctx, "same.txt", []byte(data))
		}()
	}
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	infos, err := SharedFiles(ctx, lib)
	if err != nil {
		t.Fatal(err)
	}
	var shared []Token
	for _, in := range infos {
		if in.Name == "same.txt" {
			shared = append(shared, in.Token)
		}
	}
	if len(shared) != 1 {
		t.Fatalf("%d shared files named same.txt, want 1", len(shared))
	}
	if got := f.Tokens()["same.txt"]; got != shared[0].String() {
		t.Fatalf("the folder lists %s, the server shares %s", got, shared[0])
	}
	got, err := f.Read(ctx, "same.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !written[string(got)] {
		t.Fatalf("same.txt holds %q, not one writer's content", got)
	}
}

// TestFolderRemove: a removed file leaves the folder and the server's
// shared list, a list taken before the removal does not bring it back,
// and opening its token does.
func TestFolderRemove(t *testing.T) {
	ctx := tctx(t)
	srv := startServer(t, nil)
	lib := newLib(t, srv, mustKeys(t))
	f := NewFolder(lib, 2, testLogger())
	t.Cleanup(func() { f.Close() })
	if err := f.Write(ctx, "a.txt", []byte("kept\n")); err != nil {
		t.Fatal(err)
	}
	tok := f.Token("a.txt")
	stale, err := SharedFiles(ctx, lib)
	if err != nil || len(stale) != 1 || stale[0].Token.String() != tok {
		t.Fatalf("shared before the removal: %v %v, want a.txt %s", stale, err, tok)
	}
	if err := f.Remove(ctx, "a.txt"); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(ctx, "a.txt"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a second removal: %v, want ErrNotFound", err)
	}
	if infos, err := SharedFiles(ctx, lib); err != nil || len(infos) != 0 {
		t.Fatalf("shared after the removal: %v %v", infos, err)
	}
	f.add(ctx, stale)
	if names := f.Names(); len(names) != 0 || f.Token("a.txt") != "" {
		t.Fatalf("a list from before the removal brought back %v", names)
	}
	parsed, err := ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Open(ctx, parsed); err != nil {
		t.Fatal(err)
	}
	got, err := f.Read(ctx, "a.txt")
	if err != nil || string(got) != "kept\n" {
		t.Fatalf("a.txt opened again by its token: %q %v", got, err)
	}
	f.add(ctx, stale)
	if names := f.Names(); len(names) != 1 {
		t.Fatalf("names after opening again: %v", names)
	}
}

// TestFolderMistypedToken: a new name with a token's shape that is not a
// token is refused, not made a new file; a name of another length is a
// plain new file.
func TestFolderMistypedToken(t *testing.T) {
	ctx := tctx(t)
	srv := startServer(t, nil)
	lib := newLib(t, srv, mustKeys(t))
	f := NewFolder(lib, 2, testLogger())
	t.Cleanup(func() { f.Close() })
	if err := f.Write(ctx, "a.txt", []byte("x")); err != nil {
		t.Fatal(err)
	}
	tok := f.Token("a.txt")
	bad := tok[:len(tok)-1] + "B" // the last character's unused low bits set
	err := f.Write(ctx, bad, nil)
	if err == nil || !strings.Contains(err.Error(), "has the shape of a token but is not one") {
		t.Fatalf("writing %q: %v", bad, err)
	}
	if names := f.Names(); len(names) != 1 {
		t.Fatalf("names after the refusal: %v", names)
	}
	if err := f.Write(ctx, tok[:20], nil); err != nil {
		t.Fatalf("a plain new name: %v", err)
	}
}
