package micro

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Local channel protocol: the peer frame format (type, id, length, body)
// over the server's unix socket (mode 0600, so only its user may connect).
// Requests carry an operation as type and a JSON body; answers are type
// localOK with a JSON result or localErr with {code, msg}.

// Local operations. ONLY APPEND: the values are on the wire.
const (
	opHomeAddr       = 1
	opAdopt          = 2
	opReplicate      = 3
	opUpdate         = 4
	opRequestPayload = 5
	opSync           = 6
	opCluster        = 7
	opWaitChange     = 8
	opShared         = 9
	opEntries        = 10
)

const (
	localOK  = 0
	localErr = 1
	// maxLocalWait caps one WaitChange over the socket; the client loops.
	maxLocalWait = 20 * time.Second
)

type localError struct {
	Code Code   `json:"code"`
	Msg  string `json:"msg"`
}

type jsonEntry struct {
	ID  []byte `json:"t"` // a token, or an opaque id in a sealed cluster
	Sig []byte `json:"s"`
	Box []byte `json:"b,omitempty"`
}

func toJSONEntries(es []Entry) []jsonEntry {
	out := make([]jsonEntry, len(es))
	for i, e := range es {
		out[i] = jsonEntry{ID: e.Token[:], Sig: e.Sig[:], Box: e.Box}
	}
	return out
}

func fromJSONEntries(js []jsonEntry) ([]Entry, error) {
	es := make([]Entry, len(js))
	for i, je := range js {
		if len(je.Sig) != 64 || len(je.ID) != TokenSize {
			return nil, fmt.Errorf("%w: member of %d bytes, signature of %d bytes", ErrBadEntry, len(je.ID), len(je.Sig))
		}
		copy(es[i].Token[:], je.ID)
		copy(es[i].Sig[:], je.Sig)
		es[i].Box = je.Box
	}
	return es, nil
}

type localReq struct {
	Token  Token       `json:"token,omitzero"`
	Tokens []Token     `json:"tokens,omitempty"`
	After  Token       `json:"after,omitzero"`
	Limit  int         `json:"limit,omitempty"`
	Seq    uint64      `json:"seq,omitempty"`
	Obj    []byte      `json:"obj,omitempty"`
	Policy *Policy     `json:"policy,omitempty"`
	Ents   []jsonEntry `json:"entries,omitempty"`
}

type localResp struct {
	Token  Token          `json:"token,omitzero"`
	Tokens []Token        `json:"tokens,omitempty"`
	Addr   string         `json:"addr,omitempty"`
	N      int            `json:"n,omitempty"`
	Seq    uint64         `json:"seq,omitempty"`
	Obj    []byte         `json:"obj,omitempty"`
	Shared []SharedObject `json:"shared,omitempty"`
	Ents   []jsonEntry    `json:"entries,omitempty"`
}

// serveLocal runs one local connection.
func (s *Server) serveLocal(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		f, err := readFrame(r, MaxFrame)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("local connection", "err", err)
			}
			return
		}
		resp, err := s.handleLocal(f)
		var body []byte
		typ := uint8(localOK)
		if err != nil {
			typ = localErr
			body, _ = json.Marshal(localError{Code: codeOf(err), Msg: err.Error()})
		} else {
			body, _ = json.Marshal(resp)
		}
		if len(body) > MaxFrame {
			err := fmt.Errorf("micro: local operation %d: answer of %d bytes is over the frame limit of %d: %w (ask for a cluster in pages, with a limit)", f.typ, len(body), MaxFrame, ErrTooLarge)
			typ = localErr
			body, _ = json.Marshal(localError{Code: codeOf(err), Msg: err.Error()})
		}
		if err := writeFrame(c, typ, f.id, body); err != nil {
			return
		}
	}
}

