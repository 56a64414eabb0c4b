package qsm

import (
	"slices"
	"sync"
	"time"
)

// latencyRecorder keeps the most recent n durations (a ring buffer).
type latencyRecorder struct {
	mu    sync.Mutex // protects the fields below
	buf   []time.Duration
	next  int
	total int
}

func newLatencyRecorder(n int) *latencyRecorder {
	return &latencyRecorder{buf: make([]time.Duration, 0, n)}
}

func (l *latencyRecorder) add(d time.Duration) {
	l.mu.Lock()
	if len(l.buf) < cap(l.buf) {
		l.buf = append(l.buf, d)
	} else {
		l.buf[l.next] = d
		l.next = (l.next + 1) % len(l.buf)
	}
	l.total++
	l.mu.Unlock()
}

func (l *latencyRecorder) reset() {
	l.mu.Lock()
	l.buf = l.buf[:0]
	l.next = 0
	l.mu.Unlock()
}

func (l *latencyRecorder) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func (l *latencyRecorder) snapshot() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.buf)
}

// Percentile returns the p-th percentile (0-100) of ds, or 0 when empty.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[max(0, min(i, len(s)-1))]
}
