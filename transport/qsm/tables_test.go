package qsm

import (
	"fmt"
	"testing"
)

// TestSourceTable checks the delivery positions by source number: dense
// below denseSources, in a map above, and forgotten per group.
func TestSourceTable(t *testing.T) {
	var tab sourceTable
	if tab.find(3) != nil || tab.find(denseSources+5) != nil {
		t.Fatal("empty table finds entries")
	}
	g := &localGroup{id: 7}
	*tab.add(3) = sourceLast{group: 7, gseq: 10, g: g}
	*tab.add(denseSources + 5) = sourceLast{group: 8, gseq: 4}
	*tab.add(1) = sourceLast{group: 8, gseq: 1}
	if sl := tab.find(3); sl == nil || sl.gseq != 10 || sl.g != g {
		t.Fatalf("find(3) = %+v", sl)
	}
	if tab.find(2) != nil {
		t.Fatal("find(2) on a slot never added")
	}
	if sl := tab.find(denseSources + 5); sl == nil || sl.gseq != 4 {
		t.Fatalf("find(large) = %+v", sl)
	}
	tab.forget(8)
	if tab.find(1) != nil || tab.find(denseSources+5) != nil {
		t.Fatal("forget(8) kept entries of group 8")
	}
	if sl := tab.find(3); sl == nil || sl.gseq != 10 {
		t.Fatal("forget(8) dropped an entry of group 7")
	}
}

// TestClientMemberTable checks the engine's table of a client's members.
func TestClientMemberTable(t *testing.T) {
	c := &svcClient{}
	m1, m2 := &localMember{id: 1}, &localMember{id: 900}
	c.setMember(1, m1)
	c.setMember(900, m2)
	c.setMember(denseMembers+1, &localMember{})
	if c.member(1) != m1 || c.member(900) != m2 || c.member(2) != nil || c.member(denseMembers+1) != nil {
		t.Fatal("wrong members found")
	}
	c.setMember(900, nil)
	c.setMember(5000, nil) // beyond the table: nothing to clear
	if c.member(900) != nil || len(c.byID) != 901 {
		t.Fatalf("after clearing: member %v, table of %d", c.member(900), len(c.byID))
	}
}

func TestSenderString(t *testing.T) {
	for _, c := range []struct {
		node   uint64
		source uint32
	}{{0, 0}, {1, 1}, {0xdeadbeef, 42}, {^uint64(0), ^uint32(0)}, {0x0123456789abcdef, 8000}} {
		if got, want := senderString(c.node, c.source), fmt.Sprintf("%016x/%d", c.node, c.source); got != want {
			t.Errorf("senderString(%#x, %d) = %q, want %q", c.node, c.source, got, want)
		}
	}
}
