package qsm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestChannelsList: a client lists the channels the coordinator knows,
// with the number of nodes that have members in each; a channel left by
// every node leaves the list; without a coordinator link the listing
// fails with a message that says so, and the client stays usable.
func TestChannelsList(t *testing.T) {
	cl := newCluster(t, testConfig(t), 2)
	a, b := dial(t, cl.svcs[0].Addr()), dial(t, cl.svcs[1].Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	both := []*Member{}
	for _, c := range []*Client{a, b} {
		m, err := c.JoinMember(ctx, "list-both", newRecorder(false))
		if err != nil {
			t.Fatal(err)
		}
		both = append(both, m)
	}
	only, err := a.JoinMember(ctx, "list-one", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	waitMembers(t, both, 2)
	counts := func(c *Client) map[string]int {
		t.Helper()
		list, err := c.Channels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, ch := range list {
			out[ch.Name] = ch.Members
		}
		return out
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		got := counts(b)
		if got["list-both"] != 2 || got["list-one"] != 1 || len(got) != 2 {
			return fmt.Errorf("listed %v; want list-both:2 list-one:1", got)
		}
		return nil
	})
	if err := only.Leave(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := counts(a); got["list-one"] != 0 || got["list-both"] != 2 {
			return errors.New("list-one is still listed after its only member left")
		}
		return nil
	})

	// Without the coordinator: a clear error, and the client goes on.
	cl.coord.Close()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, err := a.Channels(ctx)
		if err == nil {
			return errors.New("listing succeeded without a coordinator")
		}
		if !strings.Contains(err.Error(), "coordinator") {
			t.Fatalf("error does not name the coordinator: %v", err)
		}
		return nil
	})
	if _, err := both[0].Publish(ctx, []byte("still here")); err != nil {
		t.Fatalf("publish after a failed listing: %v", err)
	}
}

// TestChannelsListOldService: against a service that does not speak the
// listing's protocol version the client refuses at once with a version
// error, without sending the service a frame it would not know.
func TestChannelsListOldService(t *testing.T) {
	cl := newCluster(t, testConfig(t), 1)
	c := dial(t, cl.svcs[0].Addr())
	c.version = listVersion - 1 // as the welcome of a version 2 service sets it
	_, err := c.Channels(context.Background())
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("got %v, want a version error that says to upgrade", err)
	}
	m, err := c.JoinMember(context.Background(), "old-service", newRecorder(false))
	if err != nil {
		t.Fatalf("the link broke: %v", err)
	}
	m.Leave()
}

// TestChannelsListOldCoordinator: a service whose coordinator speaks
// protocol version 2 answers a listing with a version error that names
// the coordinator; the client's link stays up.
func TestChannelsListOldCoordinator(t *testing.T) {
	cl := newCluster(t, testConfig(t), 1)
	cl.svcs[0].gmsVer.Store(listVersion - 1) // as a version 2 welcome sets it
	c := dial(t, cl.svcs[0].Addr())
	_, err := c.Channels(context.Background())
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "coordinator") {
		t.Fatalf("got %v, want a version error about the coordinator", err)
	}
	if _, err := c.JoinMember(context.Background(), "old-coordinator", newRecorder(false)); err != nil {
		t.Fatalf("the link broke: %v", err)
	}
}

// TestMalformedRequestClosesLink: a channel-list or stats request with
// bytes left over is not ignored (its sender would wait for an answer
// forever): the service answers with an error that says what was wrong
// and closes the link.
func TestMalformedRequestClosesLink(t *testing.T) {
	cl := newCluster(t, testConfig(t), 1)
	for _, c := range []struct {
		typ  uint8
		body []byte
	}{
		{cliListReq, []byte{0, 0, 0, 1, 9, 9}},
		{cliStatsReq, []byte{0, 0, 0, 1, 0, 9}},
	} {
		conn, err := net.Dial("tcp", cl.svcs[0].Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		e := encoder{}
		e.b = append(e.b, cliMagic...)
		e.u8(ProtocolVersionMin)
		e.u8(ProtocolVersionMax)
		e.str("test")
		conn.Write(appendFrame(nil, cliHello, e.b))
		fr := newFrameReader(conn, maxFrame)
		if typ, _, err := fr.next(); err != nil || typ != cliWelcome {
			t.Fatalf("welcome: type %d, %v", typ, err)
		}
		conn.Write(appendFrame(nil, c.typ, c.body))
		var msg string
		for {
			typ, body, err := fr.next()
			if err != nil {
				t.Fatalf("request type %d: link ended without an error frame: %v", c.typ, err)
			}
			if typ == cliError {
				d := decoder{b: body}
				d.u32()
				d.u32()
				d.u16()
				msg = d.str()
				break
			}
		}
		if !strings.Contains(msg, "trailing bytes") {
			t.Fatalf("request type %d: error %q does not say what was wrong", c.typ, msg)
		}
		if _, _, err := fr.next(); err == nil {
			t.Fatalf("request type %d: the link stayed open", c.typ)
		}
	}
}
