package micro

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// defaultCallTimeout bounds a remote call when the context has no deadline.
const defaultCallTimeout = 15 * time.Second

// maxIdlePerPeer bounds idle connections kept per peer.
const maxIdlePerPeer = 4

// peerConn is one client connection to a peer, after the handshake. It
// carries one request at a time.
type peerConn struct {
	c    net.Conn
	r    *bufio.Reader
	addr netip.AddrPort
	id   uint32
}

// pool keeps client connections to peers. It is safe for concurrent use.
type pool struct {
	self   func() netip.AddrPort // our advertised address, sent in HELLO
	dialer net.Dialer

	mu     sync.Mutex // protects idle and closed
	idle   map[netip.AddrPort][]*peerConn
	closed bool
}

func newPool(self func() netip.AddrPort) *pool {
	return &pool{self: self, idle: map[netip.AddrPort][]*peerConn{}}
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, cs := range p.idle {
		for _, c := range cs {
			c.c.Close()
		}
	}
	p.idle = nil
}

func (p *pool) get(ctx context.Context, addr netip.AddrPort, reuse bool) (*peerConn, bool, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, ErrClosed
	}
	if cs := p.idle[addr]; reuse && len(cs) > 0 {
		c := cs[len(cs)-1]
		p.idle[addr] = cs[:len(cs)-1]
		p.mu.Unlock()
		return c, true, nil
	}
	p.mu.Unlock()
	c, err := p.dial(ctx, addr)
	return c, false, err
}

func (p *pool) dial(ctx context.Context, addr netip.AddrPort) (*peerConn, error) {
	nc, err := p.dialer.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("micro: dial %s: %w", addr, err)
	}
	pc := &peerConn{c: nc, r: bufio.NewReaderSize(nc, 64<<10), addr: addr}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	} else {
		nc.SetDeadline(time.Now().Add(defaultCallTimeout))
	}
	hello := helloMsg{min: protoMin, max: protoMax, addr: p.self()}
	if err := writeFrame(nc, msgHello, 0, hello.encode()); err != nil {
		nc.Close()
		return nil, fmt.Errorf("micro: hello %s: %w", addr, err)
	}
	f, err := readFrame(pc.r, MaxFrame)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("micro: hello %s: %w", addr, err)
	}
	if f.typ == msgError {
		nc.Close()
		return nil, fmt.Errorf("micro: hello %s: %w", addr, remoteErr(f.body))
	}
	ack, err := decodeHelloAck(f.body)
	if f.typ != msgHelloAck || err != nil {
		nc.Close()
		return nil, fmt.Errorf("micro: hello %s: %w: unexpected answer", addr, ErrProtocol)
	}
	if ack.version < protoMin || ack.version > protoMax {
		nc.Close()
		return nil, fmt.Errorf("micro: hello %s: %w: version %d", addr, ErrVersionMismatch, ack.version)
	}
	return pc, nil
}

func (p *pool) put(c *peerConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle[c.addr]) >= maxIdlePerPeer {
		c.c.Close()
		return
	}
	p.idle[c.addr] = append(p.idle[c.addr], c)
}

// call sends one request to addr and returns the answer frame. An error
// frame or BUSY comes back as a *RemoteError. A request that fails on an
// idle connection before any answer (the peer closed it meanwhile) is sent
// again once on a new connection; every request is idempotent.
func (p *pool) call(ctx context.Context, addr netip.AddrPort, typ uint8, body []byte) (frame, error) {
	f, reused, err := p.call1(ctx, addr, typ, body, true)
	if err != nil && reused && ctx.Err() == nil && isStale(err) {
		f, _, err = p.call1(ctx, addr, typ, body, false)
	}
	return f, err
}

// isStale reports whether err looks like a connection the peer closed.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (p *pool) call1(ctx context.Context, addr netip.AddrPort, typ uint8, body []byte, reuse bool) (frame, bool, error) {
	c, reused, err := p.get(ctx, addr, reuse)
	if err != nil {
		return frame{}, false, err
	}
	stop := context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		c.c.SetDeadline(dl)
	} else {
		c.c.SetDeadline(time.Now().Add(defaultCallTimeout))
	}
	c.id++
	if err := writeFrame(c.c, typ, c.id, body); err != nil {
		c.c.Close()
		return frame{}, reused, fmt.Errorf("micro: call %s: %w", addr, err)
	}
	f, err := readFrame(c.r, MaxFrame)
	if err != nil {
		c.c.Close()
		if ctx.Err() != nil {
			return frame{}, reused, fmt.Errorf("micro: call %s: %w", addr, ctx.Err())
		}
		return frame{}, reused, fmt.Errorf("micro: call %s: %w", addr, err)
	}
	if f.id != c.id {
		c.c.Close()
		return frame{}, false, fmt.Errorf("micro: call %s: %w: answer id %d, want %d", addr, ErrProtocol, f.id, c.id)
	}
	p.put(c)
	switch f.typ {
	case msgError:
		return f, false, fmt.Errorf("micro: call %s: %w", addr, remoteErr(f.body))
	case msgBusy:
		d := decoder{b: f.body}
		as := d.addrs()
		return f, false, fmt.Errorf("micro: call %s: %w", addr, &RemoteError{Code: CodeBusy, Msg: "busy", Ditto: as})
	}
	return f, false, nil
}

func remoteErr(body []byte) error {
	m, err := decodeError(body)
	if err != nil {
		return fmt.Errorf("%w: bad error frame", ErrProtocol)
	}
	return &RemoteError{Code: m.code, Msg: m.text, Ditto: m.ditto}
}

// dittoOf returns the ditto-list carried by err, if any.
func dittoOf(err error) []netip.AddrPort {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Ditto
	}
	return nil
}
