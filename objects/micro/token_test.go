package micro

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// TestTokenTextIsUnique checks that a token is read back only from the
// text String writes: not with a line break inside it (which the base64
// decoder skips), not with the last character's unused bits set, and not
// one character short.
func TestTokenTextIsUnique(t *testing.T) {
	o, err := NewObject(mustKeys(t), netip.MustParseAddrPort("127.0.0.1:4750"), time.Now().Add(time.Hour), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	s := o.Token().String()
	if p, err := ParseToken(s); err != nil || p != o.Token() {
		t.Fatalf("ParseToken(String()) = %v, %v", p, err)
	}
	last := s[len(s)-1]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var other byte // the same value in the used bits, another in the unused ones
	for i := range alphabet {
		if alphabet[i] == last {
			other = alphabet[i^1]
		}
	}
	bad := map[string]string{
		"a CR inside":                  s[:28] + "\r" + s[28:len(s)-1],
		"a LF inside":                  s[:40] + "\n" + s[40:len(s)-1],
		"a LF at the end":              s + "\n",
		"unused bits of the last char": s[:len(s)-1] + string(other),
		"one character short":          s[:len(s)-1],
	}
	for name, b := range bad {
		if _, err := ParseToken(b); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: ParseToken(%q) = %v, want ErrBadToken", name, b, err)
		}
		var u Token
		if err := u.UnmarshalText([]byte(b)); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: UnmarshalText(%q) = %v, want ErrBadToken", name, b, err)
		}
	}
}
