package micro

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzLocalProtocol feeds arbitrary request bodies to a real server's
// local request handler (only the operations that stay on this host: a
// fuzzed token names an arbitrary home, which must not be dialed) and
// arbitrary answers to the client's decoding. Nothing may panic; a bad
// request gets an error.
func FuzzLocalProtocol(f *testing.F) {
	k := mustKeys(f)
	s, err := NewServer(ServerConfig{DataDir: f.TempDir(), Logger: testLogger(), LocalSocket: "-", SweepInterval: -1, FloodInterval: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	o, _ := NewObject(k, s.self(), time.Now().Add(time.Hour), []byte("x"))
	tok := o.Token()
	seeds := []struct {
		op  uint8
		req localReq
	}{
		{opHomeAddr, localReq{}},
		{opAdopt, localReq{Obj: o.appendTo(nil)}},
		{opCluster, localReq{Token: tok, Limit: 10}},
		{opEntries, localReq{Token: tok, After: tok}},
		{opShared, localReq{}},
		{opUpdate, localReq{Token: tok, Ents: toJSONEntries([]Entry{NewEntry(k, tok, tok), NewSealedEntry(k, tok, tok)})}},
	}
	for _, sd := range seeds {
		b, _ := json.Marshal(sd.req)
		f.Add(sd.op, b)
	}
	ans, _ := json.Marshal(localResp{Token: tok, Tokens: []Token{tok}, Obj: o.appendTo(nil), Shared: []SharedObject{{Token: tok, Flood: 2}}})
	f.Add(uint8(0), ans)
	f.Add(uint8(opEntries), []byte(`{"token":"AAAA","entries":[{"t":"","s":""}]}`))
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		switch op {
		case opHomeAddr, opAdopt, opCluster, opEntries, opShared:
			s.handleLocal(frame{typ: op, body: body})
		}
		// What an Update would check before it touches the store.
		var req localReq
		if json.Unmarshal(body, &req) == nil {
			if es, err := fromJSONEntries(req.Ents); err == nil {
				for _, e := range es {
					VerifyEntry(o, tok, e)
				}
			}
			if req.Policy != nil {
				_ = req.Policy.String()
			}
		}
		// The client's side of an answer.
		var resp localResp
		if json.Unmarshal(body, &resp) == nil {
			fromJSONEntries(resp.Ents)
			new(Object).UnmarshalBinary(resp.Obj)
		}
		var le localError
		json.Unmarshal(body, &le)
	})
}
