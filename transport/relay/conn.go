package relay

import (
	"bufio"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// handshakeTimeout bounds how long a new connection may take to say hello.
const handshakeTimeout = 10 * time.Second

// maxReadBuf bounds the read buffer of a connection, which starts at
// 64 KiB and grows while reads fill it.
const maxReadBuf = 256 << 10

// maxCtrlBacklog bounds control frames queued for a client that does not
// read; past it the client is disconnected.
const maxCtrlBacklog = 256 << 20

// sconn is one client connection at the server. Its reader runs in the
// goroutine that called serve; serve starts one writer goroutine. Both are
// owned by the server's WaitGroup.
type sconn struct {
	s      *Server
	nc     net.Conn
	parser *Parser

	// Set by the handshake, then read-only.
	id     string
	name   string
	admin  bool // presented the relay's secret
	client *clientRec

	mu       sync.Mutex // protects ctrl, ackOff, members, list, granted, ckptReqs, closed, err
	ctrl     []byte     // encoded control frames waiting for the writer
	ackOff   int        // offset in ctrl of the last tAckRange frame, or -1
	members  map[string]*member
	list     []*member           // copy-on-write snapshot of members for the writer
	granted  map[string]bool     // names of token-guarded channels joined with their token
	ckptReqs map[uint64]*channel // checkpoint requests sent and not yet answered, by id
	closed   bool
	err      error

	wake    chan struct{}
	flushed chan struct{} // the writer flushed (for flushAndClose)
	quit    chan struct{}
	done    chan struct{} // closed when serve returns

	asm map[uint64]*assembly // checkpoints being received (reader only)

	// gen counts changes of members (bumped under mu); the reader caches
	// the member it last published to and looks it up again after a change.
	gen     atomic.Uint64
	pubGen  uint64
	pubName string
	pubM    *member

	// Acknowledgements not yet queued (reader only, see deferAck).
	ackC, ackS uint64
	ackN       uint32
}

// assembly is a checkpoint arriving in chunks. Chunks of a checkpoint the
// relay no longer wants (ch nil) are counted, not kept.
type assembly struct {
	ch    *channel
	seq   uint64
	total uint64 // announced size
	got   uint64 // bytes received
	buf   []byte
}

// maxCkptReqs bounds the checkpoint requests a connection has left
// unanswered; past it the oldest is forgotten, and a late answer to it is
// refused like an answer to a request never sent.
const maxCkptReqs = 1024

// maxCkptAsm bounds the checkpoints a connection may send at once.
const maxCkptAsm = 16

func newSconn(s *Server, nc net.Conn) *sconn {
	return &sconn{
		s:        s,
		nc:       nc,
		parser:   NewParser(helloMax),
		members:  map[string]*member{},
		ckptReqs: map[uint64]*channel{},
		ackOff:   -1,
		wake:     make(chan struct{}, 1),
		flushed:  make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		asm:      map[uint64]*assembly{},
	}
}

// signal wakes the writer.
func (c *sconn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// close ends the connection; the reader and writer stop. Idempotent.
func (c *sconn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.err = err
	close(c.quit)
	c.mu.Unlock()
	c.nc.Close()
}

// queue appends a control frame built by fn.
func (c *sconn) queue(typ byte, fn func(b []byte) []byte) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	var off int
	c.ctrl, off = beginFrame(c.ctrl, typ)
	c.ctrl = fn(c.ctrl)
	c.ctrl = endFrame(c.ctrl, off)
	over := len(c.ctrl) > maxCtrlBacklog
	c.mu.Unlock()
	if over {
		c.s.log.Warn("relay: client does not read its connection; disconnecting it", "client", c.name)
		c.close(errors.New("control backlog over limit"))
		return
	}
	c.signal()
}

func (c *sconn) sendError(reqID uint64, err error) {
	code := codeOf(err)
	msg := err.Error()
	var re *Error
	if errors.As(err, &re) {
		msg = re.Msg
	}
	c.queue(tError, func(b []byte) []byte {
		b = putU64(b, reqID)
		b = putU16(b, uint16(code))
		return putStr(b, truncate(msg))
	})
}

func truncate(s string) string {
	if len(s) > maxString {
		return s[:maxString]
	}
	return s
}

// sendAck acknowledges a publish. Consecutive publishes that got
// consecutive sequence numbers share one tAckRange frame.
func (c *sconn) sendAck(counter, seq uint64) { c.sendAcks(counter, seq, 1) }

// sendAcks acknowledges n publishes: counters counter.. got seq...
func (c *sconn) sendAcks(counter, seq uint64, k uint32) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if off := c.ackOff; off >= 0 && off == len(c.ctrl)-4-1-20 {
		body := c.ctrl[off+5:]
		c0, s0, n := binary.BigEndian.Uint64(body), binary.BigEndian.Uint64(body[8:]), binary.BigEndian.Uint32(body[16:])
		if c0+uint64(n) == counter && s0+uint64(n) == seq && n < 1<<30 {
			binary.BigEndian.PutUint32(body[16:], n+k)
			c.mu.Unlock()
			return // the writer is already woken for this frame
		}
	}
	var off int
	c.ctrl, off = beginFrame(c.ctrl, tAckRange)
	c.ctrl = putU32(putU64(putU64(c.ctrl, counter), seq), k)
	c.ctrl = endFrame(c.ctrl, off)
	c.ackOff = off
	c.mu.Unlock()
	c.signal()
}

