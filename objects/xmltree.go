package objects

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxFileSize caps the size of a definition or metadata file. Larger files
// are refused before they are parsed.
const MaxFileSize = 8 << 20

// maxDepth caps element nesting, so that a hostile file cannot exhaust
// the stack of the recursive model builder.
const maxDepth = 256

// ParseError is a problem in a file, with the line it is on (0 when the
// problem concerns the whole file). It prints as "file:line: msg".
type ParseError struct {
	File string
	Line int
	Msg  string
}

// Error prints "file:line: msg" (or "file: msg" without a line).
func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Is makes errors.Is(err, ErrSyntax) and friends work for parse errors.
func (e *ParseError) Is(target error) bool { return target == ErrInvalid }

// ErrInvalid matches (with errors.Is) every *ParseError: the file is not
// a valid definition.
var ErrInvalid = errors.New("objects: invalid definition")

// readAllCapped reads r up to MaxFileSize bytes.
func readAllCapped(file string, r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, &ParseError{File: file, Msg: fmt.Sprintf("read: %v", err)}
	}
	if len(data) > MaxFileSize {
		return nil, &ParseError{File: file, Msg: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}
	}
	return data, nil
}

// toUTF8 converts UTF-16 input (with a byte order mark, as the original
// platform wrote its files, or starting with '<' without one) to UTF-8
// and drops a UTF-8 byte order mark.
func toUTF8(file string, data []byte) ([]byte, error) {
	le, wide := false, false
	switch {
	case bytes.HasPrefix(data, []byte{0xEF, 0xBB, 0xBF}):
		return data[3:], nil
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}), bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		le, wide = data[0] == 0xFF, true
		data = data[2:]
	case bytes.HasPrefix(data, []byte{'<', 0}): // UTF-16 without a byte order mark
		le, wide = true, true
	case bytes.HasPrefix(data, []byte{0, '<'}):
		wide = true
	}
	if wide {
		if len(data)%2 != 0 {
			return nil, &ParseError{File: file, Msg: "UTF-16 file has an odd number of bytes"}
		}
		u := make([]uint16, len(data)/2)
		for i := range u {
			if le {
				u[i] = uint16(data[2*i]) | uint16(data[2*i+1])<<8
			} else {
				u[i] = uint16(data[2*i])<<8 | uint16(data[2*i+1])
			}
		}
		var b bytes.Buffer
		for _, r := range utf16.Decode(u) {
			b.WriteRune(r)
		}
		return b.Bytes(), nil
	}
	return data, nil
}

// parseTree reads one XML document into a Node tree with line numbers.
// Whitespace-only text in elements that have children is dropped (it is
// indentation); other text in such elements is kept trimmed; the text of
// leaf elements is kept exactly.
//
// textLines records, for elements with non-whitespace text, the line on
// which that text starts (for messages about stray text).
func parseTree(file string, r io.Reader) (root *Node, prolog []*Node, textLines map[*Node]int, err error) {
	data, err := readAllCapped(file, r)
	if err != nil {
		return nil, nil, nil, err
	}
	data, err = toUTF8(file, data)
	if err != nil {
		return nil, nil, nil, err
	}
	if !utf8.Valid(data) {
		return nil, nil, nil, &ParseError{File: file, Line: 1, Msg: "file is not valid UTF-8 (or UTF-16 with a byte order mark)"}
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	d.CharsetReader = func(label string, input io.Reader) (io.Reader, error) {
		switch strings.ToLower(label) {
		case "utf-8", "utf8", "utf-16", "utf16", "unicode", "us-ascii", "ascii":
			return input, nil // already converted to UTF-8 above
		}
		return nil, fmt.Errorf("unsupported encoding %q (want utf-8 or utf-16)", label)
	}
	type frame struct {
		n    *Node
		text strings.Builder
	}
	textLines = map[*Node]int{}
	var stack []*frame
	closeText := func(f *frame) {
		t := f.text.String()
		if len(f.n.Children) > 0 {
			t = strings.TrimSpace(t)
		}
		f.n.Text = t
	}
	for {
		line, _ := d.InputPos()
		tok, terr := d.RawToken()
		if terr == io.EOF {
			break
		}
		if terr != nil {
			var se *xml.SyntaxError
			if errors.As(terr, &se) {
				return nil, nil, nil, &ParseError{File: file, Line: se.Line, Msg: "XML syntax: " + se.Msg}
			}
			l, _ := d.InputPos()
			return nil, nil, nil, &ParseError{File: file, Line: l, Msg: "XML: " + terr.Error()}
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if root != nil && len(stack) == 0 {
				return nil, nil, nil, &ParseError{File: file, Line: line, Msg: fmt.Sprintf("second top-level element <%s> after </%s>", qname(t.Name), root.Name)}
			}
			if len(stack) >= maxDepth {
				return nil, nil, nil, &ParseError{File: file, Line: line, Msg: fmt.Sprintf("elements nested deeper than %d", maxDepth)}
			}
			n := &Node{Name: qname(t.Name), Line: line}
			for _, a := range t.Attr {
				n.Attrs = append(n.Attrs, Attr{Name: qname(a.Name), Value: a.Value})
			}
			if dup := duplicateAttr(n.Attrs); dup != "" {
				return nil, nil, nil, &ParseError{File: file, Line: line, Msg: fmt.Sprintf("<%s> has the attribute %s more than once; keep one of them (an XML element names each attribute once)", n.Name, dup)}
			}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1].n
				p.Children = append(p.Children, n)
			}
			stack = append(stack, &frame{n: n})
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, nil, nil, &ParseError{File: file, Line: line, Msg: fmt.Sprintf("unexpected </%s>", qname(t.Name))}
			}
			top := stack[len(stack)-1]
			if qname(t.Name) != top.n.Name {
				return nil, nil, nil, &ParseError{File: file, Line: line, Msg: fmt.Sprintf("</%s> closes <%s> opened on line %d", qname(t.Name), top.n.Name, top.n.Line)}
			}
			closeText(top)
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if lead := len(t) - len(bytes.TrimLeft(t, " \t\r\n")); lead < len(t) {
				line += bytes.Count(t[:lead], []byte("\n"))
				if len(stack) == 0 {
					return nil, nil, nil, &ParseError{File: file, Line: line, Msg: "text outside the top-level element"}
				}
				if _, ok := textLines[stack[len(stack)-1].n]; !ok {
					textLines[stack[len(stack)-1].n] = line
				}
			}
			if len(stack) == 0 {
				continue
			}
			stack[len(stack)-1].text.Write(t)
		case xml.Comment:
			c := &Node{Comment: string(t), Line: line}
			if len(stack) == 0 {
				prolog = append(prolog, c)
				continue
			}
			p := stack[len(stack)-1].n
			p.Children = append(p.Children, c)
		case xml.ProcInst, xml.Directive:
			// The XML declaration and DOCTYPEs carry nothing the model needs.
		}
	}
	if len(stack) > 0 {
		top := stack[len(stack)-1].n
		l, _ := d.InputPos()
		return nil, nil, nil, &ParseError{File: file, Line: l, Msg: fmt.Sprintf("file ends inside <%s> opened on line %d", top.Name, top.Line)}
	}
	if root == nil {
		return nil, nil, nil, &ParseError{File: file, Line: 1, Msg: "no XML element in file"}
	}
	return root, prolog, textLines, nil
}

