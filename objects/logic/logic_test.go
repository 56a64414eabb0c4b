package logic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func deliver(o *Object, seq uint64, s string) {
	o.Deliver(transport.Event{Seq: seq, Data: []byte(s)})
}

func readAll(t *testing.T, r *Reader) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	for r.Ready() {
		n, err := r.Read(context.Background(), buf)
		if err != nil {
			break
		}
		out = append(out, buf[:n]...)
	}
	return string(out)
}

func TestStreamHistoryAndReaders(t *testing.T) {
	o := New(Config{Kind: Stream, History: 2})
	deliver(o, 1, "a")
	deliver(o, 2, "b\n")
	deliver(o, 3, "c")
	r := o.NewReader()
	if got := readAll(t, r); got != "b\nc\n" {
		t.Fatalf("snapshot = %q, want the last two events", got)
	}
	deliver(o, 4, "d")
	if got := readAll(t, r); got != "d\n" {
		t.Fatalf("after event = %q", got)
	}
	cp, err := o.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	o2 := New(Config{Kind: Stream, History: 2})
	if err := o2.Restore(cp, o.Seq()); err != nil {
		t.Fatal(err)
	}
	if got, want := string(o2.Snapshot()), "c\nd\n"; got != want {
		t.Fatalf("restored snapshot = %q, want %q", got, want)
	}
	if o2.Seq() != 4 {
		t.Fatalf("restored seq = %d", o2.Seq())
	}
}

func TestPureStreamBlocksUntilEvent(t *testing.T) {
	o := New(Config{Kind: Stream})
	deliver(o, 1, "before")
	r := o.NewReader()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 100)
		n, err := r.Read(context.Background(), buf)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	select {
	case s := <-got:
		t.Fatalf("read returned %q before any event", s)
	case <-time.After(50 * time.Millisecond):
	}
	deliver(o, 2, "x")
	select {
	case s := <-got:
		if s != "x\n" {
			t.Fatalf("read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not wake on an event")
	}
}