// deferAck notes an acknowledgement (reader goroutine, memory mode): runs
// of consecutive ones are queued together by flushAcks, once per read or
// before any other frame is handled.
func (c *sconn) deferAck(counter, seq uint64) {
	if c.ackN > 0 && c.ackC+uint64(c.ackN) == counter && c.ackS+uint64(c.ackN) == seq && c.ackN < 1<<20 {
		c.ackN++
		return
	}
	c.flushAcks()
	c.ackC, c.ackS, c.ackN = counter, seq, 1
}

// flushAcks queues the deferred acknowledgements (reader goroutine).
func (c *sconn) flushAcks() {
	if c.ackN > 0 {
		c.sendAcks(c.ackC, c.ackS, c.ackN)
		c.ackN = 0
	}
}

func (c *sconn) sendOK(reqID uint64) {
	c.queue(tOK, func(b []byte) []byte { return putU64(b, reqID) })
}

// sendCkptReq asks the client for a checkpoint of ch, which its member
// joined as key, and remembers the request: only answers to remembered
// requests are accepted. It takes only c.mu, so it may be called with
// ch.mu held.
func (c *sconn) sendCkptReq(ch *channel, key string, id uint64) {
	c.mu.Lock()
	c.ckptReqs[id] = ch
	if len(c.ckptReqs) > maxCkptReqs {
		oldest := id
		for k := range c.ckptReqs {
			oldest = min(oldest, k)
		}
		delete(c.ckptReqs, oldest)
	}
	c.mu.Unlock()
	c.queue(tCkptReq, func(b []byte) []byte { return putU64(putStr(b, key), id) })
}

// takeCkptReq returns the channel of the unanswered request id and forgets
// the request: its answer is then tracked in c.asm until its last chunk.
func (c *sconn) takeCkptReq(id uint64) (*channel, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.ckptReqs[id]
	delete(c.ckptReqs, id)
	return r, ok
}

// sendChange tells the client of a channel added or removed, when it may
// see that channel.
func (c *sconn) sendChange(kind byte, info transport.ChannelInfo) {
	if !c.maySee(info) {
		return
	}
	c.queue(tChange, func(b []byte) []byte { return putInfo(putU8(b, kind), info) })
}

