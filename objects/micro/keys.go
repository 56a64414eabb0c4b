package micro

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Keys is the closed shared section of a group of micro objects: the
// AES-256-GCM key that seals payloads and the Ed25519 key that signs
// objects and cluster entries. Keys stay with the application (the Lib);
// servers only ever see the public half of Writer, inside objects.
// Share Keys with the members of the group through a secure channel
// (MarshalText) together with the tokens.
type Keys struct {
	// Payload seals and opens payloads (AES-256-GCM).
	Payload [32]byte
	// Writer signs objects and cluster entries (Ed25519).
	Writer ed25519.PrivateKey
}

// NewKeys draws fresh keys from crypto/rand.
func NewKeys() (Keys, error) {
	var k Keys
	if _, err := rand.Read(k.Payload[:]); err != nil {
		return k, fmt.Errorf("micro: new keys: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return k, fmt.Errorf("micro: new keys: %w", err)
	}
	k.Writer = priv
	return k, nil
}

// Public returns the writer's public key.
func (k Keys) Public() [32]byte {
	var p [32]byte
	copy(p[:], k.Writer.Public().(ed25519.PublicKey))
	return p
}

const keysPrefix = "mo-keys-v1:"

// MarshalText encodes the keys as "mo-keys-v1:" and base64url of the
// payload key and the writer seed.
func (k Keys) MarshalText() ([]byte, error) {
	if len(k.Writer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: no writer key", ErrBadKeys)
	}
	b := append(append([]byte{}, k.Payload[:]...), k.Writer.Seed()...)
	return []byte(keysPrefix + base64.RawURLEncoding.EncodeToString(b)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Keys) UnmarshalText(b []byte) error {
	p, err := ParseKeys(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParseKeys parses the text form written by MarshalText.
func ParseKeys(s string) (Keys, error) {
	var k Keys
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, keysPrefix) {
		return k, fmt.Errorf("%w: text does not start with %q", ErrBadKeys, keysPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(s[len(keysPrefix):])
	if err != nil || len(b) != 32+ed25519.SeedSize {
		return k, fmt.Errorf("%w: bad key material", ErrBadKeys)
	}
	copy(k.Payload[:], b[:32])
	k.Writer = ed25519.NewKeyFromSeed(b[32:])
	return k, nil
}

// LoadOrCreateKeys reads keys from path, creating the file (mode 0600)
// with fresh keys when it does not exist.
func LoadOrCreateKeys(path string) (Keys, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := ParseKeys(string(b))
		if err != nil {
			return k, fmt.Errorf("micro: key file %s: %w", path, err)
		}
		return k, nil
	}
	if !os.IsNotExist(err) {
		return Keys{}, fmt.Errorf("micro: key file: %w", err)
	}
	k, err := NewKeys()
	if err != nil {
		return k, err
	}
	txt, _ := k.MarshalText()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return k, fmt.Errorf("micro: key file: %w", err)
	}
	if err := os.WriteFile(path, append(txt, '\n'), 0o600); err != nil {
		return k, fmt.Errorf("micro: key file: %w", err)
	}
	return k, nil
}

// DefaultKeyFile is where applications keep their keys by default:
// $LIVEOBJECTS_MO_KEYS, else CONFIG/liveobjects/mo.keys (os.UserConfigDir).
func DefaultKeyFile() string {
	if k := os.Getenv("LIVEOBJECTS_MO_KEYS"); k != "" {
		return k
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "liveobjects", "mo.keys")
	}
	return "mo.keys"
}

// DefaultDataDir is the default data directory of an MO server:
// $LIVEOBJECTS_MO_DATA, else $XDG_DATA_HOME/liveobjects/mo, else
// ~/.local/share/liveobjects/mo.
func DefaultDataDir() string {
	if d := os.Getenv("LIVEOBJECTS_MO_DATA"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "liveobjects", "mo")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "liveobjects", "mo")
	}
	return "mo-data"
}

// payloadAAD binds a sealed payload to the object's header fields.
func payloadAAD(o *Object) []byte {
	aad := []byte("liveobjects/mo payload v1\x00")
	pre := headerPrefix(o)
	aad = append(aad, pre[:]...)
	aad = append(aad, o.Flags)
	aad = append(aad, o.Writer[:]...)
	return append(aad, o.Salt[:]...)
}

func (k Keys) gcm() (cipher.AEAD, error) {
	blk, err := aes.NewCipher(k.Payload[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

func (k Keys) seal(o *Object, plain []byte) error {
	g, err := k.gcm()
	if err != nil {
		return fmt.Errorf("micro: seal: %w", err)
	}
	nonce := make([]byte, g.NonceSize(), g.NonceSize()+len(plain)+g.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("micro: seal: %w", err)
	}
	o.Payload = g.Seal(nonce, nonce, plain, payloadAAD(o))
	return nil
}

func (k Keys) open(o *Object) ([]byte, error) {
	g, err := k.gcm()
	if err != nil {
		return nil, fmt.Errorf("micro: open: %w", err)
	}
	if len(o.Payload) < g.NonceSize()+g.Overhead() {
		return nil, fmt.Errorf("%w: sealed payload too short", ErrBadKeys)
	}
	ns := g.NonceSize()
	p, err := g.Open(nil, o.Payload[:ns], o.Payload[ns:], payloadAAD(o))
	if err != nil {
		return nil, fmt.Errorf("%w: payload does not open with these keys", ErrBadKeys)
	}
	return p, nil
}

// derive returns a subkey of the payload key for purpose.
func (k Keys) derive(purpose string) []byte {
	m := hmac.New(sha256.New, k.Payload[:])
	m.Write([]byte("liveobjects/mo " + purpose))
	return m.Sum(nil)
}

// sealedID returns the opaque id of member in a sealed cluster.
func (k Keys) sealedID(member Token) Token {
	var id Token
	copy(id[0:8], member[0:8])
	id[8] = sealedIDVersion
	m := hmac.New(sha512.New, k.derive("cluster id v1"))
	m.Write(member[:])
	copy(id[9:], m.Sum(nil))
	return id
}

func (k Keys) boxAEAD() (cipher.AEAD, error) {
	blk, err := aes.NewCipher(k.derive("cluster box v1"))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// sealBox seals member for parent's cluster. The nonce is taken from the
// id (itself a keyed hash of the member), so equal members seal equally
// and every copy of the cluster holds the same bytes.
func (k Keys) sealBox(parent, id, member Token) []byte {
	g, err := k.boxAEAD()
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	return g.Seal(nil, id[9:9+g.NonceSize()], member[:], append(parent[:], id[:]...))
}

func (k Keys) openBox(parent Token, e Entry) (Token, error) {
	var t Token
	g, err := k.boxAEAD()
	if err != nil {
		return t, err
	}
	p, err := g.Open(nil, e.Token[9:9+g.NonceSize()], e.Box, append(parent[:], e.Token[:]...))
	if err != nil || len(p) != TokenSize {
		return t, fmt.Errorf("%w: sealed cluster member does not open", ErrBadKeys)
	}
	copy(t[:], p)
	if k.sealedID(t) != e.Token {
		return t, fmt.Errorf("%w: sealed member does not match its id", ErrBadEntry)
	}
	return t, nil
}
