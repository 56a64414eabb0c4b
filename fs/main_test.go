package fs

import (
	"os"
	"testing"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
)

// TestMain removes, at the end, the liveobjects binary that benchmarks
// running it as a process of their own build.
func TestMain(m *testing.M) { os.Exit(clibin.Run(m)) }