// maySee reports whether the channel list and change notifications show
// the channel to this connection (see ServerConfig.Tokens).
func (c *sconn) maySee(info transport.ChannelInfo) bool {
	if c.admin || len(c.s.cfg.Tokens) == 0 {
		return true
	}
	if _, guarded := c.s.channelToken(info.Name, info.ID); !guarded {
		return c.s.cfg.Secret == ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.granted[info.Name]
}

func putInfo(b []byte, info transport.ChannelInfo) []byte {
	b = putStr(b, info.Name)
	b = putStr(b, info.ID)
	b = putStr(b, truncate(info.Comment))
	b = putU32(b, uint32(int32(info.Members)))
	return putU64(b, info.LastSeq)
}

func getInfo(d *dec) transport.ChannelInfo {
	return transport.ChannelInfo{Name: d.str(), ID: d.str(), Comment: d.str(), Members: int(int32(d.u32())), LastSeq: d.u64()}
}

// memberGone takes m off this connection and tells the client why. It
// takes only c.mu, so it may be called with ch.mu held.
func (c *sconn) memberGone(m *member, err error) {
	c.mu.Lock()
	if c.members[m.key] == m {
		delete(c.members, m.key)
		c.rebuildListLocked()
	}
	c.mu.Unlock()
	var re *Error
	code, msg := codeOf(err), err.Error()
	if errors.As(err, &re) {
		msg = re.Msg
	}
	c.queue(tMemberError, func(b []byte) []byte {
		b = putStr(b, m.key)
		b = putU16(b, uint16(code))
		return putStr(b, truncate(msg))
	})
}

// dropMember removes m from its channel and from this connection.
func (c *sconn) dropMember(m *member, err error) {
	m.ch.mu.Lock()
	m.ch.removeMemberLocked(m)
	m.ch.mu.Unlock()
	c.memberGone(m, err)
}

func (c *sconn) rebuildListLocked() {
	c.gen.Add(1)
	list := make([]*member, 0, len(c.members))
	for _, m := range c.members {
		list = append(list, m)
	}
	c.list = list
}

// serve runs the connection: handshake, writer, reader; it cleans up when
// the reader stops.
func (c *sconn) serve() {
	defer close(c.done)
	defer func() {
		c.close(nil)
		c.mu.Lock()
		members := c.list
		c.members = map[string]*member{}
		c.list = nil
		c.gen.Add(1)
		c.mu.Unlock()
		for _, m := range members {
			m.ch.mu.Lock()
			m.ch.removeMemberLocked(m)
			m.ch.mu.Unlock()
		}
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		if c.client != nil {
			c.s.detachClient(c.client)
		}
	}()
	buf := make([]byte, 64<<10)
	if err := c.handshake(buf); err != nil {
		c.s.log.Info("relay: handshake failed", "remote", c.nc.RemoteAddr().String(), "err", err)
		return
	}
	c.s.go_(c.writeLoop)
	for {
		n, err := c.nc.Read(buf)
		if n > 0 {
			perr := c.parser.Feed(buf[:n], c.dispatch)
			c.flushAcks()
			if perr != nil {
				c.s.log.Info("relay: closing connection after a bad frame", "client", c.name, "err", perr)
				c.sendError(0, perr)
				c.flushAndClose()
				return
			}
			// A busy publisher fills the buffer: read more per call. Frames
			// never alias it after Feed returns.
			if n == len(buf) && len(buf) < maxReadBuf {
				buf = make([]byte, 2*len(buf))
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.s.log.Debug("relay: connection read", "client", c.name, "err", err)
			}
			return
		}
	}
}

// flushAndClose lets the writer send what is queued (the error frame),
// waiting at most half a second, then closes.
func (c *sconn) flushAndClose() {
	timeout := time.NewTimer(500 * time.Millisecond)
	defer timeout.Stop()
	for {
		c.mu.Lock()
		empty := len(c.ctrl) == 0
		c.mu.Unlock()
		if empty {
			break
		}
		select {
		case <-c.flushed:
		case <-timeout.C:
			c.close(nil)
			return
		}
	}
	// The writer took the frames; wait for its flush.
	select {
	case <-c.flushed:
	case <-timeout.C:
	}
	c.close(nil)
}

// handshake reads the hello and answers welcome or an error.
func (c *sconn) handshake(buf []byte) error {
	c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	defer c.nc.SetReadDeadline(time.Time{})
	// Read exactly the hello; frames the client pipelined after it stay
	// in the socket for the main loop.
	htype, hello, err := readFrame(c.nc, helloMax)
	if err != nil {
		var re *Error
		if errors.As(err, &re) {
			c.writeDirect(tError, func(b []byte) []byte {
				return putStr(putU16(putU64(b, 0), uint16(re.Code)), re.Msg)
			})
		}
		return err
	}
	fail := func(e *Error) error {
		c.writeDirect(tError, func(b []byte) []byte { return putStr(putU16(putU64(b, 0), uint16(e.Code)), e.Msg) })
		return e
	}
	if htype != tHello {
		return fail(errf(CodeProtocol, "expected hello, got %s frame", frameName(htype)))
	}
	d := dec{b: hello}
	var mg [4]byte
	for i := range mg {
		mg[i] = d.u8()
	}
	vmin, vmax := d.u16(), d.u16()
	id, name, secret := d.str(), d.str(), d.str()
	if d.err != nil || mg != magic {
		return fail(errf(CodeProtocol, "not a relay hello"))
	}
	if vmin > ProtocolVersionMax || vmax < ProtocolVersionMin {
		return fail(errf(CodeVersion, "client speaks protocol versions %d..%d, this relay %d..%d", vmin, vmax, ProtocolVersionMin, ProtocolVersionMax))
	}
	version := min(vmax, ProtocolVersionMax)
	if id == "" {
		return fail(errf(CodeProtocol, "hello without a client id"))
	}
	if sec := c.s.cfg.Secret; sec != "" {
		switch {
		case subtle.ConstantTimeCompare([]byte(sec), []byte(secret)) == 1:
			c.admin = true
		case secret != "":
			return fail(errf(CodeDenied, "wrong relay secret"))
		case len(c.s.cfg.Tokens) == 0:
			return fail(errf(CodeDenied, "this relay needs a secret (set the client's secret)"))
		}
	}
	c.id, c.name = id, name
	if c.name == "" {
		c.name = id
	}
	// A client that reconnects replaces its old connection; wait until the
	// old one has stopped so publishes are never applied out of order.
	c.s.mu.Lock()
	var old *sconn
	for o := range c.s.conns {
		if o != c && o.id == id {
			old = o
		}
	}
	c.s.mu.Unlock()
	if old != nil {
		old.close(errors.New("replaced by a new connection of the same client"))
		select {
		case <-old.done:
		case <-c.s.quit:
			return transport.ErrClosed
		}
	}
	c.client = c.s.attachClient(id)
	c.parser.SetMax(c.s.maxFrame)
	return c.writeDirect(tWelcome, func(b []byte) []byte {
		b = putU16(b, version)
		b = putU64(b, c.s.epoch)
		b = putU32(b, uint32(c.s.cfg.MaxEvent))
		return putU32(b, uint32(c.s.maxFrame))
	})
}

// writeDirect writes one frame before the writer runs.
func (c *sconn) writeDirect(typ byte, fn func(b []byte) []byte) error {
	b, off := beginFrame(nil, typ)
	b = endFrame(fn(b), off)
	c.nc.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	defer c.nc.SetWriteDeadline(time.Time{})
	_, err := c.nc.Write(b)
	return err
}

// writeLoop writes control frames and pulls events, states and chunks from
// the members. Each round gathers everything ready and writes it with one
// vectored write (no copy: event frames are written from the log, and runs
// of consecutive events as one piece); on TLS (and in race builds, see
// raceEnabled) the pieces go through a buffer instead, flushed when
// nothing more is ready.
func (c *sconn) writeLoop() {
	var bw *bufio.Writer
	if _, ok := c.nc.(*net.TCPConn); !ok || raceEnabled {
		bw = bufio.NewWriterSize(c.nc, 256<<10)
	}
	var spare []byte
	var frames [][]byte
	var bufs net.Buffers
	for {
		select {
		case <-c.wake:
		case <-c.quit:
			return
		}
		for {
			c.mu.Lock()
			ctrl := c.ctrl
			c.ctrl = spare[:0]
			c.ackOff = -1
			list := c.list
			c.mu.Unlock()
			// Events first, then the control frames taken before them:
			// acknowledgements never run ahead of the events this
			// connection receives, so a pipelining publisher cannot make
			// its own subscription lag.
			frames = frames[:0]
			for _, m := range list {
				frames = m.fill(frames)
			}
			if len(ctrl) > 0 {
				frames = append(frames, ctrl)
			}
			wrote := len(frames) > 0
			if wrote {
				var err error
				if bw != nil {
					for _, f := range frames {
						if _, err = bw.Write(f); err != nil {
							break
						}
					}
				} else {
					bufs = append(bufs[:0], frames...)
					_, err = bufs.WriteTo(c.nc)
				}
				if err != nil {
					c.close(err)
					return
				}
			}
			clear(frames)
			clear(bufs[:cap(bufs)])
			if cap(ctrl) <= 1<<20 {
				spare = ctrl[:0]
			} else {
				spare = nil
			}
			if !wrote {
				break
			}
		}
		if bw != nil {
			if err := bw.Flush(); err != nil {
				c.close(err)
				return
			}
		}
		select {
		case c.flushed <- struct{}{}:
		default:
		}
	}
}

// appendRun appends f to frames, growing the last piece over f when f
// directly follows it in memory (consecutive events of one block).
func appendRun(frames [][]byte, f []byte) [][]byte {
	if k := len(frames) - 1; k >= 0 && len(f) > 0 {
		l := frames[k]
		if len(l) > 0 && cap(l)-len(l) >= len(f) && &l[:len(l)+1][len(l)] == &f[0] {
			frames[k] = l[:len(l)+len(f)]
			return frames
		}
	}
	return append(frames, f)
}

// eventBatch is how many events one member may send per writer round.
const eventBatch = 1024

// fill appends the frames m should send next: one state chunk, or a batch
// of events.
func (m *member) fill(frames [][]byte) [][]byte {
	ch := m.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if m.left {
		return frames
	}
	if x := m.xfer; x != nil {
		n := min(chunkSize, len(x.data)-x.off)
		flags := x.flags
		if x.off+n == len(x.data) {
			flags |= chunkLast
			m.xfer = nil
		}
		hdr, off := beginFrame(make([]byte, 0, 64+len(m.key)), tState)
		hdr = putStr(hdr, m.key)
		hdr = putU64(hdr, x.seq)
		hdr = putU64(hdr, uint64(len(x.data)))
		hdr = putU8(hdr, flags)
		hdr = appendUvarintLen(hdr, n)
		binaryPutLen(hdr, off, len(hdr)-off-4+n)
		frames = append(frames, hdr, x.data[x.off:x.off+n])
		x.off += n
		return frames
	}
	if !m.synced {
		return frames
	}
	if m.cursor <= ch.base {
		// The log was trimmed while m received a state.
		ch.needStateLocked(m, m.cursor-1, false, true)
		return frames
	}
	evs := ch.eventsLocked(m.cursor, eventBatch)
	if m.key == ch.info.Name {
		for _, ev := range evs {
			frames = appendRun(frames, ev.frame)
		}
	} else {
		// Joined by ID: the same frames under the member's key.
		for _, ev := range evs {
			tail := ev.frame[ev.tailOff:]
			hdr, off := beginFrame(make([]byte, 0, 8+len(m.key)), tEvent)
			hdr = putStr(hdr, m.key)
			binaryPutLen(hdr, off, len(hdr)-off-4+len(tail))
			frames = append(frames, hdr, tail)
		}
	}
	m.cursor += uint64(len(evs))
	return frames
}

// dispatch handles one frame from the client (reader goroutine).
func (c *sconn) dispatch(typ byte, body []byte) error {
	d := dec{b: body}
	if typ != tPublish {
		c.flushAcks() // keep the order of everything else
	}
	switch typ {
	case tPublish:
		counter, name := d.u64(), d.raw(maxString)
		data := d.raw(c.s.maxFrame)
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "publish frame: %v", err)
		}
		c.publish(counter, name, data)
	case tJoin:
		reqID, name, token, flags, epoch, from := d.u64(), d.str(), d.str(), d.u8(), d.u64(), d.u64()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "join frame: %v", err)
		}
		if err := c.join(reqID, name, token, flags, epoch, from); err != nil {
			c.sendError(reqID, err)
		}
	case tLeave:
		reqID, name := d.u64(), d.str()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "leave frame: %v", err)
		}
		c.mu.Lock()
		m := c.members[name]
		c.mu.Unlock()
		if m == nil {
			// Unknown or already gone (a removed channel): nothing to do.
			c.sendOK(reqID)
			return nil
		}
		m.ch.mu.Lock()
		m.ch.removeMemberLocked(m)
		m.ch.mu.Unlock()
		c.mu.Lock()
		if c.members[name] == m {
			delete(c.members, name)
			c.rebuildListLocked()
		}
		c.mu.Unlock()
		c.sendOK(reqID)
	case tCkptData:
		name, id, seq, total, flags := d.str(), d.u64(), d.u64(), d.u64(), d.u8()
		chunk := d.raw(c.s.maxFrame)
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "checkpoint frame: %v", err)
		}
		return c.checkpointChunk(name, id, seq, total, flags, chunk)
	case tResync:
		name, received, gen := d.str(), d.u64(), d.u64()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "resync frame: %v", err)
		}
		c.mu.Lock()
		m := c.members[name]
		c.mu.Unlock()
		if m == nil {
			return nil
		}
		ch := m.ch
		ch.mu.Lock()
		if !m.left && m.synced && m.xfer == nil && m.stateGen == gen && received < m.cursor {
			c.s.log.Info("relay: member fell behind locally; catching it up by state transfer", "channel", name, "client", c.name)
			ch.needStateLocked(m, received, false, true)
		}
		ch.mu.Unlock()
	case tList:
		reqID := d.u64()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "list frame: %v", err)
		}
		all := c.s.Channels()
		list := all[:0]
		for _, info := range all {
			if c.maySee(info) {
				list = append(list, info)
			}
		}
		c.queue(tChannels, func(b []byte) []byte {
			b = putU64(b, reqID)
			b = putU32(b, uint32(len(list)))
			for _, info := range list {
				b = putInfo(b, info)
			}
			return b
		})
	case tCreate:
		reqID := d.u64()
		info := getInfo(&d)
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "create frame: %v", err)
		}
		if !c.mayManage() {
			c.sendError(reqID, errf(CodeDenied, "creating channels needs the relay's secret or a relay that allows creation"))
			return nil
		}
		// Run outside the reader: the store write may wait for a commit.
		if err := c.s.CreateChannel(info); err != nil {
			c.sendError(reqID, err)
		} else {
			c.sendOK(reqID)
		}
	case tRemove:
		reqID, name := d.u64(), d.str()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "remove frame: %v", err)
		}
		if !c.mayManage() {
			c.sendError(reqID, errf(CodeDenied, "removing channels needs the relay's secret or a relay that allows creation"))
			return nil
		}
		ch := c.s.channel(name)
		if ch == nil {
			c.sendError(reqID, errf(CodeNoChannel, "channel %q does not exist", name))
			return nil
		}
		// The token guards the channel whether it is named by its name
		// or by its ID.
		if _, ok := c.s.channelToken(ch.info.Name, ch.info.ID); ok && !c.admin {
			c.sendError(reqID, errf(CodeDenied, "channel %q has a token: removing it needs the relay's secret", ch.info.Name))
			return nil
		}
		if err := c.s.removeChannel(ch); err != nil {
			c.sendError(reqID, err)
		} else {
			c.sendOK(reqID)
		}
	case tPing:
		tok := d.u64()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "ping frame: %v", err)
		}
		c.queue(tPong, func(b []byte) []byte { return putU64(b, tok) })
	case tPong:
	default:
		return errf(CodeProtocol, "unexpected %s frame from a client", frameName(typ))
	}
	return nil
}

