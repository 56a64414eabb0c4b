package clibin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestMain checks that Run removes the folder of the binary that the
// tests had built.
func TestMain(m *testing.M) {
	code := Run(m)
	mu.Lock()
	d := dir // empty when no test asked for the binary
	mu.Unlock()
	if d != "" {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "clibin: Run left %s behind (stat: %v)\n", d, err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestPathBuildsTheCommandOnce runs the binary Path returns and checks
// that a second call returns the same file.
func TestPathBuildsTheCommandOnce(t *testing.T) {
	bin := Path(t)
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", bin, err, out)
	}
	if !strings.Contains(string(out), "usage: liveobjects") {
		t.Fatalf("%s --help printed no usage:\n%s", bin, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if again := Path(t); again != bin {
		t.Fatalf("second Path = %s, first %s", again, bin)
	}
	st2, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !st2.ModTime().Equal(st.ModTime()) {
		t.Fatalf("%s was built again", bin)
	}
}

// TestPathNeedsRun checks that Path fails a test when Run is not running
// the tests, so that no package can leave a binary behind unnoticed.
func TestPathNeedsRun(t *testing.T) {
	running.Store(false)
	defer running.Store(true)
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Path(ft)
	}()
	<-done
	if !strings.Contains(ft.msg, "must call clibin.Run") {
		t.Fatalf("Path without Run: got %q, want a failure that names clibin.Run", ft.msg)
	}
}

// TestFailedBuildLeavesNothing builds a package that does not exist and
// checks that the error says so and that no folder is left behind.
func TestFailedBuildLeavesNothing(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dir, bin, err := buildIn("github.com/liveobjects/liveobjects/cmd/no-such-command")
	if err == nil || !strings.Contains(err.Error(), "go build") {
		t.Fatalf("buildIn of a missing package = %q, %q, %v; want a go build error", dir, bin, err)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 || dir != "" {
		t.Fatalf("a failed build left %v behind (folder %q)", left, dir)
	}
}

// fatalRecorder records what Fatal was given and ends its goroutine, as
// testing.T's Fatal does, without failing the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
