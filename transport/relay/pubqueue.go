package relay

import "sort"

// pubQueue holds a client's pending publishes in counter order. Counters
// only grow, so a publish is appended at the end, and acknowledgements,
// which come in order, take from the front; a publish dropped from the
// middle leaves a hole that is skipped. Guarded by Client.mu.
type pubQueue struct {
	e    []pubEntry // e[head:] in counter order; p nil for a hole
	head int
	live int
}

type pubEntry struct {
	counter uint64
	p       *pub
}

// Len is the number of pending publishes.
func (q *pubQueue) Len() int { return q.live }

// push appends p, whose counter is above every counter in q.
func (q *pubQueue) push(p *pub) {
	q.e = append(q.e, pubEntry{counter: p.counter, p: p})
	q.live++
}

// get returns the publish with this counter, or nil.
func (q *pubQueue) get(counter uint64) *pub {
	if i := q.index(counter); i >= 0 {
		return q.e[i].p
	}
	return nil
}

// take removes and returns the publish with this counter, or nil.
func (q *pubQueue) take(counter uint64) *pub {
	i := q.index(counter)
	if i < 0 {
		return nil
	}
	p := q.e[i].p
	q.e[i].p = nil
	q.live--
	q.compact()
	return p
}

func (q *pubQueue) index(counter uint64) int {
	e := q.e[q.head:]
	if len(e) == 0 {
		return -1
	}
	i := 0
	if e[0].counter != counter {
		i = sort.Search(len(e), func(i int) bool { return e[i].counter >= counter })
	}
	if i == len(e) || e[i].counter != counter || e[i].p == nil {
		return -1
	}
	return q.head + i
}

// compact drops holes at the front and reclaims the space before head.
func (q *pubQueue) compact() {
	for q.head < len(q.e) && q.e[q.head].p == nil {
		q.head++
	}
	switch {
	case q.head == len(q.e):
		clear(q.e)
		q.e, q.head = q.e[:0], 0
	case q.head >= 1024 && q.head*2 >= len(q.e):
		n := copy(q.e, q.e[q.head:])
		clear(q.e[n:])
		q.e, q.head = q.e[:n], 0
	}
}

// each calls fn for every pending publish in counter order.
func (q *pubQueue) each(fn func(p *pub)) {
	for _, en := range q.e[q.head:] {
		if en.p != nil {
			fn(en.p)
		}
	}
}

// removeIf drops and returns the pending publishes for which drop is true.
func (q *pubQueue) removeIf(drop func(p *pub) bool) []*pub {
	var out []*pub
	for i := q.head; i < len(q.e); i++ {
		if p := q.e[i].p; p != nil && drop(p) {
			q.e[i].p = nil
			q.live--
			out = append(out, p)
		}
	}
	q.compact()
	return out
}
