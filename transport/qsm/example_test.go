package qsm_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/qsm"
)

// printer is a Handler that prints events.
type printer struct{ got chan struct{} }

func (p printer) Deliver(ev transport.Event) {
	fmt.Printf("event %d: %s\n", ev.Seq, ev.Data)
	p.got <- struct{}{}
}
func (printer) Checkpoint() ([]byte, error)      { return nil, nil }
func (printer) Restore(_ []byte, _ uint64) error { return nil }

// A coordinator, one local service and an in-process client on one
// machine: the client joins a channel and publishes an event to it.
func Example() {
	ctx := context.Background()
	cfg := qsm.DefaultConfig()
	cfg.GMSAddress = "127.0.0.1:0" // any free port, for the example
	cfg.UplinkPort = 0
	udp, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	cfg.Port = udp.LocalAddr().(*net.UDPAddr).Port
	udp.Close()

	coord, err := qsm.NewCoordinator(cfg)
	if err != nil {
		panic(err)
	}
	coord.Start(ctx)
	defer coord.Close()

	cfg.GMSAddress = coord.Addr()
	svc, err := qsm.NewService(cfg)
	if err != nil {
		panic(err)
	}
	svc.Start(ctx)
	defer svc.Close()

	client, err := qsm.Dial(ctx, svc.Addr())
	if err != nil {
		panic(err)
	}
	defer client.Close()
	fmt.Println(client.Name(), client.Provides())

	p := printer{got: make(chan struct{}, 1)}
	m, err := client.Join(ctx, "chat", p)
	if err != nil {
		panic(err)
	}
	if _, err := m.Publish(ctx, []byte("hello")); err != nil {
		panic(err)
	}
	select {
	case <-p.got:
	case <-time.After(5 * time.Second):
	}
	m.Leave()
	// Output:
	// qsm reliable+fifo+membership
	// event 1: hello
}
