package relaybench

import (
	"context"
	"os"
	"runtime/pprof"
	"testing"
)

func TestLossTmp(t *testing.T) {
	for i := 0; i < 20; i++ {
		for _, c := range []Case{{4, 128}, {4, 16}} {
			r, err := Run(context.Background(), &RelaySystem{}, c, Options{Events: 50000})
			if err != nil {
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
				t.Fatal(err)
			}
			t.Log(Row(r))
		}
	}
}
