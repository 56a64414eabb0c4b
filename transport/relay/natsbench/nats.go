package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/liveobjects/liveobjects/transport/relay/relaybench"
)

// natsSystem is an embedded nats-server; JetStream selects file-backed
// JetStream with acknowledged publishes instead of core pub/sub.
type natsSystem struct {
	jetStream  bool
	syncAlways bool
	n          atomic.Int64
}

func (s *natsSystem) Name() string {
	switch {
	case !s.jetStream:
		return "nats-core"
	case s.syncAlways:
		return "nats-js-file-sync"
	}
	return "nats-js-file"
}

type natsPub struct {
	srv   *server.Server
	dir   string
	conns []*nats.Conn
	pub   *nats.Conn
	js    nats.JetStreamContext
	subj  string
	errMu sync.Mutex
	err   error
}

func (s *natsSystem) Open(ctx context.Context, subs int, deliver func(int, []byte)) (relaybench.Publisher, error) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: 8 << 20}
	p := &natsPub{subj: fmt.Sprintf("bench.%d", s.n.Add(1))}
	if s.jetStream {
		dir, err := os.MkdirTemp("", "natsbench-")
		if err != nil {
			return nil, err
		}
		p.dir = dir
		opts.JetStream = true
		opts.StoreDir = dir
		opts.SyncAlways = s.syncAlways
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.srv = srv
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		p.Close()
		return nil, errors.New("nats-server did not start")
	}
	connect := func() (*nats.Conn, error) {
		nc, err := nats.Connect(srv.ClientURL(), nats.NoReconnect())
		if err == nil {
			p.conns = append(p.conns, nc)
		}
		return nc, err
	}
	pub, err := connect()
	if err != nil {
		p.Close()
		return nil, err
	}
	p.pub = pub
	if s.jetStream {
		js, err := pub.JetStream(nats.PublishAsyncMaxPending(8192), nats.PublishAsyncErrHandler(func(_ nats.JetStream, _ *nats.Msg, err error) {
			p.setErr(err)
		}))
		if err != nil {
			p.Close()
			return nil, err
		}
		p.js = js
		if _, err := js.AddStream(&nats.StreamConfig{Name: fmt.Sprintf("BENCH%d", s.n.Load()), Subjects: []string{p.subj}, Storage: nats.FileStorage, Replicas: 1}); err != nil {
			p.Close()
			return nil, err
		}
	}
	for i := 0; i < subs; i++ {
		nc, err := connect()
		if err != nil {
			p.Close()
			return nil, err
		}
		cb := func(m *nats.Msg) { deliver(i, m.Data) }
		var sub *nats.Subscription
		if s.jetStream {
			js, err := nc.JetStream()
			if err != nil {
				p.Close()
				return nil, err
			}
			sub, err = js.Subscribe(p.subj, cb, nats.OrderedConsumer())
			if err != nil {
				p.Close()
				return nil, err
			}
		} else {
			sub, err = nc.Subscribe(p.subj, cb)
			if err != nil {
				p.Close()
				return nil, err
			}
		}
		sub.SetPendingLimits(-1, -1)
		if err := nc.Flush(); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

func (p *natsPub) setErr(err error) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

func (p *natsPub) Publish(ctx context.Context, data []byte) error {
	p.errMu.Lock()
	err := p.err
	p.errMu.Unlock()
	if err != nil {
		return err
	}
	if p.js != nil {
		_, err := p.js.PublishAsync(p.subj, append([]byte(nil), data...))
		return err
	}
	return p.pub.Publish(p.subj, data)
}

func (p *natsPub) Close() error {
	for _, nc := range p.conns {
		nc.Close()
	}
	if p.srv != nil {
		p.srv.Shutdown()
		p.srv.WaitForShutdown()
	}
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
	return nil
}
