package relaybench

import (
	"context"
	"testing"
	"time"
)

// TestRunSmall runs the workload briefly on both relay modes.
func TestRunSmall(t *testing.T) {
	for _, sys := range []System{&RelaySystem{}, &RelaySystem{Durable: true, NoSync: true}} {
		for _, c := range []Case{{1, 16}, {4, 128}} {
			r, err := Run(context.Background(), sys, c, Options{Events: 3000, Window: 256})
			if err != nil {
				t.Fatalf("%s %v: %v", sys.Name(), c, err)
			}
			if r.Events != 3000 || r.MsgsPerS <= 0 || r.P99 < r.P50 {
				t.Fatalf("implausible result %+v", r)
			}
			t.Log(Row(r))
		}
	}
	d, err := JoinCheckpoint(context.Background(), false, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 || d > 30*time.Second {
		t.Fatalf("join took %v", d)
	}
}
