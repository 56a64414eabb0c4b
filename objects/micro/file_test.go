package micro

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// TestFileFlooding shares a two-block file between Alice and Bob at
// flooding levels 2 and 3: at level 2 a write floods the changed block
// cluster only, at level 3 also the new content's payload.
func TestFileFlooding(t *testing.T) {
	for _, level := range []int{2, 3} {
		t.Run(fmt.Sprintf("level%d", level), func(t *testing.T) {
			ctx := tctx(t)
			keys := mustKeys(t)
			alice, bob := startServer(t, nil), startServer(t, nil)
			la, lb := newLib(t, alice, keys), newLib(t, bob, keys)
			opts := FileOptions{BlockSize: 8}
			data := []byte("block-1.block-2.")
			fa, err := CreateFile(ctx, la, "notes.txt", data, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer fa.Close()
			if got, _ := fa.ReadAll(ctx); !bytes.Equal(got, data) {
				t.Fatalf("read back %q", got)
			}
			if err := fa.Share(ctx, level); err != nil {
				t.Fatal(err)
			}
			fb, err := OpenFile(ctx, lb, fa.Token())
			if err != nil {
				t.Fatal(err)
			}
			defer fb.Close()
			if got, _ := fb.ReadAll(ctx); !bytes.Equal(got, data) {
				t.Fatalf("bob reads %q", got)
			}
			if err := fb.Share(ctx, level); err != nil {
				t.Fatal(err)
			}
			changes := fb.Changes()
			checkFor(t, 10*time.Second, func() error {
				sh, _ := alice.Shared(ctx)
				if len(sh) != 1 || len(sh[0].Peers) != 1 {
					return fmt.Errorf("alice peers %+v", sh)
				}
				return nil
			})
			blocks, _ := clusterOf(ctx, alice, fa.Token())
			if len(blocks) != 2 {
				t.Fatalf("%d blocks", len(blocks))
			}
			// Alice changes the second block: a new content C6 in B2.
			data2 := []byte("block-1.BLOCK-2!")
			if err := fa.Write(ctx, data2); err != nil {
				t.Fatal(err)
			}
			cs, _ := clusterOf(ctx, alice, blocks[1])
			if len(cs) != 2 {
				t.Fatalf("block 2 has %d contents", len(cs))
			}
			c6 := cs[1]
			if n, _ := clusterOf(ctx, alice, blocks[0]); len(n) != 1 {
				t.Fatal("unchanged block got a new content")
			}
			checkFor(t, 10*time.Second, func() error { return clusterHas(ctx, bob, blocks[1], c6) })
			select {
			case <-changes:
			case <-time.After(10 * time.Second):
				t.Fatal("no change notification at bob")
			}
			served := alice.Stats().FetchesServed
			if level == 2 {
				if w := bob.Has(c6); w != Nowhere {
					t.Fatalf("level 2 flooded the content payload (%v)", w)
				}
			} else {
				checkFor(t, 10*time.Second, func() error {
					if bob.Has(c6) == Nowhere {
						return fmt.Errorf("content payload not flooded")
					}
					return nil
				})
			}
			got, err := fb.ReadAll(ctx)
			if err != nil || !bytes.Equal(got, data2) {
				t.Fatalf("bob reads %q %v", got, err)
			}
			fetched := alice.Stats().FetchesServed - served
			if level == 2 && fetched != 1 || level == 3 && fetched != 0 {
				t.Fatalf("level %d: bob fetched %d objects from alice to read", level, fetched)
			}
			// Bob grows the file; Alice sees it.
			data3 := append(append([]byte{}, data2...), "block-3."...)
			if err := fb.Write(ctx, data3); err != nil {
				t.Fatal(err)
			}
			checkFor(t, 10*time.Second, func() error {
				got, err := fa.ReadAll(ctx)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, data3) {
					return fmt.Errorf("alice reads %q", got)
				}
				return nil
			})
			files, err := SharedFiles(ctx, lb)
			if err != nil || len(files) != 1 || files[0].Name != "notes.txt" || files[0].Flood != level {
				t.Fatalf("shared files %+v %v", files, err)
			}
			// Shrinking leaves empty blocks.
			if err := fa.Write(ctx, []byte("short")); err != nil {
				t.Fatal(err)
			}
			if got, _ := fa.ReadAll(ctx); string(got) != "short" {
				t.Fatalf("after shrink %q", got)
			}
		})
	}
}
