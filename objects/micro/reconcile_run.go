package micro

import (
	"context"
	"fmt"
)

// maxReconRounds bounds one reconciliation; a peer that keeps it going
// longer is cut off.
const maxReconRounds = 64

// reconcile runs a reconciliation from the initiating side over exchange,
// which carries one message to the other side and returns its answer (nil
// when it has none). It returns the entries the other side had that s
// lacks.
func reconcile(ctx context.Context, s *Set, exchange func(ctx context.Context, msg []byte) ([]byte, error)) ([]Entry, ReconStats, error) {
	var st ReconStats
	var learned []Entry
	seen := map[Token]bool{}
	msg := s.reconInitiate()
	for msg != nil {
		if st.RoundTrips >= maxReconRounds {
			return learned, st, fmt.Errorf("micro: reconcile: %w: more than %d rounds", ErrProtocol, maxReconRounds)
		}
		st.RoundTrips++
		st.BytesSent += int64(len(msg))
		expect := needsAnswer(msg)
		ans, err := exchange(ctx, msg)
		if err != nil {
			return learned, st, err
		}
		st.BytesReceived += int64(len(ans))
		if ans == nil || !expect && len(ans) == 0 {
			break
		}
		next, l, err := s.reconRespond(ans)
		if err != nil {
			return learned, st, err
		}
		for _, e := range l {
			if !seen[e.Token] {
				seen[e.Token] = true
				learned = append(learned, e)
			}
		}
		msg = next
	}
	st.Learned = len(learned)
	return learned, st, nil
}

// ReconcileSets reconciles two in-memory sets as two servers would over
// the wire, and returns what each side learned and the cost. It does not
// change the sets. It is the measure used by the benchmarks.
func ReconcileSets(ctx context.Context, a, b *Set) (learnedA, learnedB []Entry, st ReconStats, err error) {
	seen := map[Token]bool{}
	learnedA, st, err = reconcile(ctx, a, func(ctx context.Context, msg []byte) ([]byte, error) {
		ans, l, err := b.reconRespond(msg)
		for _, e := range l {
			if !seen[e.Token] {
				seen[e.Token] = true
				learnedB = append(learnedB, e)
			}
		}
		return ans, err
	})
	st.Given = len(learnedB)
	return learnedA, learnedB, st, err
}
