package objects

import (
	"io"
	"strings"
)

// Metadata is a channel's channels/<ID>/metadata.xml:
//
//	<Metadata>
//	  <ID>00000000000000000000000000000001</ID>
//	  <Name>Text_1</Name>
//	  <Comment>This is a channel for a shared text note.</Comment>
//	  <MessageClass id="982130E40A294E3CAD5441841E87941E" />
//	  <CheckpointClass id="982130E40A294E3CAD5441841E87941E" />
//	</Metadata>
//
// MessageClass and CheckpointClass are class ids (usually the class of the
// objects that run over the channel).
type Metadata struct {
	ID, Name, Comment, MessageClass, CheckpointClass string
	// Line is the line of <Metadata> (0 when built in code).
	Line int
	// Extra keeps elements and comments the model does not know;
	// ExtraAttrs the unknown attributes of <Metadata>.
	Extra      []*Node
	ExtraAttrs []Attr
}

// DisplayName returns the channel's name, or its ID when it has none.
func (m *Metadata) DisplayName() string {
	if m.Name != "" {
		return m.Name
	}
	return m.ID
}

// ParseMetadata parses a channel metadata.xml. Errors are *ParseError
// naming file and line. The ID must be present; it is normally 32 hex
// digits, but (as the original allowed) a name is accepted too.
func ParseMetadata(file string, r io.Reader) (*Metadata, error) {
	root, prolog, textLines, err := parseTree(file, r)
	if err != nil {
		return nil, err
	}
	b := &builder{file: file, textLines: textLines}
	if localName(root.Name) != "Metadata" {
		return nil, &ParseError{File: file, Line: root.Line, Msg: "top-level element is <" + root.Name + ">, want <Metadata>"}
	}
	m := &Metadata{Line: root.Line}
	m.Extra = append(m.Extra, prolog...)
	m.ExtraAttrs = append(m.ExtraAttrs, root.Attrs...)
	seen := map[string]int{}
	for _, c := range root.Children {
		if c.Name == "" {
			m.Extra = append(m.Extra, c)
			continue
		}
		ln := localName(c.Name)
		var dst *string
		attr := false
		switch ln {
		case "ID":
			dst = &m.ID
		case "Name":
			dst = &m.Name
		case "Comment":
			dst = &m.Comment
		case "MessageClass":
			dst, attr = &m.MessageClass, true
		case "CheckpointClass":
			dst, attr = &m.CheckpointClass, true
		default:
			m.Extra = append(m.Extra, c)
			continue
		}
		if first, dup := seen[ln]; dup {
			b.problem(c.Line, "Metadata has more than one %s (first on line %d)", ln, first)
			m.Extra = append(m.Extra, c)
			continue
		}
		seen[ln] = c.Line
		if len(c.Children) > 0 {
			b.problem(c.Line, "%s has unexpected child elements (they are not kept)", ln)
		}
		for _, a := range c.Attrs {
			if !attr || a.Name != "id" {
				b.problem(c.Line, "%s has an unexpected attribute %s (it is not kept)", ln, a.Name)
			}
		}
		if attr {
			found := false
			for _, a := range c.Attrs {
				if a.Name == "id" {
					*dst, found = a.Value, true
				}
			}
			if !found {
				b.problem(c.Line, "%s has no id", ln)
			}
			continue
		}
		*dst = c.Text
		if ln == "ID" {
			*dst = strings.TrimSpace(c.Text)
		}
	}
	// Stray text goes last, after the comments of the prolog and the body,
	// which the writer puts inside <Metadata>.
	b.strayText(root, "Metadata", &m.Extra)
	if _, ok := seen["ID"]; !ok || m.ID == "" {
		b.problem(root.Line, "Metadata has no ID")
	}
	if len(b.probs) > 0 {
		return m, b.probs[0]
	}
	return m, nil
}

// Marshal writes the metadata.xml form.
func (m *Metadata) Marshal() ([]byte, error) {
	root := &Node{Name: "Metadata", Attrs: m.ExtraAttrs}
	root.Children = append(root.Children, &Node{Name: "ID", Text: m.ID})
	if m.Name != "" {
		root.Children = append(root.Children, &Node{Name: "Name", Text: m.Name})
	}
	if m.Comment != "" {
		root.Children = append(root.Children, &Node{Name: "Comment", Text: m.Comment})
	}
	if m.MessageClass != "" {
		root.Children = append(root.Children, &Node{Name: "MessageClass", Attrs: []Attr{{"id", m.MessageClass}}})
	}
	if m.CheckpointClass != "" {
		root.Children = append(root.Children, &Node{Name: "CheckpointClass", Attrs: []Attr{{"id", m.CheckpointClass}}})
	}
	root.Children = append(root.Children, m.Extra...)
	var w writer
	w.b.WriteString(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	w.node(root, 0)
	return w.b.Bytes(), nil
}
