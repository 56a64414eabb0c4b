package registry

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/liveobjects/liveobjects/objects"
)

func TestInitOpen(t *testing.T) {
	r, dir := openInit(t)
	if p := r.Problems(); len(p) != 0 {
		t.Fatalf("fresh root has problems: %v", p)
	}
	files, _ := InitFiles()
	if got := len(r.Objects()) + len(r.Channels()); got != len(files) {
		t.Errorf("%d objects+channels loaded, %d files written", got, len(files))
	}
	if r.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", r.Dir(), dir)
	}
	tests := []struct {
		path, class, channel, driver, address string
		history                               int
	}{
		{"examples/chat.liveobject", objects.ClassStream, "chat", "relay", DefaultRelayAddress, 100},
		{"examples/shared_text.liveobject", objects.ClassText, "Text_1", "relay", DefaultRelayAddress, 0},
		{"examples/temperature.liveobject", objects.ClassVariable, "temperature", "relay", DefaultRelayAddress, 0},
		{"examples/Team Room/Project Notes/meeting notes.liveobject", objects.ClassText, "Text_1", "relay", DefaultRelayAddress, 0},
		{"examples/shared_text_1.qsm.liveobject", objects.ClassText, "Text_QSM", "qsm", "", 0},
	}
	for _, tt := range tests {
		b, err := r.Binding(tt.path)
		if err != nil {
			t.Errorf("%s: %v", tt.path, err)
			continue
		}
		if b.Class.ID != tt.class || b.ChannelName != tt.channel || b.Driver != tt.driver || b.History != tt.history || b.DriverParams["address"] != tt.address {
			t.Errorf("%s: binding %+v", tt.path, b)
		}
		if !objects.IsChannelID(b.ChannelID) || len(b.Chain) < 3 || b.Path != tt.path {
			t.Errorf("%s: channel id %q chain %q", tt.path, b.ChannelID, b.Chain)
		}
	}
	b, _ := r.Binding("examples/shared_text_1.qsm.liveobject")
	if b.DriverParams["uplink_address"] != DefaultQSMUplink || b.DriverParams["qsm_application"] != "true" {
		t.Errorf("qsm params %v", b.DriverParams)
	}
	provides, _ := objects.DriverProvides(b.Driver)
	if err := b.Type.CheckDriver("shared_text_1.qsm", b.ChannelName, b.Driver, provides); err == nil ||
		err.Error() != `shared_text_1.qsm: needs total-order+state-transfer; channel "Text_QSM" over qsm provides fifo` {
		t.Errorf("qsm text check: %v", err)
	}

	// An unknown class is listed and shown, and binding it names the class.
	e, ok := r.Lookup("examples/whiteboard.liveobject")
	if !ok || e.Def == nil || e.Def.Kind != objects.KindComposite {
		t.Fatalf("whiteboard not listed: %+v", e)
	}
	b, err := r.Binding("examples/whiteboard.liveobject")
	if !errors.Is(err, objects.ErrUnknownClass) || !strings.Contains(err.Error(), "3B6D1C0E5A2F4E7D9C8B7A6F5E4D3C2B") || len(b.Chain) == 0 {
		t.Errorf("whiteboard binding: %v %+v", err, b)
	}
	// Services: relay on, the rest switched off with their definition in a comment.
	cc, ok := r.Lookup(RelayServiceFile)
	if !ok || cc.Def.Nil || objects.BaseID(cc.Def.ID) != objects.ClassRelayServer {
		t.Fatalf("relay service: %+v", cc)
	}
	if p, _ := cc.Def.Param("durable"); p == nil || p.Value.Kind != objects.ValueBoolean || p.Value.Text != "true" {
		t.Errorf("relay service durable: %+v", p)
	}
	if p, _ := cc.Def.Param("address"); p == nil || p.Value.Text != DefaultRelayAddress {
		t.Errorf("relay service address: %+v", p)
	}
	for _, f := range []string{QSMLocalServiceFile, QSMCoordinatorServiceFile, MOServiceFile} {
		e, ok := r.Lookup(f)
		if !ok || !e.Def.Nil || len(e.Def.Head) != 1 || !strings.Contains(e.Def.Head[0].Comment, "<Object") {
			t.Errorf("%s: %+v", f, e)
			continue
		}
		if _, err := r.Binding(f); !errors.Is(err, ErrSwitchedOff) {
			t.Errorf("%s: binding %v", f, err)
		}
		// Uncommenting gives a valid definition of a service class.
		body := e.Def.Head[0].Comment
		body = body[strings.Index(body, "<Object"):]
		o, err := objects.ParseObject(f, strings.NewReader("<Root xmlns:xsi=\"x\">"+body+"</Root>"))
		if err != nil {
			t.Errorf("%s: commented definition: %v", f, err)
		} else if c, ok := objects.LookupClass(o.ID); !ok || c.Category != objects.CategoryService {
			t.Errorf("%s: commented definition class %s", f, o.ID)
		}
	}
	for _, k := range []string{objects.KeyRelayServer, objects.KeyRelayClient, objects.KeyQSMClient, objects.KeyQSMLocalService, objects.KeyQSMCoordinator, strings.ToLower(objects.KeyMOServer)} {
		if e, ok := r.Key(k); !ok || e.Def == nil {
			t.Errorf("key %s missing", k)
		}
	}
	if _, ok := r.Key("00000000000000000000000000000000"); ok {
		t.Errorf("unknown key found")
	}
	// Lookup accepts absolute and OS paths.
	if _, ok := r.Lookup(filepath.Join(dir, "examples", "chat.liveobject")); !ok {
		t.Errorf("absolute lookup failed")
	}
	if _, ok := r.Lookup("./examples//chat.liveobject"); !ok {
		t.Errorf("unclean lookup failed")
	}
	if err := Init(dir); !errors.Is(err, ErrExists) {
		t.Errorf("Init on a used folder: %v", err)
	}
}