func TestReadContextAndClose(t *testing.T) {
	o := New(Config{Kind: Stream})
	r := o.NewReader()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.Read(ctx, make([]byte, 10)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read with ended context: %v", err)
	}
	deliver(o, 1, "last")
	o.Close()
	if got := readAll(t, r); got != "last\n" {
		t.Fatalf("queued data lost at close: %q", got)
	}
	if _, err := r.Read(context.Background(), make([]byte, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

// TestFail: a failed object's readers get what is queued, then the
// failure, and so does a reader made afterwards; Close changes nothing.
func TestFail(t *testing.T) {
	o := New(Config{Kind: Stream, History: 10})
	r := o.NewReader()
	deliver(o, 1, "queued")
	lost := errors.New("link lost")
	o.Fail(lost)
	o.Close()
	if got := readAll(t, r); got != "queued\n" {
		t.Fatalf("queued data lost at failure: %q", got)
	}
	if _, err := r.Read(context.Background(), make([]byte, 10)); !errors.Is(err, lost) {
		t.Fatalf("read after the failure: %v", err)
	}
	late := o.NewReader()
	if got := readAll(t, late); got != "queued\n" {
		t.Fatalf("a later reader's history: %q", got)
	}
	if _, err := late.Read(context.Background(), make([]byte, 10)); !errors.Is(err, lost) {
		t.Fatalf("a later reader's read: %v", err)
	}
}

func TestReadWholeEvents(t *testing.T) {
	o := New(Config{Kind: Stream})
	r := o.NewReader()
	deliver(o, 1, "aaaa")
	deliver(o, 2, "bbbb")
	buf := make([]byte, 7)
	n, _ := r.Read(context.Background(), buf)
	if string(buf[:n]) != "aaaa\n" {
		t.Fatalf("first read %q: want one whole event", buf[:n])
	}
	big := New(Config{Kind: Stream})
	rb := big.NewReader()
	deliver(big, 1, "0123456789")
	n, _ = rb.Read(context.Background(), make([]byte, 4))
	if n != 4 {
		t.Fatalf("an event larger than the buffer must be split, got %d", n)
	}
	if got := readAll(t, rb); got != "456789\n" {
		t.Fatalf("rest %q", got)
	}
}

func TestOverrun(t *testing.T) {
	o := New(Config{Kind: Stream, ReaderLimit: 10})
	r := o.NewReader()
	deliver(o, 1, "12345")
	deliver(o, 2, "67890")
	got := readAll(t, r)
	if got != "12345\n" {
		t.Fatalf("got %q", got)
	}
	if _, err := r.Read(context.Background(), make([]byte, 10)); !errors.Is(err, ErrOverrun) {
		t.Fatalf("want ErrOverrun, got %v", err)
	}
	v := New(Config{Kind: Variable, ReaderLimit: 10})
	rv := v.NewReader()
	deliver(v, 1, "12345")
	deliver(v, 2, "67890")
	if got := readAll(t, rv); got != "67890\n" {
		t.Fatalf("variable reader over its bound must see the newest value, got %q", got)
	}
}

func TestVariableAndTextState(t *testing.T) {
	for _, k := range []Kind{Variable, Text} {
		o := New(Config{Kind: k})
		if o.Snapshot() != nil {
			t.Fatalf("%v: empty object has a snapshot", k)
		}
		deliver(o, 1, "one")
		deliver(o, 2, "two\nlines\n")
		cp, _ := o.Checkpoint()
		o2 := New(Config{Kind: k})
		r := o2.NewReader()
		if err := o2.Restore(cp, 2); err != nil {
			t.Fatal(err)
		}
		if got := string(o2.Snapshot()); got != "two\nlines\n" {
			t.Fatalf("%v: restored %q", k, got)
		}
		_ = r
		if err := New(Config{Kind: Stream, History: 1}).Restore(cp, 2); err == nil {
			t.Fatalf("a stream accepted a %v checkpoint", k)
		}
	}
}

type recPub struct {
	mu     sync.Mutex
	events []string
	fail   error
}

func (p *recPub) PublishBatch(ctx context.Context, evs [][]byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	for _, e := range evs {
		p.events = append(p.events, string(e))
	}
	return nil
}

func TestStreamWriterLines(t *testing.T) {
	p := &recPub{}
	w := New(Config{Kind: Stream}).NewWriter(p, 0)
	ctx := context.Background()
	for _, s := range []string{"he", "llo\nwor", "ld\n\nx", "y"} {
		if n, err := w.Write(ctx, []byte(s)); err != nil || n != len(s) {
			t.Fatalf("write %q: %d %v", s, n, err)
		}
	}
	if fmt.Sprint(p.events) != "[hello world ]" {
		t.Fatalf("events %q", p.events)
	}
	if err := w.Flush(ctx); err != nil || len(p.events) != 3 {
		t.Fatalf("flush must not publish a partial line: %v %q", err, p.events)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if p.events[3] != "xy" {
		t.Fatalf("partial line at close: %q", p.events)
	}
	p.fail = errors.New("relay down")
	w2 := New(Config{Kind: Stream}).NewWriter(p, 0)
	if _, err := w2.Write(ctx, []byte("a\n")); err == nil {
		t.Fatal("write succeeded while publishing failed")
	}
}

func TestValueWriter(t *testing.T) {
	p := &recPub{}
	w := New(Config{Kind: Variable}).NewWriter(p, 0)
	ctx := context.Background()
	w.Write(ctx, []byte("4"))
	w.Write(ctx, []byte("2\n"))
	if len(p.events) != 0 {
		t.Fatal("a variable published before close")
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.events) != "[42]" {
		t.Fatalf("events %q", p.events)
	}
	if err := w.Close(ctx); err != nil || len(p.events) != 1 {
		t.Fatal("a second close published again")
	}
	tw := New(Config{Kind: Text}).NewWriter(p, 0)
	tw.Write(ctx, []byte("a\nb\n"))
	tw.Flush(ctx)
	if p.events[1] != "a\nb\n" {
		t.Fatalf("text must keep its newlines: %q", p.events[1])
	}
}

// writeSteps feeds writes to w and checks each result: n is what the
// write must return, fail whether it must fail with ErrTooLarge.
type writeStep struct {
	data string
	n    int
	fail bool
}

func writeSteps(t *testing.T, w *Writer, steps []writeStep) {
	t.Helper()
	for i, s := range steps {
		n, err := w.Write(context.Background(), []byte(s.data))
		if n != s.n || (err != nil) != s.fail || (err != nil && !errors.Is(err, transport.ErrTooLarge)) {
			t.Fatalf("step %d: write %q: %d, %v; want %d, failing %v with ErrTooLarge", i, s.data, n, err, s.n, s.fail)
		}
	}
}

// TestStreamWriterLimit: a line over the driver's limit is refused whole,
// the rest of it up to its newline is dropped, the lines after it are
// published; a repetition of refused bytes (a short write answered by
// writing the rest again) is refused too, a shorter write that merely
// starts like them is not.
func TestStreamWriterLimit(t *testing.T) {
	cases := []struct {
		name  string
		steps []writeStep
		want  string
	}{
		{"exactly the limit", []writeStep{{"abcd\n", 5, false}}, "[abcd]"},
		{"over the limit across writes", []writeStep{
			{"ab", 2, false}, {"cde", 0, true}, {"fg", 0, true}, {"\n", 1, false}, {"next\n", 5, false},
		}, "[next]"},
		{"the refused write ends the line", []writeStep{
			{"ab", 2, false}, {"cde\n", 0, true}, {"next\n", 5, false},
		}, "[next]"},
		{"repetition of refused bytes", []writeStep{
			{"abc", 3, false}, {"defgh", 0, true}, {"defghij", 0, true}, {"k\nnext\n", 7, false},
		}, "[next]"},
		{"repetition that reaches the newline", []writeStep{
			{"abc", 3, false}, {"defgh", 0, true}, {"defgh\nlost\n", 0, true}, {"next\n", 5, false},
		}, "[next]"},
		{"whole lines, then a long one", []writeStep{
			{"a\nb\nccccccc\nd\n", 4, true}, {"ccccccc\nd\n", 0, true}, {"d\n", 2, false},
		}, "[a b d]"},
		{"the end of a refused line, then a long one", []writeStep{
			{"aaaaaaa", 0, true}, {"aa\nbbbbbbb", 3, true}, {"bbbbbbb", 0, true}, {"\nc\n", 3, false},
		}, "[c]"},
		{"empty lines pass", []writeStep{{"\n\nx\n", 4, false}}, "[  x]"},
		{"a shorter write that starts like the refused bytes", []writeStep{
			{"xxxxxxx\n", 0, true}, {"xx", 2, false}, {"\n", 1, false},
		}, "[xx]"},
		{"a shorter write that starts like the refused end of a line", []writeStep{
			{"abc", 3, false}, {"de\n", 0, true}, {"d", 1, false}, {"\n", 1, false},
		}, "[d]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &recPub{}
			w := New(Config{Kind: Stream}).NewWriter(p, 4)
			if w.Max() != 4 {
				t.Fatalf("limit %d, want the driver's 4", w.Max())
			}
			writeSteps(t, w, c.steps)
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(p.events); got != c.want {
				t.Fatalf("published %q, want %s", p.events, c.want)
			}
		})
	}
	// Close drops what is left of a refused line; Truncate forgets it.
	p := &recPub{}
	w := New(Config{Kind: Stream}).NewWriter(p, 4)
	writeSteps(t, w, []writeStep{{"abcdefg", 0, true}})
	w.Truncate()
	writeSteps(t, w, []writeStep{{"x\n", 2, false}, {"abcdefg", 0, true}})
	w.Close(context.Background())
	if fmt.Sprint(p.events) != "[x]" {
		t.Fatalf("published %q", p.events)
	}
	// A failed publish in the Write that ends a refused line: the end of
	// the line comes again and is dropped again.
	p.fail = errors.New("relay down")
	w = New(Config{Kind: Stream}).NewWriter(p, 4)
	writeSteps(t, w, []writeStep{{"abcdefg", 0, true}})
	if n, err := w.Write(context.Background(), []byte("g\nyy\n")); n != 0 || err == nil {
		t.Fatalf("write while publishing fails: %d %v", n, err)
	}
	p.fail = nil
	writeSteps(t, w, []writeStep{{"g\nyy\n", 5, false}})
	w.Close(context.Background())
	if fmt.Sprint(p.events) != "[x yy]" {
		t.Fatalf("published %q", p.events)
	}
	// Without a driver limit, Config.MaxValue bounds a line.
	if w := New(Config{Kind: Stream, MaxValue: 8}).NewWriter(p, 0); w.Max() != 8 {
		t.Fatalf("limit %d without a driver limit, want MaxValue", w.Max())
	}
}

// TestStreamWriterPublishFails: a Write whose publish fails takes none
// of its bytes and leaves the pending partial line as it was, so that
// writing the same bytes again makes the same lines.
func TestStreamWriterPublishFails(t *testing.T) {
	cases := []struct {
		name    string
		max     int
		before  string // written (and taken) first
		retried string // fails once, then is written again
		n       int    // what the successful retry returns
		want    string
	}{
		{"a partial line after the lines", 0, "", "a\nb", 3, "[a b]"},
		{"a pending line before", 0, "x", "y\nz", 3, "[xy z]"},
		{"a pending line, whole lines, then a long one", 4, "x", "y\nzzzzzzz", 2, "[xy]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			p := &recPub{}
			w := New(Config{Kind: Stream}).NewWriter(p, c.max)
			if c.before != "" {
				writeSteps(t, w, []writeStep{{c.before, len(c.before), false}})
			}
			p.fail = errors.New("relay down")
			if n, err := w.Write(ctx, []byte(c.retried)); n != 0 || !errors.Is(err, p.fail) {
				t.Fatalf("write while publishing fails: %d %v", n, err)
			}
			p.fail = nil
			n, err := w.Write(ctx, []byte(c.retried))
			if n != c.n || (n < len(c.retried)) != errors.Is(err, transport.ErrTooLarge) {
				t.Fatalf("the same write again: %d %v, want %d", n, err, c.n)
			}
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(p.events); got != c.want {
				t.Fatalf("published %q, want %s", p.events, c.want)
			}
		})
	}
}

// TestValueWriterLimit: a variable's or text's value over the limit is
// refused until the next value begins; nothing of it is published.
func TestValueWriterLimit(t *testing.T) {
	ctx := context.Background()
	p := &recPub{}
	w := New(Config{Kind: Variable}).NewWriter(p, 4)
	writeSteps(t, w, []writeStep{{"12", 2, false}, {"345", 0, true}, {"5", 0, true}})
	if err := w.Flush(ctx); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("flush of a refused value: %v, want ErrTooLarge", err)
	}
	// The next value; a variable's trailing newlines do not count.
	writeSteps(t, w, []writeStep{{"1234", 4, false}, {"\n", 1, false}})
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.events) != "[1234]" {
		t.Fatalf("published %q", p.events)
	}
	tw := New(Config{Kind: Text}).NewWriter(p, 4)
	writeSteps(t, tw, []writeStep{{"abcd", 4, false}, {"\n", 0, true}})
	tw.Truncate()
	writeSteps(t, tw, []writeStep{{"ab\n", 3, false}})
	if err := tw.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.events) != "[1234 ab\n]" {
		t.Fatalf("published %q", p.events)
	}
}

