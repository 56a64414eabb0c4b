package micro

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
)

func TestMain(m *testing.M) { os.Exit(clibin.Run(m)) }

// moProc is one "liveobjects mo serve" process.
type moProc struct {
	data string
	addr string
	cmd  *exec.Cmd
}

func startMOProcess(t *testing.T, bin string) *moProc {
	t.Helper()
	p := &moProc{data: t.TempDir()}
	p.cmd = exec.Command(bin, "-q", "mo", "serve", "--data", p.data, "--listen", "127.0.0.1:0", "--flood-interval", "1s")
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	p.cmd.Stderr = &stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	select {
	case l := <-lines:
		addr, ok := strings.CutPrefix(l, "listening ")
		if !ok {
			t.Fatalf("mo serve said %q", l)
		}
		p.addr = addr
	case <-time.After(20 * time.Second):
		t.Fatalf("mo serve did not start: %s", stderr.String())
	}
	return p
}

// mo runs "liveobjects mo ARGS" against p and returns stdout.
func (p *moProc) mo(t *testing.T, bin, keys string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"mo"}, args...)
	full = append(full, "--data", p.data, "--keys", keys, "--timeout", "10s")
	cmd := exec.Command(bin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("mo %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (p *moProc) must(t *testing.T, bin, keys string, args ...string) string {
	t.Helper()
	out, err := p.mo(t, bin, keys, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// TestPaperScenarioProcesses runs the paper's scenario with three MO
// servers as real processes on loopback, driven by the CLI.
func TestPaperScenarioProcesses(t *testing.T) {
	bin := clibin.Path(t)
	keys := filepath.Join(t.TempDir(), "group.keys")
	alice, bob, clare := startMOProcess(t, bin), startMOProcess(t, bin), startMOProcess(t, bin)
	tmp := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(tmp, name)
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	m := alice.must(t, bin, keys, "put", "--sealed-cluster", write("m", "type: news"))
	if _, err := ParseToken(m); err != nil {
		t.Fatalf("put printed %q: %v", m, err)
	}
	if got := bob.must(t, bin, keys, "get", m); got != "type: news" {
		t.Fatalf("bob gets %q", got)
	}
	for _, p := range []*moProc{alice, bob, clare} {
		p.must(t, bin, keys, "policy", m, "flooding")
	}
	n1 := bob.must(t, bin, keys, "put", write("n1", "N1 from Bob"))
	bob.must(t, bin, keys, "add", m, n1)
	n2 := clare.must(t, bin, keys, "put", write("n2", "N2 from Clare"))
	clare.must(t, bin, keys, "add", m, n2)
	procs := map[string]*moProc{"alice": alice, "bob": bob, "clare": clare}
	checkFor(t, 20*time.Second, func() error {
		for name, p := range procs {
			ls, err := p.mo(t, bin, keys, "ls", "--no-sync", m)
			if err != nil {
				return err
			}
			if !strings.Contains(ls, n1) || !strings.Contains(ls, n2) {
				return fmt.Errorf("%s's cluster: %q", name, ls)
			}
			shared, err := p.mo(t, bin, keys, "ls")
			if err != nil {
				return err
			}
			for other, o := range procs {
				if other != name && !strings.Contains(shared, o.addr) {
					return fmt.Errorf("%s does not know %s: %q", name, other, shared)
				}
			}
		}
		return nil
	})
	if got := alice.must(t, bin, keys, "get", n1); got != "N1 from Bob" {
		t.Fatalf("alice reads %q", got)
	}
	// Bad input gets a clear error and a usage exit code.
	if _, err := alice.mo(t, bin, keys, "get", "not-a-token"); err == nil || !strings.Contains(err.Error(), "not a token") {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := alice.mo(t, bin, keys, "policy", m, "flooding:x"); err == nil {
		t.Fatal("bad policy accepted")
	}
	// Other keys cannot open the payload.
	if _, err := alice.mo(t, bin, filepath.Join(tmp, "other.keys"), "get", n1); err == nil || !strings.Contains(err.Error(), "keys") {
		t.Fatalf("foreign keys: %v", err)
	}
}