func (s *Server) handleLocal(f frame) (*localResp, error) {
	var req localReq
	if err := json.Unmarshal(f.body, &req); err != nil {
		return nil, fmt.Errorf("%w: local request: %v", ErrProtocol, err)
	}
	timeout := 2 * time.Minute
	if f.typ == opWaitChange {
		timeout = maxLocalWait
	}
	ctx, cancel := s.ctx(timeout)
	defer cancel()
	var resp localResp
	switch f.typ {
	case opHomeAddr:
		ap, err := s.HomeAddr(ctx)
		resp.Addr = ap.String()
		return &resp, err
	case opAdopt:
		o := new(Object)
		if err := o.UnmarshalBinary(req.Obj); err != nil {
			return nil, err
		}
		t, err := s.Adopt(ctx, o)
		resp.Token = t
		return &resp, err
	case opReplicate:
		if req.Policy == nil {
			return nil, fmt.Errorf("%w: no policy", ErrBadPolicy)
		}
		return &resp, s.Replicate(ctx, req.Token, *req.Policy)
	case opUpdate:
		es, err := fromJSONEntries(req.Ents)
		if err != nil {
			return nil, err
		}
		n, err := s.Update(ctx, req.Token, es)
		resp.N = n
		return &resp, err
	case opRequestPayload:
		o, err := s.RequestPayload(ctx, req.Token)
		if err != nil {
			return nil, err
		}
		resp.Obj = o.appendTo(nil)
		return &resp, nil
	case opSync:
		return &resp, s.Sync(ctx, req.Token)
	case opCluster:
		ts, err := s.Cluster(ctx, req.Token, req.After, req.Limit)
		resp.Tokens = ts
		return &resp, err
	case opEntries:
		es, err := s.Entries(ctx, req.Token, req.After, req.Limit)
		resp.Ents = toJSONEntries(es)
		return &resp, err
	case opWaitChange:
		seq, err := s.WaitChange(ctx, req.Tokens, req.Seq)
		if errors.Is(err, context.DeadlineExceeded) {
			err = nil // the client asks again
		}
		resp.Seq = seq
		return &resp, err
	case opShared:
		sh, err := s.Shared(ctx)
		resp.Shared = sh
		return &resp, err
	}
	return nil, fmt.Errorf("%w: local operation %d", ErrProtocol, f.typ)
}

// LocalClient talks to an MO server over its local socket. It implements
// Local and is safe for concurrent use: each call takes an idle
// connection or dials a new one.
type LocalClient struct {
	path string

	mu     sync.Mutex // protects idle and closed
	idle   []*localConn
	closed bool
}

type localConn struct {
	c  net.Conn
	r  *bufio.Reader
	id uint32
}

var _ Local = (*LocalClient)(nil)

// DialLocal connects to the server's local socket at path.
func DialLocal(ctx context.Context, path string) (*LocalClient, error) {
	lc := &LocalClient{path: path}
	c, err := lc.dial(ctx)
	if err != nil {
		return nil, err
	}
	lc.put(c)
	return lc, nil
}

func (lc *LocalClient) dial(ctx context.Context) (*localConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", lc.path)
	if err != nil {
		return nil, fmt.Errorf("micro: local socket %s: %w (is 'liveobjects mo serve' running with this data directory?)", lc.path, err)
	}
	return &localConn{c: c, r: bufio.NewReader(c)}, nil
}

func (lc *LocalClient) put(c *localConn) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.closed || len(lc.idle) >= 8 {
		c.c.Close()
		return
	}
	lc.idle = append(lc.idle, c)
}

// Close closes the idle connections; calls in progress finish first.
func (lc *LocalClient) Close() error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.closed = true
	for _, c := range lc.idle {
		c.c.Close()
	}
	lc.idle = nil
	return nil
}

// call sends one request and reads its answer. A request that fails on
// an idle connection before any answer (the server restarted since, or
// closed the connection) is sent again once on a new connection, and the
// other idle connections, to the same old server, are dropped; every
// local request is idempotent.
func (lc *LocalClient) call(ctx context.Context, op uint8, req *localReq) (*localResp, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	f, reused, err := lc.call1(ctx, op, body, true)
	if err != nil && reused && ctx.Err() == nil && isStale(err) {
		lc.dropIdle()
		f, _, err = lc.call1(ctx, op, body, false)
	}
	if err != nil {
		return nil, err
	}
	if f.typ == localErr {
		var le localError
		if err := json.Unmarshal(f.body, &le); err != nil {
			return nil, fmt.Errorf("%w: local error answer", ErrProtocol)
		}
		return nil, &RemoteError{Code: le.Code, Msg: le.Msg}
	}
	var resp localResp
	if err := json.Unmarshal(f.body, &resp); err != nil {
		return nil, fmt.Errorf("%w: local answer: %v", ErrProtocol, err)
	}
	return &resp, nil
}

// dropIdle closes the idle connections.
func (lc *LocalClient) dropIdle() {
	lc.mu.Lock()
	idle := lc.idle
	lc.idle = nil
	lc.mu.Unlock()
	for _, c := range idle {
		c.c.Close()
	}
}