func (c *sconn) mayManage() bool {
	if c.s.cfg.Secret != "" {
		return c.admin
	}
	return c.s.cfg.AllowCreate
}

func (c *sconn) join(reqID uint64, name, token string, flags byte, epoch, from uint64) error {
	if err := checkChannelName(name); err != nil {
		return err
	}
	// Tokens guard channels, not the keys clients use: a channel is
	// authorized as what name resolves to (by name or by ID).
	ch := c.s.channel(name)
	if ch == nil {
		// Authorized as the channel it would create.
		if _, err := c.s.authJoin(c.admin, name, name, "", token); err != nil {
			return err
		}
		if !c.s.cfg.AllowCreate || (c.s.cfg.Secret != "" && !c.admin) {
			return c.s.noChannelErr(name, c.admin)
		}
		var err error
		if ch, err = c.s.createChannel(transport.ChannelInfo{Name: name}, true); err != nil {
			return err
		}
	}
	granted, err := c.s.authJoin(c.admin, name, ch.info.Name, ch.info.ID, token)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.members[name] != nil {
		c.mu.Unlock()
		return errf(CodeAlreadyJoined, "this client already joined channel %q", name)
	}
	if granted {
		if c.granted == nil {
			c.granted = map[string]bool{}
		}
		c.granted[ch.info.Name] = true
	}
	c.mu.Unlock()
	m := &member{c: c, ch: ch, key: name}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.removed {
		return errf(CodeNoChannel, "channel %q was removed", name)
	}
	ch.addMemberLocked(m)
	c.mu.Lock()
	c.members[name] = m
	c.rebuildListLocked()
	var off int
	c.ctrl, off = beginFrame(c.ctrl, tJoined)
	c.ctrl = putU64(putStr(putU64(c.ctrl, reqID), name), ch.committed)
	c.ctrl = endFrame(c.ctrl, off)
	c.mu.Unlock()
	c.signal()
	if flags&joinPublishOnly != 0 {
		m.pubOnly = true
		return nil
	}
	resume := flags&joinResume != 0 && epoch == c.s.epoch && from <= ch.committed
	switch {
	case resume && from >= ch.base:
		m.stateGen++
		m.xfer = &xfer{seq: from, flags: stateNone}
		m.cursor = from + 1
		m.synced = true
	case resume:
		ch.needStateLocked(m, from, false, false)
	default:
		ch.needStateLocked(m, 0, true, false)
	}
	return nil
}

