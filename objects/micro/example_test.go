package micro_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/liveobjects/liveobjects/objects/micro"
)

// Example shows the lib-server API: two MO servers, an object created at
// one and copied at the other, and a cluster that floods between them.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "mo-example-")
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(name string) *micro.Server {
		s, err := micro.NewServer(micro.ServerConfig{Listen: "127.0.0.1:0", DataDir: dir + "/" + name, Logger: quiet})
		if err != nil {
			panic(err)
		}
		if err := s.Start(ctx); err != nil {
			panic(err)
		}
		return s
	}
	alice, bob := start("alice"), start("bob")
	defer alice.Close()
	defer bob.Close()
	keys, _ := micro.NewKeys() // shared by the group, out of band
	la, lb := micro.NewLib(alice, keys), micro.NewLib(bob, keys)
	defer la.Close()
	defer lb.Close()

	m, _ := la.CreateNew(ctx, time.Now().Add(24*time.Hour), []byte("news"))
	copyB, _ := lb.CreateCopy(ctx, m.Token())
	fmt.Printf("bob's copy: %s\n", copyB.Payload())

	m.PutReplication(ctx, micro.Policy{Kind: micro.Flooding})
	copyB.PutReplication(ctx, micro.Policy{Kind: micro.Flooding})
	item, _ := lb.CreateNew(ctx, time.Now().Add(time.Hour), []byte("an item"))
	copyB.Add(ctx, item.Token())

	tr := micro.NewTracker()
	if t, ok, _ := m.TryWait(tr, 10*time.Second); ok {
		got, _ := la.Get(ctx, t)
		fmt.Printf("alice got: %s\n", got.Payload())
	}
	// Output:
	// bob's copy: news
	// alice got: an item
}
