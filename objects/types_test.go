package objects

import (
	"errors"
	"strings"
	"testing"

	"github.com/liveobjects/liveobjects/transport"
)

const (
	rel  = transport.Reliable
	fifo = transport.FIFO
	to   = transport.TotalOrder
	st   = transport.StateTransfer
	mem  = transport.Membership
	vs   = transport.VirtualSynchrony
)

func TestStrongest(t *testing.T) {
	tests := []struct {
		g    transport.Guarantee
		want string
	}{
		{0, "none"},
		{rel, "reliable"},
		{rel | fifo, "fifo"},
		{rel | fifo | to | st, "total-order+state-transfer"},
		{to, "total-order"},
		{vs | mem | to | fifo | rel, "virtual-synchrony"},
		{mem | fifo, "fifo+membership"},
	}
	for _, tt := range tests {
		if got := Strongest(tt.g); got != tt.want {
			t.Errorf("Strongest(%s) = %q, want %q", tt.g, got, tt.want)
		}
	}
}

// TestCompatibility is the type-compatibility table: every implemented
// category against the drivers this project has.
func TestCompatibility(t *testing.T) {
	relay, _ := DriverProvides("relay")
	qsm, _ := DriverProvides("qsm")
	stream := Type{Category: CategoryStream, Requires: to}
	streamHist := Type{Category: CategoryStream, Requires: to | st}
	text := Type{Category: CategoryText, Requires: to | st}
	variable := Type{Category: CategoryVariable, Requires: to | st}
	bank := Type{Category: CategoryVariable, Requires: to | st | vs}
	reliable := Type{Category: CategoryStream, Requires: rel}
	tests := []struct {
		name     string
		typ      Type
		driver   string
		provides transport.Guarantee
		want     string // "" for ok
	}{
		{"chat", stream, "relay", relay, ""},
		{"chat", stream, "qsm", qsm, `chat: needs total-order; channel "news" over qsm provides fifo`},
		{"chat", streamHist, "qsm", qsm, `chat: needs total-order+state-transfer; channel "news" over qsm provides fifo`},
		{"note", text, "relay", relay, ""},
		{"note", text, "qsm", qsm, `note: needs total-order+state-transfer; channel "news" over qsm provides fifo`},
		{"temp", variable, "relay", relay, ""},
		{"temp", variable, "qsm", qsm, `temp: needs total-order+state-transfer; channel "news" over qsm provides fifo`},
		{"bank", bank, "relay", relay, `bank: needs virtual-synchrony; channel "news" over relay provides total-order+state-transfer`},
		{"feed", reliable, "qsm", qsm, ""},
		{"feed", reliable, "lossy", 0, `feed: needs reliable; channel "news" over lossy provides none`},
		{"bank", bank, "vsync", rel | fifo | to | st | mem | vs, ""},
	}
	for _, tt := range tests {
		err := tt.typ.CheckDriver(tt.name, "news", tt.driver, tt.provides)
		got := ""
		if err != nil {
			got = err.Error()
			if !errors.Is(err, ErrMismatch) {
				t.Errorf("%s over %s: error does not match ErrMismatch", tt.name, tt.driver)
			}
			var me *MismatchError
			if !errors.As(err, &me) || me.Missing == 0 {
				t.Errorf("%s over %s: no MismatchError with Missing", tt.name, tt.driver)
			}
		}
		if got != tt.want {
			t.Errorf("%s %s over %s:\n got %q\nwant %q", tt.name, tt.typ, tt.driver, got, tt.want)
		}
	}
}

// TestWeakerOrder checks that Weaker is a partial order (reflexive,
// antisymmetric, transitive) over a set of types, and some known pairs.
func TestWeakerOrder(t *testing.T) {
	types := []Type{
		{Category: CategoryStream, Requires: 0},
		{Category: CategoryStream, Requires: rel},
		{Category: CategoryStream, Requires: fifo},
		{Category: CategoryStream, Requires: to},
		{Category: CategoryStream, Requires: to | st},
		{Category: CategoryStream, Requires: vs},
		{Category: CategoryStream, Requires: mem},
		{Category: CategoryStream, Requires: to, Security: SecurityAuthenticated},
		{Category: CategoryStream, Requires: to, Security: SecurityEncrypted},
		{Category: CategoryText, Requires: to | st},
		{Category: CategoryText, Requires: to | st, Interface: "text"},
		{Category: CategoryUnknown, Requires: fifo},
	}
	canon := func(x Type) Type { x.Requires = x.Requires.Closure(); return x }
	for _, a := range types {
		if !a.Weaker(a) {
			t.Errorf("not reflexive: %s", a)
		}
		for _, b := range types {
			if a.Weaker(b) && b.Weaker(a) && canon(a) != canon(b) {
				t.Errorf("not antisymmetric: %s and %s", a, b)
			}
			for _, c := range types {
				if a.Weaker(b) && b.Weaker(c) && !a.Weaker(c) {
					t.Errorf("not transitive: %s <= %s <= %s", a, b, c)
				}
			}
		}
	}
	pairs := []struct {
		a, b Type
		want bool
	}{
		{Type{Category: CategoryStream, Requires: fifo}, Type{Category: CategoryStream, Requires: to}, true},
		{Type{Category: CategoryStream, Requires: to}, Type{Category: CategoryStream, Requires: fifo}, false},
		{Type{Category: CategoryStream, Requires: to}, Type{Category: CategoryStream, Requires: vs}, true},
		{Type{Category: CategoryStream, Requires: st}, Type{Category: CategoryStream, Requires: vs}, false},
		{Type{Category: CategoryStream}, Type{Category: CategoryText}, false},
		{Type{Category: CategoryUnknown}, Type{Category: CategoryText}, true},
		{Type{Category: CategoryText, Security: SecurityEncrypted}, Type{Category: CategoryText}, false},
		{Type{Category: CategoryText}, Type{Category: CategoryText, Security: SecurityEncrypted}, true},
		{Type{Category: CategoryText, Security: "quantum"}, Type{Category: CategoryText, Security: "quantum"}, true},
		{Type{Category: CategoryText, Security: "quantum"}, Type{Category: CategoryText, Security: SecurityEncrypted}, false},
		{Type{Interface: "a"}, Type{Interface: "b"}, false},
	}
	for _, p := range pairs {
		if got := p.a.Weaker(p.b); got != p.want {
			t.Errorf("%s weaker than %s = %v, want %v", p.a, p.b, got, p.want)
		}
	}
}