// publish orders one event (reader goroutine).
func (c *sconn) publish(counter uint64, nameb []byte, data []byte) {
	var m *member
	if g := c.gen.Load(); g == c.pubGen && c.pubM != nil && string(nameb) == c.pubName {
		m = c.pubM
	} else {
		c.mu.Lock()
		m = c.members[string(nameb)]
		c.mu.Unlock()
		if m != nil {
			c.pubGen, c.pubName, c.pubM = g, string(nameb), m
		}
	}
	if m == nil {
		c.flushAcks()
		c.sendError(counter, errf(CodeNotJoined, "publish to channel %q without joining it", nameb))
		return
	}
	name := m.ch.info.Name
	if len(data) > c.s.cfg.MaxEvent {
		c.flushAcks()
		c.sendError(counter, errf(CodeTooLarge, "event of %d bytes exceeds the relay's limit of %d", len(data), c.s.cfg.MaxEvent))
		return
	}
	ch := m.ch
	cr := c.client
	cr.mu.Lock()
	if seq, dup := cr.lookup(counter); dup {
		cr.mu.Unlock()
		if c.s.com != nil {
			c.s.com.add(citem{op: opAck, c: c, counter: counter, seq: seq})
		} else {
			c.flushAcks()
			c.sendAck(counter, seq)
		}
		return
	}
	ch.mu.Lock()
	if ch.removed || m.left {
		ch.mu.Unlock()
		cr.mu.Unlock()
		c.flushAcks()
		c.sendError(counter, errf(CodeRemoved, "channel %q was removed", name))
		return
	}
	seq := ch.lastSeq + 1
	ev := ch.newEventLocked(seq, c.name, data)
	ev.client, ev.counter = c.id, counter
	ch.appendLocked(ev)
	cr.remember(counter, seq)
	cr.mu.Unlock()
	if c.s.com != nil {
		c.s.com.add(citem{op: opEvent, ch: ch, ev: ev, c: c, counter: counter, seq: seq})
		ch.mu.Unlock()
		return
	}
	ch.commitLocked(seq)
	ch.mu.Unlock()
	c.deferAck(counter, seq)
}

