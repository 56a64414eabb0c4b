package qsm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// liveobjectsBinary builds cmd/liveobjects once per test binary.
func liveobjectsBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "lo-qsm-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "liveobjects")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/liveobjects/liveobjects/cmd/liveobjects")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/liveobjects: %v\n%s", err, out.String())
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func cleanupBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}