// duplicateAttr returns the first attribute name that attrs hold twice,
// or "". The decoder does not check it, and the model would keep one of
// the values and write the other back after it, changing which one wins.
func duplicateAttr(attrs []Attr) string {
	if len(attrs) <= 16 {
		for i := 1; i < len(attrs); i++ {
			for j := range i {
				if attrs[i].Name == attrs[j].Name {
					return attrs[i].Name
				}
			}
		}
		return ""
	}
	seen := make(map[string]bool, len(attrs))
	for _, a := range attrs {
		if seen[a.Name] {
			return a.Name
		}
		seen[a.Name] = true
	}
	return ""
}

func qname(n xml.Name) string {
	if n.Space != "" {
		return n.Space + ":" + n.Local
	}
	return n.Local
}

// localName returns the part of an element name after its prefix.
func localName(s string) string {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// writer writes Node trees with two-space indentation.
type writer struct {
	b bytes.Buffer
}

func (w *writer) indent(depth int) {
	for i := 0; i < depth; i++ {
		w.b.WriteString("  ")
	}
}

func (w *writer) node(n *Node, depth int) {
	w.indent(depth)
	if n.Name == "" {
		if n.Comment != "" || n.Text == "" {
			w.b.WriteString("<!--")
			w.b.WriteString(n.Comment)
			w.b.WriteString("-->\n")
		} else {
			escapeText(&w.b, n.Text)
			w.b.WriteByte('\n')
		}
		return
	}
	w.b.WriteByte('<')
	w.b.WriteString(n.Name)
	for _, a := range n.Attrs {
		w.b.WriteByte(' ')
		w.b.WriteString(a.Name)
		w.b.WriteString(`="`)
		escapeAttr(&w.b, a.Value)
		w.b.WriteByte('"')
	}
	switch {
	case len(n.Children) == 0 && n.Text == "":
		w.b.WriteString(" />\n")
	case len(n.Children) == 0:
		w.b.WriteByte('>')
		escapeText(&w.b, n.Text)
		w.b.WriteString("</" + n.Name + ">\n")
	default:
		w.b.WriteString(">\n")
		if n.Text != "" {
			w.indent(depth + 1)
			escapeText(&w.b, n.Text)
			w.b.WriteByte('\n')
		}
		for _, c := range n.Children {
			w.node(c, depth+1)
		}
		w.indent(depth)
		w.b.WriteString("</" + n.Name + ">\n")
	}
}

func escapeText(b *bytes.Buffer, s string) {
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '\r':
			b.WriteString("&#xD;")
		default:
			b.WriteRune(r)
		}
	}
}

func escapeAttr(b *bytes.Buffer, s string) {
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&quot;")
		case '\r':
			b.WriteString("&#xD;")
		case '\n':
			b.WriteString("&#xA;")
		case '\t':
			b.WriteString("&#x9;")
		default:
			b.WriteRune(r)
		}
	}
}