// checkpointChunk assembles a member's checkpoint (reader goroutine). Only
// answers to a checkpoint request this relay sent to this connection are
// taken; anything else is a protocol error, which closes the connection.
// A checkpoint is kept only while the channel waits for it, and never
// beyond its announced size, which is at most MaxCheckpoint.
func (c *sconn) checkpointChunk(name string, id, seq, total uint64, flags byte, chunk []byte) error {
	last := flags&chunkLast != 0
	a := c.asm[id]
	if a == nil {
		ch, ok := c.takeCkptReq(id)
		if !ok {
			return errf(CodeProtocol, "checkpoint data for request %d (channel %q), which this relay did not send to this connection or which was answered already", id, name)
		}
		if flags&chunkFailed != 0 {
			if !last {
				return errf(CodeProtocol, "checkpoint %d: a failed answer must be the last chunk", id)
			}
			ch.onCheckpoint(c, id, 0, nil, true)
			return nil
		}
		if len(c.asm) >= maxCkptAsm {
			return errf(CodeProtocol, "more than %d checkpoints in progress on one connection", maxCkptAsm)
		}
		a = &assembly{ch: ch, seq: seq, total: total}
		if total > uint64(c.s.cfg.MaxCheckpoint) {
			c.s.log.Warn("relay: member offered a checkpoint over the limit", "client", c.name, "channel", ch.info.Name, "bytes", total, "limit", c.s.cfg.MaxCheckpoint)
			ch.onCheckpoint(c, id, 0, nil, true)
			a.ch = nil // swallow the rest
		}
		c.asm[id] = a
	}
	a.got += uint64(len(chunk))
	if a.got > a.total {
		return errf(CodeProtocol, "checkpoint %d longer than announced (%d bytes)", id, a.total)
	}
	if a.ch != nil && !a.ch.awaits(c, id) {
		// Late (the channel asked another member) or no longer wanted:
		// drop what was kept.
		a.ch, a.buf = nil, nil
	}
	if a.ch != nil && len(chunk) > 0 {
		if need := len(a.buf) + len(chunk); need > cap(a.buf) {
			// Grow with what arrives, never past the announced size.
			nb := make([]byte, len(a.buf), min(max(2*cap(a.buf), need), int(a.total)))
			copy(nb, a.buf)
			a.buf = nb
		}
		a.buf = append(a.buf, chunk...)
	}
	if !last {
		return nil
	}
	delete(c.asm, id)
	if a.got != a.total {
		return errf(CodeProtocol, "checkpoint %d has %d bytes, announced %d", id, a.got, a.total)
	}
	if a.ch == nil {
		return nil
	}
	var data []byte
	if len(a.buf) > 0 {
		data = a.buf
	}
	a.ch.onCheckpoint(c, id, a.seq, data, false)
	return nil
}

func appendUvarintLen(b []byte, n int) []byte { return putUvarint(b, uint64(n)) }

func binaryPutLen(b []byte, off, n int) {
	b[off] = byte(n >> 24)
	b[off+1] = byte(n >> 16)
	b[off+2] = byte(n >> 8)
	b[off+3] = byte(n)
}