// call1 runs one exchange on an idle connection (when reuse is set and
// there is one) or a new one; it reports whether the connection was idle.
func (lc *LocalClient) call1(ctx context.Context, op uint8, body []byte, reuse bool) (frame, bool, error) {
	lc.mu.Lock()
	if lc.closed {
		lc.mu.Unlock()
		return frame{}, false, ErrClosed
	}
	var c *localConn
	if n := len(lc.idle); reuse && n > 0 {
		c = lc.idle[n-1]
		lc.idle = lc.idle[:n-1]
	}
	lc.mu.Unlock()
	reused := c != nil
	if c == nil {
		var err error
		if c, err = lc.dial(ctx); err != nil {
			return frame{}, false, err
		}
	}
	stop := context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.c.SetDeadline(time.Time{})
	c.id++
	if err := writeFrame(c.c, op, c.id, body); err != nil {
		c.c.Close()
		return frame{}, reused, fmt.Errorf("micro: local request: %w", err)
	}
	f, err := readFrame(c.r, MaxFrame*2)
	if err != nil {
		c.c.Close()
		if ctx.Err() != nil {
			return frame{}, reused, ctx.Err()
		}
		return frame{}, reused, fmt.Errorf("micro: local request: %w", err)
	}
	if f.id != c.id {
		c.c.Close()
		return frame{}, false, fmt.Errorf("micro: local request: %w: answer id %d, want %d", ErrProtocol, f.id, c.id)
	}
	lc.put(c)
	return f, false, nil
}

// HomeAddr implements Local.
func (lc *LocalClient) HomeAddr(ctx context.Context) (netip.AddrPort, error) {
	r, err := lc.call(ctx, opHomeAddr, &localReq{})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.ParseAddrPort(r.Addr)
}

// Adopt implements Local.
func (lc *LocalClient) Adopt(ctx context.Context, obj *Object) (Token, error) {
	r, err := lc.call(ctx, opAdopt, &localReq{Obj: obj.appendTo(nil)})
	if err != nil {
		return Token{}, err
	}
	return r.Token, nil
}

// Replicate implements Local.
func (lc *LocalClient) Replicate(ctx context.Context, t Token, p Policy) error {
	_, err := lc.call(ctx, opReplicate, &localReq{Token: t, Policy: &p})
	return err
}

// Update implements Local.
func (lc *LocalClient) Update(ctx context.Context, t Token, entries []Entry) (int, error) {
	req := &localReq{Token: t, Ents: toJSONEntries(entries)}
	r, err := lc.call(ctx, opUpdate, req)
	if err != nil {
		return 0, err
	}
	return r.N, nil
}

// RequestPayload implements Local.
func (lc *LocalClient) RequestPayload(ctx context.Context, t Token) (*Object, error) {
	r, err := lc.call(ctx, opRequestPayload, &localReq{Token: t})
	if err != nil {
		return nil, err
	}
	o := new(Object)
	if err := o.UnmarshalBinary(r.Obj); err != nil {
		return nil, err
	}
	if err := o.Matches(t); err != nil {
		return nil, err
	}
	return o, nil
}

// Sync implements Local.
func (lc *LocalClient) Sync(ctx context.Context, t Token) error {
	_, err := lc.call(ctx, opSync, &localReq{Token: t})
	return err
}

// Cluster implements Local.
func (lc *LocalClient) Cluster(ctx context.Context, t Token, after Token, limit int) ([]Token, error) {
	r, err := lc.call(ctx, opCluster, &localReq{Token: t, After: after, Limit: limit})
	if err != nil {
		return nil, err
	}
	return r.Tokens, nil
}

// Entries implements Local.
func (lc *LocalClient) Entries(ctx context.Context, t Token, after Token, limit int) ([]Entry, error) {
	r, err := lc.call(ctx, opEntries, &localReq{Token: t, After: after, Limit: limit})
	if err != nil {
		return nil, err
	}
	return fromJSONEntries(r.Ents)
}

// WaitChange implements Local.
func (lc *LocalClient) WaitChange(ctx context.Context, ts []Token, seq uint64) (uint64, error) {
	for {
		r, err := lc.call(ctx, opWaitChange, &localReq{Tokens: ts, Seq: seq})
		if err != nil {
			return seq, err
		}
		if seq == 0 || r.Seq > seq {
			return r.Seq, nil
		}
		if ctx.Err() != nil {
			return seq, ctx.Err()
		}
	}
}

// Shared implements Local.
func (lc *LocalClient) Shared(ctx context.Context) ([]SharedObject, error) {
	r, err := lc.call(ctx, opShared, &localReq{})
	if err != nil {
		return nil, err
	}
	return r.Shared, nil
}