func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add(encodeList([]entry{{1, []byte("a")}, {2, nil}, {5, []byte("ccc")}}))
	f.Add(encodeValue([]byte("v")))
	f.Add([]byte{tagList, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		if items, err := decodeList(b); err == nil {
			if !bytes.Equal(encodeList(items), b) {
				// Non-canonical varints may decode; re-encoding must
				// still decode to the same items.
				again, err := decodeList(encodeList(items))
				if err != nil || len(again) != len(items) {
					t.Fatalf("round trip failed: %v", err)
				}
			}
		}
		if v, err := decodeValue(b); err == nil && !bytes.Equal(encodeValue(v), b) {
			t.Fatal("value round trip")
		}
	})
}

// TestCatchUpReplaysOrEnds: a member that fell behind is restored from a
// checkpoint; its stream readers get the events they missed from the
// history, or are ended when the history does not reach back.
func TestCatchUpReplaysOrEnds(t *testing.T) {
	src := New(Config{Kind: Stream, History: 5})
	for i := uint64(1); i <= 8; i++ {
		deliver(src, i, fmt.Sprint("e", i))
	}
	cp, _ := src.Checkpoint() // holds e4..e8

	behind := New(Config{Kind: Stream, History: 5})
	for i := uint64(1); i <= 5; i++ {
		deliver(behind, i, fmt.Sprint("e", i))
	}
	r := behind.NewReader()
	readAll(t, r) // the snapshot
	if err := behind.Restore(cp, 8); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); got != "e6\ne7\ne8\n" {
		t.Fatalf("catch-up replayed %q, want the three missed events", got)
	}

	far := New(Config{Kind: Stream, History: 5})
	deliver(far, 1, "e1")
	rf := far.NewReader()
	readAll(t, rf)
	if err := far.Restore(cp, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := rf.Read(context.Background(), make([]byte, 100)); !errors.Is(err, ErrOverrun) {
		t.Fatalf("a reader with an unrecoverable gap: %v, want ErrOverrun", err)
	}
}

