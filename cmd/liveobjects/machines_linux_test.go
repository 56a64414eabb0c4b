package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport/qsm"
	"github.com/liveobjects/liveobjects/transport/qsm/qsmlab"
)

// TestTwoMachinesOverQSM shares a live object between two machines, as
// the shell sees it: two test hosts (network namespaces on a bridge the
// test makes, with IP multicast between them) each run 'liveobjects up'
// with a root of their own whose QSM local service is on; the first also
// runs the coordinator. A line echoed into qsm/chat.liveobject of one
// mount is read by cat from the other's, both ways, carried by QSM's
// multicast between the hosts.
func TestTwoMachinesOverQSM(t *testing.T) {
	needFUSE(t)
	if err := qsmlab.Available(); err != nil {
		t.Skipf("skipping: %v; run the tests as root to include the two-machine case", err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("nsenter is not installed (util-linux)")
	}
	lab, err := qsmlab.New(qsmlab.Options{Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	dir := t.TempDir()
	gms := lab.NodeIP(0) + ":60300"
	mnts := make([]string, 2)
	daemons := make([]*daemon, 2)
	for i := range 2 {
		root := filepath.Join(dir, fmt.Sprintf("root%d", i))
		if out, err := exec.Command(bin, "init", root).CombinedOutput(); err != nil {
			t.Fatalf("init: %v %s", err, out)
		}
		services := []string{"quicksilver_localservice"}
		if i == 0 {
			services = append(services, "quicksilver_coordinator")
		}
		for _, s := range services {
			if out, err := exec.Command(bin, "service", "on", root, s).CombinedOutput(); err != nil {
				t.Fatalf("service on %s: %v %s", s, err, out)
			}
		}
		// The settings a user gives a root on a LAN: the coordinator's
		// address, the LAN's adapter for multicast, and the host's own
		// address for the uplink that the mount's client uses.
		repl := strings.NewReplacer(
			`"gms_address" value="127.0.0.1:60300"`, `"gms_address" value="`+gms+`"`,
			`"subnet" value=""`, `"subnet" value="`+lab.Prefix()+`"`,
			`"uplink_address" value="127.0.0.1"`, `"uplink_address" value="`+lab.NodeIP(i)+`"`,
		)
		editRegistry(t, root, repl.Replace)
		mnts[i] = filepath.Join(dir, fmt.Sprintf("live%d", i))
		daemons[i] = startCmd(t, mnts[i], "nsenter", "--net=/run/netns/"+lab.Namespace(i),
			bin, "up", "--root", root, "--listen", lab.NodeIP(i)+":0", mnts[i])
	}
	for i, mnt := range mnts {
		waitFor(t, 20*time.Second, func() error {
			out, err := sh(t, "cat "+mnt+"/services/quicksilver_localservice.liveobject")
			if err != nil || !strings.Contains(out, "state: running") {
				return fmt.Errorf("host %d: QSM local service: %q %v\n%s", i, out, err, daemons[i].output())
			}
			return nil
		})
	}
	// Each way: a reader on one host, lines echoed on the other until
	// one arrives (the first may come before the two hosts share a
	// region).
	for _, c := range []struct{ from, to int }{{0, 1}, {1, 0}} {
		got := filepath.Join(dir, fmt.Sprintf("got%d", c.to))
		line := fmt.Sprintf("from host %d to host %d", c.from, c.to)
		waitFor(t, 30*time.Second, func() error {
			out, err := sh(t, fmt.Sprintf(`(timeout 5 cat %s/qsm/chat.liveobject > %s 2>&1 &)
for i in $(seq 1 30); do echo "%s" >> %s/qsm/chat.liveobject; grep -q "%s" %s && break; sleep 0.1; done; cat %s`,
				mnts[c.to], got, line, mnts[c.from], line, got, got))
			if err != nil || !strings.Contains(out, line) {
				return fmt.Errorf("host %d read %q from host %d (%v)", c.to, out, c.from, err)
			}
			return nil
		})
	}
	// With 10% of the datagrams into each host lost, 500 lines piped
	// into one host's file all reach the other's reader, once each and
	// in order: QSM repairs what the network dropped.
	for i := range 2 {
		if err := lab.Lossy(i, 10); err != nil {
			t.Fatal(err)
		}
	}
	got := filepath.Join(dir, "stream")
	pad := strings.Repeat("x", 1000) // a datagram per line or so: some are lost
	if out, err := sh(t, fmt.Sprintf(`(timeout 60 cat %s/qsm/chat.liveobject > %s 2>&1 &)
for i in $(seq 1 50); do echo probe >> %s/qsm/chat.liveobject; grep -q probe %s && break; sleep 0.1; done
seq 1 500 | sed 's/.*/line & %s/' >> %s/qsm/chat.liveobject`, mnts[1], got, mnts[0], got, pad, mnts[0])); err != nil {
		t.Fatalf("piping 500 lines into host 0: %v %s", err, out)
	}
	waitFor(t, 30*time.Second, func() error {
		b, _ := os.ReadFile(got)
		if !strings.Contains(string(b), "line 500 "+pad+"\n") {
			return fmt.Errorf("host 1 has %d bytes, without line 500 yet", len(b))
		}
		return nil
	})
	b, _ := os.ReadFile(got)
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l != "probe" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 500 {
		t.Fatalf("host 1 read %d lines besides the probes, want 500:\n%s", len(lines), b)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("line %d %s", i+1, pad); l != want {
			t.Fatalf("host 1's line %d is %q, want %q", i+1, l, want)
		}
	}
	stats, err := exec.Command("nsenter", "--net=/run/netns/"+lab.Namespace(0), bin, "qsm", "stats", "--json", "-service", lab.NodeIP(0)+":60100").CombinedOutput()
	var st qsm.Stats
	if err != nil || json.Unmarshal(stats, &st) != nil || st.Resent+st.Forwarded == 0 {
		t.Fatalf("host 0 sent nothing again, so no loss was repaired: %v\n%s", err, stats)
	}
	// The coordinator sees both hosts in the channel.
	out, err := exec.Command("nsenter", "--net=/run/netns/"+lab.Namespace(0), bin, "qsm", "channels", "-service", lab.NodeIP(0)+":60100").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "00000000000000000000000000000002  2") {
		t.Fatalf("qsm channels on host 0: want the chat channel with 2 nodes: %v\n%s", err, out)
	}
}
