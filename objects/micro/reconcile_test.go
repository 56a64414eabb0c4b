package micro

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"testing"
)

func randTokens(n int, base int64) []Token {
	ts := make([]Token, n)
	for i := range ts {
		rand.Read(ts[i][:])
		binary.BigEndian.PutUint64(ts[i][0:8], uint64(base+int64(i%1000)))
		ts[i][8] = tokenVersion
	}
	return ts
}

func TestReconcileSets(t *testing.T) {
	for _, tc := range []struct{ n, onlyA, onlyB int }{
		{0, 0, 0}, {0, 5, 0}, {0, 0, 40}, {10, 1, 1}, {1000, 0, 0}, {1000, 50, 50},
		{20000, 50, 50}, {5000, 3000, 0}, {100, 0, 100000},
	} {
		t.Run(fmt.Sprintf("n%d_a%d_b%d", tc.n, tc.onlyA, tc.onlyB), func(t *testing.T) {
			common := randTokens(tc.n, 1e12)
			oa := randTokens(tc.onlyA, 1e12)
			ob := randTokens(tc.onlyB, 1e12)
			a := NewSet(append(append([]Token{}, common...), oa...), nil)
			b := NewSet(append(append([]Token{}, common...), ob...), nil)
			la, lb, st, err := ReconcileSets(context.Background(), a, b)
			if err != nil {
				t.Fatal(err)
			}
			if len(la) != tc.onlyB || len(lb) != tc.onlyA {
				t.Fatalf("learned a=%d b=%d, want %d %d (stats %+v)", len(la), len(lb), tc.onlyB, tc.onlyA, st)
			}
			for _, e := range la {
				if a.Has(e.Token) || !b.Has(e.Token) {
					t.Fatalf("a learned a token it had or b lacks")
				}
			}
			t.Logf("%+v", st)
		})
	}
}
