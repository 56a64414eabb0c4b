package micro

import (
	"fmt"
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
