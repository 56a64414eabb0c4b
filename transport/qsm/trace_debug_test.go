package qsm

import (
	"os"
	"strconv"
	"testing"
)

func TestWindowDebug(t *testing.T) {
	cfg := testConfig(t)
	cfg.DropRate = 0.05
	cfg.Window, _ = strconv.Atoi(os.Getenv("W"))
	cl := newCluster(t, cfg, 5)
	runFanoutSize(t, cl, 40000, 1024)
	for i, s := range cl.svcs[1:] {
		st := s.Stats()
		t.Logf("svc %d: p50 %dus p99 %dus overload %d", i+1, st.RepairP50, st.RepairP99, st.Overload)
	}
}
