package clibin

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Package is the import path of the command that Build builds.
const Package = "github.com/liveobjects/liveobjects/cmd/liveobjects"

var (
	running atomic.Bool // Run is running the tests

	mu    sync.Mutex // protects dir
	dir   string     // the folder of the binary, once made
	build = sync.OnceValues(func() (string, error) {
		d, bin, err := buildIn(Package)
		mu.Lock()
		dir = d
		mu.Unlock()
		return bin, err
	})
)

// buildIn builds pkg into a new temporary folder and returns the folder
// and the binary; when the build fails it removes the folder and returns
// no folder.
func buildIn(pkg string) (dir, bin string, err error) {
	dir, err = os.MkdirTemp("", "liveobjects-test-bin-")
	if err != nil {
		return "", "", fmt.Errorf("build %s: %w", pkg, err)
	}
	bin = filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	// In this package's folder, so that the module is found wherever
	// the test binary runs.
	if _, src, _, ok := runtime.Caller(0); ok {
		cmd.Dir = filepath.Dir(src)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out.Bytes())
	}
	return dir, bin, nil
}

// Run runs m's tests, then removes the binary if one was built, and
// returns m.Run's exit code; call it from TestMain.
func Run(m *testing.M) int {
	running.Store(true)
	code := m.Run()
	running.Store(false)
	mu.Lock()
	if dir != "" {
		os.RemoveAll(dir)
	}
	mu.Unlock()
	return code
}

// Build returns the path of the liveobjects binary, building it on the
// first call, or the build's error (a failed build leaves nothing
// behind). It is for a TestMain that needs the binary before its tests
// start; a TestMain that calls it must then call Run as well.
func Build() (string, error) { return build() }

// Path returns the path of the liveobjects binary, building it on the
// first call. It fails tb when the build fails, or when the test package's
// TestMain does not call Run.
func Path(tb testing.TB) string {
	tb.Helper()
	if !running.Load() {
		tb.Fatal("clibin: the test package's TestMain must call clibin.Run, which removes the binary at the end")
	}
	bin, err := build()
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}