// TestDeliverBatchIsDeliverEach: a run of events in one DeliverBatch call
// leaves every kind of object, its checkpoint and its readers as the same
// events one by one do.
func TestDeliverBatchIsDeliverEach(t *testing.T) {
	for _, kind := range []Kind{Stream, Variable, Text} {
		t.Run(fmt.Sprint(kind), func(t *testing.T) {
			each, batch := New(Config{Kind: kind, History: 3}), New(Config{Kind: kind, History: 3})
			re, rb := each.NewReader(), batch.NewReader()
			var evs []transport.Event
			for i := 1; i <= 7; i++ {
				ev := transport.Event{Seq: uint64(i), Data: []byte(fmt.Sprintf("e%d", i))}
				each.Deliver(ev)
				evs = append(evs, ev)
			}
			before := batch.ModTime()
			batch.DeliverBatch(evs[:2])
			batch.DeliverBatch(nil)
			batch.DeliverBatch(evs[2:])
			if got, want := readAll(t, rb), readAll(t, re); got != want || got == "" {
				t.Fatalf("reader after the batches got %q; one by one: %q", got, want)
			}
			if batch.Seq() != 7 || batch.Seq() != each.Seq() {
				t.Fatalf("seq %d after the batches, %d one by one", batch.Seq(), each.Seq())
			}
			cb, _ := batch.Checkpoint()
			ce, _ := each.Checkpoint()
			if !bytes.Equal(cb, ce) {
				t.Fatalf("checkpoint after the batches %q; one by one %q", cb, ce)
			}
			if after := batch.ModTime(); after.Before(before) {
				t.Fatalf("mtime went back: %v before, %v after", before, after)
			}
		})
	}
}