func TestSampleRoot(t *testing.T) {
	r, err := Open(filepath.Join("..", "testdata", "roots", "sample"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if p := r.Problems(); len(p) != 0 {
		t.Fatalf("sample root has problems: %v", p)
	}
	if _, ok := r.Lookup("services/.default.cc.liveobject"); !ok {
		t.Errorf("hidden file not loaded")
	}
	b, err := r.Binding("examples/shared_text.liveobject") // through an alias key
	if err != nil || b.Driver != "relay" || b.ChannelName != "Text_1" {
		t.Errorf("alias binding: %+v %v", b, err)
	}
	if !strings.Contains(strings.Join(b.Chain, "\n"), "A11A5000000000000000000000000001") {
		t.Errorf("chain does not show the alias: %q", b.Chain)
	}
	b, err = r.Binding("examples/shared text utf16.liveobject")
	if err != nil || b.Class.ID != objects.ClassText {
		t.Errorf("utf-16 binding: %+v %v", b, err)
	}
	b, err = r.Binding("examples/chat.liveobject") // versioned class id
	if err != nil || b.Class.ID != objects.ClassStream || b.History != 50 {
		t.Errorf("versioned binding: %+v %v", b, err)
	}
	b, err = r.Binding("examples/temperature.liveobject") // channel folder named by its name
	if err != nil || b.ChannelID != "5F2C9A1B7D3E4F60A1B2C3D4E5F60718" || b.ChannelName != "Team_Board" || b.Type.Security != "authenticated" {
		t.Errorf("named channel binding: %+v %v", b, err)
	}
	if md, ok := r.Channel("Team_Board"); !ok || md.ID != "5F2C9A1B7D3E4F60A1B2C3D4E5F60718" {
		t.Errorf("channel by name: %+v", md)
	}
	if md, ok := r.Channel("5f2c9a1b7d3e4f60a1b2c3d4e5f60718"); !ok || md.Name != "Team_Board" {
		t.Errorf("channel by lower-case id: %+v", md)
	}
	if _, err := r.Binding("examples/nope.liveobject"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file: %v", err)
	}
}

func TestBrokenRoot(t *testing.T) {
	r, err := Open(filepath.Join("..", "testdata", "roots", "broken"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	probs := r.Problems()
	files := map[string]bool{}
	for _, p := range probs {
		files[p.File] = true
		if p.Msg == "" {
			t.Errorf("empty problem %+v", p)
		}
	}
	for _, f := range []string{"examples/syntax.liveobject", "examples/chat.liveobject", "examples/dangling.liveobject",
		"examples/no_channel.liveobject", "examples/structure.liveobject", "examples/empty.liveobject",
		"registry/D0B1E000000000000000000000000001", "registry/E0E0E000000000000000000000000001",
		"channels/0000000000000000000000000000000B", "channels/00000000000000000000000000000009/metadata.xml"} {
		if !files[f] {
			t.Errorf("no problem reported for %s", f)
		}
	}
	// Every file is listed, broken or not.
	if _, ok := r.Lookup("examples/syntax.liveobject"); !ok {
		t.Errorf("broken file not listed")
	}
	if _, err := r.Resolve("examples/dangling.liveobject"); !errors.Is(err, ErrDangling) {
		t.Errorf("dangling: %v", err)
	}
	chain, err := r.Resolve("examples/cycle.liveobject")
	if !errors.Is(err, ErrCycle) || !strings.Contains(err.Error(), " -> ") {
		t.Errorf("cycle: %v", err)
	}
	if len(chain) < 2 {
		t.Errorf("cycle chain %q", chain)
	}
	var re *ResolveError
	if !errors.As(err, &re) || re.Line == 0 || !strings.HasPrefix(re.File, "registry/") {
		t.Errorf("cycle error has no place: %#v", re)
	}
	if _, err := r.Binding("examples/no_channel.liveobject"); !errors.Is(err, ErrNoChannel) {
		t.Errorf("no channel: %v", err)
	}
	if _, err := r.Binding("examples/not_a_client.liveobject"); !errors.Is(err, ErrNotClient) {
		t.Errorf("not a client: %v", err)
	}
	if _, err := r.Binding("examples/syntax.liveobject"); err == nil || !strings.HasPrefix(err.Error(), "examples/syntax.liveobject:4: ") {
		t.Errorf("syntax: %v", err)
	}
}

func TestCreateRemoveChannel(t *testing.T) {
	r, dir := openInit(t)
	ch, stop := r.Subscribe()
	defer stop()
	md, err := r.CreateChannel("news", "Daily news", "text")
	if err != nil {
		t.Fatal(err)
	}
	if !objects.IsChannelID(md.ID) || md.MessageClass != objects.ClassText || md.CheckpointClass != objects.ClassText {
		t.Errorf("created %+v", md)
	}
	data, err := os.ReadFile(filepath.Join(dir, ChannelsDir, md.ID, MetadataFile))
	if err != nil {
		t.Fatal(err)
	}
	back, err := objects.ParseMetadata("m", strings.NewReader(string(data)))
	if err != nil || back.Name != "news" || back.Comment != "Daily news" {
		t.Errorf("written metadata %+v %v", back, err)
	}
	if got, ok := r.Channel("news"); !ok || got.ID != md.ID {
		t.Errorf("new channel not in force")
	}
	if c := <-ch; c.Kind != Added || c.Channel != md.ID {
		t.Errorf("notification %+v", c)
	}
	if _, err := r.CreateChannel("news", "", ""); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := r.CreateChannel("a/b", "", ""); err == nil {
		t.Errorf("slash in name accepted")
	}
	if _, err := r.CreateChannel("x", "", "nonsense"); err == nil || !strings.Contains(err.Error(), "unknown class") {
		t.Errorf("bad class: %v", err)
	}
	md2, err := r.CreateChannel("", "", objects.ClassVariable)
	if err != nil || md2.MessageClass != objects.ClassVariable {
		t.Fatalf("unnamed channel: %+v %v", md2, err)
	}
	<-ch
	if err := r.RemoveChannel("news"); err != nil {
		t.Fatal(err)
	}
	if c := <-ch; c.Kind != Removed || c.Channel != md.ID {
		t.Errorf("notification %+v", c)
	}
	if _, ok := r.Channel("news"); ok {
		t.Errorf("removed channel still there")
	}
	if _, err := os.Stat(filepath.Join(dir, ChannelsDir, md.ID)); !os.IsNotExist(err) {
		t.Errorf("channel folder left: %v", err)
	}
	if err := r.RemoveChannel(strings.ToLower(md2.ID)); err != nil {
		t.Errorf("remove by id: %v", err)
	}
	if err := r.RemoveChannel("news"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove twice: %v", err)
	}
	r.Close()
	if _, err := r.CreateChannel("late", "", ""); !errors.Is(err, ErrClosed) {
		t.Errorf("create after close: %v", err)
	}
	for range ch { // drains what was queued, then ends: Close closed it
	}
}

func TestDuplicateChannels(t *testing.T) {
	r, dir := openInit(t)
	r.Close()
	md := objects.Metadata{ID: "ABCDEF00000000000000000000000001", Name: "chat", MessageClass: objects.ClassStream}
	data, _ := md.Marshal()
	writeFile(t, dir, "channels/ABCDEF00000000000000000000000001/metadata.xml", string(data))
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := Problem{File: "channels/ABCDEF00000000000000000000000001/metadata.xml",
		Msg: `channel name "chat" is also used by channels/00000000000000000000000000000002/`}
	if p := r.Problems(); len(p) != 1 || p[0] != want {
		t.Errorf("problems %v, want %v", p, want)
	}
}

func TestClassID(t *testing.T) {
	for in, want := range map[string]string{"": objects.ClassStream, "Text": objects.ClassText, "variable": objects.ClassVariable,
		"0`1:" + strings.ToLower(objects.ClassFolder) + "`2": objects.ClassFolder} {
		if got, err := ClassID(in); err != nil || got != want {
			t.Errorf("ClassID(%q) = %q, %v", in, got, err)
		}
	}
}

func TestSubscribeOverflow(t *testing.T) {
	r, _ := openInit(t)
	ch, stop := r.Subscribe()
	for i := 0; i < 3*subBuffer; i++ {
		r.notify(Change{Kind: Changed, Path: "p"}) // must never block
	}
	r.notify(Change{Kind: Added, Path: "last"})
	var got []Change
	for len(ch) > 0 {
		got = append(got, <-ch)
	}
	if len(got) > subBuffer || got[len(got)-1].Path != "last" {
		t.Fatalf("got %d changes, last %+v", len(got), got[len(got)-1])
	}
	resync := false
	for _, c := range got {
		resync = resync || c.Kind == Resync
	}
	if !resync {
		t.Errorf("no Resync after overflow")
	}
	stop()
	stop() // idempotent
	if _, ok := <-ch; ok {
		t.Errorf("channel open after stop")
	}
}

func TestProblemString(t *testing.T) {
	if s := (Problem{File: "a", Line: 3, Msg: "m"}).String(); s != "a:3: m" {
		t.Errorf("%q", s)
	}
	if s := (Problem{File: "a", Msg: "m"}).String(); s != "a: m" {
		t.Errorf("%q", s)
	}
	kinds := []ChangeKind{Added, Changed, Removed, ProblemFound, Resync, 0}
	var names []string
	for _, k := range kinds {
		names = append(names, k.String())
	}
	if !reflect.DeepEqual(names, []string{"added", "changed", "removed", "problem", "resync", "unknown"}) {
		t.Errorf("%q", names)
	}
}
