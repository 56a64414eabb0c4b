package relay

import (
	"fmt"
	"sync"
	"time"
)

// committer is the durable mode's group commit: it writes everything
// pending in one bbolt transaction, then makes the events deliverable and
// acknowledges their publishers. One goroutine (run) owned by the server.
type committer struct {
	s  *Server
	st *boltStore

	mu      sync.Mutex // protects pending
	pending []citem
	wake    chan struct{}
}

func newCommitter(s *Server, st *boltStore) *committer {
	return &committer{s: s, st: st, wake: make(chan struct{}, 1)}
}

// add queues an item; it is written with the next transaction. Callers
// keep the per-channel order by adding while holding the channel's lock.
func (cm *committer) add(it citem) {
	cm.mu.Lock()
	cm.pending = append(cm.pending, it)
	cm.mu.Unlock()
	select {
	case cm.wake <- struct{}{}:
	default:
	}
}

// sync adds an item and waits until it is on disk.
func (cm *committer) sync(it citem) error {
	it.done = make(chan error, 1)
	cm.add(it)
	select {
	case err := <-it.done:
		return err
	case <-cm.s.quit:
		return fmt.Errorf("relay: %w", errClosedServer)
	}
}

var errClosedServer = &Error{Code: CodeShutdown, Msg: "relay shutting down"}

func (cm *committer) run() {
	var batch []citem
	for {
		select {
		case <-cm.wake:
		case <-cm.s.quit:
			// Write what is pending so acknowledged work is never lost;
			// nothing new is acknowledged after this point.
			cm.mu.Lock()
			batch = cm.pending
			cm.pending = nil
			cm.mu.Unlock()
			if len(batch) > 0 {
				if err := cm.st.write(batch); err != nil {
					cm.s.log.Error("relay: final commit failed", "err", err)
				}
			}
			for _, it := range batch {
				if it.done != nil {
					it.done <- errClosedServer
				}
			}
			return
		}
		cm.mu.Lock()
		batch, cm.pending = cm.pending, batch[:0]
		cm.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if err = cm.st.write(batch); err == nil {
				break
			}
			cm.s.log.Error("relay: commit failed; retrying", "err", err, "attempt", attempt+1)
			time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
		}
		if err != nil {
			cm.s.log.Error("relay: store is failing; shutting the relay down so nothing unstored is acknowledged", "err", err)
			for _, it := range batch {
				if it.done != nil {
					it.done <- err
				}
			}
			go cm.s.Close()
			return
		}
		cm.apply(batch)
		clear(batch)
	}
}

// apply makes a written batch visible: commits events per channel (in
// order), then sends acknowledgements.
func (cm *committer) apply(batch []citem) {
	var lastCh *channel
	var lastSeq uint64
	flush := func() {
		if lastCh != nil {
			lastCh.mu.Lock()
			lastCh.commitLocked(lastSeq)
			lastCh.mu.Unlock()
		}
	}
	for i := range batch {
		it := &batch[i]
		if it.op == opEvent {
			if it.ch != lastCh {
				flush()
				lastCh = it.ch
			}
			lastSeq = it.seq
		}
	}
	flush()
	for i := range batch {
		it := &batch[i]
		switch it.op {
		case opEvent, opAck:
			if it.c != nil {
				it.c.sendAck(it.counter, it.seq)
			}
		}
		if it.done != nil {
			it.done <- nil
		}
	}
}
