package objects

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Attribute ids.
const (
	// AttrName is the id of the display-name attribute.
	AttrName = "9F4C608A9A6D44FFAD8A2FDC662E185B"
	// AttrComment is the id of the comment attribute.
	AttrComment = "07EC27D89CBD410DADE60463E4D46985"
)

// Registry keys: the folders registry/<KEY>/ of a root. The first five are
// the keys of the original distribution.
const (
	// KeyRelayServer holds the relay server object (communication_s).
	KeyRelayServer = "5356357BBA5244009D3094BEBBB3A8B4"
	// KeyRelayClient holds the relay client folder (communication_c): the
	// folder of channels carried by the relay. Its "address" parameter is
	// the relay's host:port.
	KeyRelayClient = "011E83FA6A9F426993BB8EF26FF7D7B8"
	// KeyQSMClient holds the in-process QSM client (quicksilver_c), whose
	// element "Qsm" is the folder of QSM channels.
	KeyQSMClient = "010BA5DB9C7F48B0A242A0AD2EF73C54"
	// KeyQSMLocalService holds the QSM local system service (quicksilver_s).
	KeyQSMLocalService = "571A2D935613476B9E82D16E089EA596"
	// KeyQSMCoordinator holds the QSM coordinator (quicksilver_g).
	KeyQSMCoordinator = "BD0D4E2D3C23407380B3092343E2176F"
	// KeyMOServer holds the micro-object server (mo_s).
	KeyMOServer = "187FBDC2C597B9D270AA0C48F0A8782D"
)

// RegistryID is the id of the registry itself as a dictionary object: a
// From naming it (or a From with no From of its own) looks its id up in
// registry/.
const RegistryID = "608016D5CCC2FA255099DC735C73A495"

// QSMFolderElement is the element of the QSM client object that is the
// folder of QSM channels.
const QSMFolderElement = "Qsm"

// IsHexID reports whether s is 32 hexadecimal digits.
func IsHexID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// IsChannelID reports whether s is a channel ID: 32 hexadecimal digits.
func IsChannelID(s string) bool { return IsHexID(s) }

// NewChannelID returns a fresh random channel ID (32 uppercase hex digits).
func NewChannelID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("objects: crypto/rand: " + err.Error()) // never fails on Linux
	}
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// VersionedID is an id in the form namespace`nsver:id`ver. Each part but
// ID is optional: "ID", "ID`3", "NS:ID", "NS`1:ID`0".
type VersionedID struct {
	Namespace        string
	NamespaceVersion uint64
	HasNSVersion     bool
	ID               string
	Version          uint64
	HasVersion       bool
}

// ParseVersionedID parses an id that may carry a namespace and versions.
func ParseVersionedID(s string) (VersionedID, error) {
	var v VersionedID
	rest := s
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		ns := rest[:i]
		rest = rest[i+1:]
		name, ver, has, err := splitVersion(ns)
		if err != nil {
			return v, fmt.Errorf("id %q: namespace: %w", s, err)
		}
		if name == "" {
			return v, fmt.Errorf("id %q: empty namespace before ':'", s)
		}
		v.Namespace, v.NamespaceVersion, v.HasNSVersion = name, ver, has
	}
	name, ver, has, err := splitVersion(rest)
	if err != nil {
		return v, fmt.Errorf("id %q: %w", s, err)
	}
	if name == "" {
		return v, fmt.Errorf("id %q: empty id", s)
	}
	if strings.ContainsAny(name, ":`") {
		return v, fmt.Errorf("id %q: unexpected ':' or '`'", s)
	}
	v.ID, v.Version, v.HasVersion = name, ver, has
	return v, nil
}

func splitVersion(s string) (name string, ver uint64, has bool, err error) {
	i := strings.IndexByte(s, '`')
	if i < 0 {
		return s, 0, false, nil
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return "", 0, false, fmt.Errorf("version %q is not a number", s[i+1:])
	}
	return s[:i], n, true, nil
}

// String writes the id back in namespace`ver:id`ver form.
func (v VersionedID) String() string {
	var b strings.Builder
	if v.Namespace != "" {
		b.WriteString(v.Namespace)
		if v.HasNSVersion {
			b.WriteString("`" + strconv.FormatUint(v.NamespaceVersion, 10))
		}
		b.WriteByte(':')
	}
	b.WriteString(v.ID)
	if v.HasVersion {
		b.WriteString("`" + strconv.FormatUint(v.Version, 10))
	}
	return b.String()
}

// BaseID returns the id part of a possibly versioned id, upper-cased when
// it is 32 hex digits; ids that do not parse are returned unchanged.
func BaseID(s string) string {
	v, err := ParseVersionedID(s)
	if err != nil {
		return s
	}
	if IsHexID(v.ID) {
		return strings.ToUpper(v.ID)
	}
	return v.ID
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
