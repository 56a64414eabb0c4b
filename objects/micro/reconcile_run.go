package micro

import (
	"context"
	"errors"
	"fmt"
)

// maxReconRounds bounds one reconciliation; a peer that keeps it going
// longer is cut off. Each round moves at most about reconBudget bytes of
// entries, so a reconciliation that has to transfer more than some 64 MB
// (half a million entries) stops at the bound with errReconRounds; the
// server then keeps what it learned and reconciles again (see
// assentStats). It is a variable for tests.
var maxReconRounds = 64

// errReconRounds: a reconciliation reached maxReconRounds. It wraps
// ErrProtocol.
var errReconRounds = fmt.Errorf("%w: reconciliation round limit reached", ErrProtocol)

// isReconRounds reports whether err is errReconRounds.
func isReconRounds(err error) bool { return errors.Is(err, errReconRounds) }

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
			st.Learned = len(learned)
			return learned, st, fmt.Errorf("micro: reconcile: %w (%d rounds)", errReconRounds, maxReconRounds)
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
