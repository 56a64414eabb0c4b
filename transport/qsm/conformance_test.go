package qsm

import (
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/conformance"
)

// TestConformance runs the driver suite against QSM: a coordinator and
// three services on loopback, each new driver a client of the next service
// in turn, so that events cross the network. The cases that need total
// order or state transfer skip themselves, as QSM does not provide them.
func TestConformance(t *testing.T) {
	conformance.RunWith(t, func(t *testing.T) conformance.NewDriver {
		cfg := testConfig(t)
		cfg.DropRate = 0.02
		cl := newCluster(t, cfg, 3)
		n := 0
		return func(t *testing.T) transport.Driver {
			s := cl.svcs[n%len(cl.svcs)]
			n++
			return dial(t, s.Addr())
		}
	}, conformance.Options{Timeout: 30 * time.Second})
}
