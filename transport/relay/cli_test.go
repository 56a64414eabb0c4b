package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
)

// TestCLIPubSubChannels drives the relay, pub, sub and channels commands
// as a script would.
func TestCLIPubSubChannels(t *testing.T) {
	p := startRelayProc(t, freePort(t), "--memory")
	bin := clibin.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := exec.CommandContext(ctx, bin, "-q", "sub", "notes", "--relay", p.addr, "--seq", "--count", "3")
	var subOut bytes.Buffer
	sub.Stdout = &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the subscriber is a member.
	poll(t, 10*time.Second, "subscriber joined", func() error {
		out, err := exec.CommandContext(ctx, bin, "-q", "channels", "--relay", p.addr).Output()
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), "notes") {
			return errNotYet(string(out))
		}
		return nil
	})
	pub := exec.CommandContext(ctx, bin, "-q", "pub", "notes", "--relay", p.addr, "--seq")
	pub.Stdin = strings.NewReader("one\ntwo\nthree\n")
	out, err := pub.Output()
	if err != nil {
		t.Fatalf("pub: %v", err)
	}
	if got := strings.Fields(string(out)); strings.Join(got, ",") != "1,2,3" {
		t.Fatalf("pub printed %q", out)
	}
	if err := sub.Wait(); err != nil {
		t.Fatalf("sub: %v", err)
	}
	if want := "1\tone\n2\ttwo\n3\tthree\n"; subOut.String() != want {
		t.Fatalf("sub printed %q, want %q", subOut.String(), want)
	}
	js, err := exec.CommandContext(ctx, bin, "-q", "channels", "--relay", p.addr, "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"last_seq": 3`) {
		t.Fatalf("channels --json: %s", js)
	}
	// A relay that is not there: a clear error and exit code 1.
	bad := exec.CommandContext(ctx, bin, "-q", "pub", "x", "--relay", "127.0.0.1:1")
	bad.Stdin = strings.NewReader("")
	var stderr bytes.Buffer
	bad.Stderr = &stderr
	err = bad.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "is the relay running") {
		t.Fatalf("pub to no relay: %v, %q", err, stderr.String())
	}
}

type errNotYet string

func (e errNotYet) Error() string { return "not yet: " + string(e) }

// TestRelayRootChannels: the relay command serves ROOT/channels (by name
// and by ID), keeps its log in ROOT/.state/relay, and picks up channel
// folders added while it runs.
func TestRelayRootChannels(t *testing.T) {
	root := t.TempDir()
	writeMeta := func(id, name string) {
		dir := filepath.Join(root, "channels", id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		md := "<Metadata>\n  <ID>" + id + "</ID>\n  <Name>" + name + "</Name>\n  <Comment>test</Comment>\n" +
			"  <MessageClass id=\"982130E40A294E3CAD5441841E87941E\" />\n  <CheckpointClass id=\"982130E40A294E3CAD5441841E87941E\" />\n</Metadata>\n"
		if err := os.WriteFile(filepath.Join(dir, "metadata.xml"), []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeMeta("00000000000000000000000000000001", "Text_1")
	p := startRelayProc(t, freePort(t), "--root", root, "--no-create")
	c := dial(t, p.addr)
	r := newSeqRecorder()
	m, err := c.Join(context.Background(), "00000000000000000000000000000001", r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Publish(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".state", "relay", "relay.db")); err != nil {
		t.Fatalf("durable log not in the root's state folder: %v", err)
	}
	writeMeta("00000000000000000000000000000002", "Text_2")
	poll(t, 10*time.Second, "new channel folder picked up", func() error {
		list, err := c.Channels(context.Background())
		if err != nil {
			return err
		}
		for _, ch := range list {
			if ch.Name == "Text_2" && ch.ID == "00000000000000000000000000000002" {
				return nil
			}
		}
		return errNotYet(fmt.Sprint(list))
	})
	if _, err := c.Join(context.Background(), "Text_2", newSeqRecorder()); err != nil {
		t.Fatal(err)
	}
}