func obj(id string, params ...Parameter) *Object {
	return &Object{Kind: KindReference, ID: id, Parameters: params}
}

func TestTypeOf(t *testing.T) {
	tests := []struct {
		name     string
		o        *Object
		cat      Category
		requires transport.Guarantee
		security string
		err      string
	}{
		{"stream", obj(ClassStream), CategoryStream, to, "none", ""},
		{"stream history 0", obj(ClassStream, Parameter{ID: "history", Value: IntValue(0)}), CategoryStream, to, "none", ""},
		{"stream history", obj(ClassStream, Parameter{ID: "history", Value: IntValue(10)}), CategoryStream, to | st, "none", ""},
		{"stream bad history", obj(ClassStream, Parameter{ID: "history", Value: StringValue("x")}), CategoryStream, to, "none", `parameter "history": "x" is not a non-negative integer`},
		{"text", obj("0`1:" + ClassText + "`3"), CategoryText, to | st, "none", ""},
		{"variable", obj(ClassVariable), CategoryVariable, to | st, "none", ""},
		{"variable vs", obj(ClassVariable, Parameter{ID: "reliability", Value: StringValue("virtual-synchrony")}), CategoryVariable, to | st | vs, "none", ""},
		{"bad reliability", obj(ClassVariable, Parameter{ID: "reliability", Value: StringValue("magic")}), CategoryVariable, to | st, "none", `parameter "reliability": transport: unknown guarantee "magic"`},
		{"security", obj(ClassText, Parameter{ID: "security", Value: StringValue("Encrypted")}), CategoryText, to | st, "encrypted", ""},
		{"bad security", obj(ClassText, Parameter{ID: "security", Value: StringValue("rot13")}), CategoryText, to | st, "none", `parameter "security": unknown security "rot13"`},
		{"folder", obj(ClassFolder), CategoryFolder, 0, "none", ""},
		{"service", obj(ClassRelayServer), CategoryService, 0, "none", ""},
		{"unknown", func() *Object { o := obj("F01AA89B005A4B119702B6A076816160"); o.SetAttr(AttrName, "Client"); return o }(),
			CategoryUnknown, 0, "none", `class F01AA89B005A4B119702B6A076816160 (of "Client") is not implemented by liveobjects`},
		{"null", &Object{Kind: KindReference, Nil: true}, CategoryUnknown, 0, "none", "null object: it is switched off"},
	}
	for _, tt := range tests {
		_, typ, err := TypeOf(tt.o)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.err)) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.err)
		}
		if typ.Category != tt.cat || typ.Requires != tt.requires || typ.Security != tt.security {
			t.Errorf("%s: type %+v", tt.name, typ)
		}
	}
	_, _, err := TypeOf(obj("F01AA89B005A4B119702B6A076816160"))
	if !errors.Is(err, ErrUnknownClass) {
		t.Errorf("unknown class error %v does not match ErrUnknownClass", err)
	}
	o := obj(ClassText)
	o.Class = &ClassRef{Kind: ValueObjectClass, ID: "IFACE"}
	if _, typ, _ := TypeOf(o); typ.Interface != "IFACE" {
		t.Errorf("ObjectClass id not used as interface: %+v", typ)
	}
}

func TestClasses(t *testing.T) {
	for _, c := range Classes() {
		got, ok := LookupClass(strings.ToLower(c.ID))
		if !ok || got != c || !IsHexID(c.ID) || strings.ToUpper(c.ID) != c.ID {
			t.Errorf("class %+v: lookup %+v %v", c, got, ok)
		}
	}
	want := map[string]Category{ClassText: CategoryText, ClassStream: CategoryStream, ClassVariable: CategoryVariable,
		ClassFolder: CategoryFolder, ClassRelayServer: CategoryService, ClassQSMLocalService: CategoryService,
		ClassQSMCoordinator: CategoryService, ClassMOServer: CategoryService}
	for id, cat := range want {
		if c, ok := LookupClass(id); !ok || c.Category != cat {
			t.Errorf("class %s: %+v", id, c)
		}
	}
	if c, _ := LookupClass(ClassText); c.Requires != to|st {
		t.Errorf("text requires %s", c.Requires)
	}
	if _, ok := LookupClass("F01AA89B005A4B119702B6A076816160"); ok {
		t.Errorf("unknown class found")
	}
	if _, ok := DriverProvides("carrier-pigeon"); ok {
		t.Errorf("unknown driver has guarantees")
	}
}
