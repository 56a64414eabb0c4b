package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func dialErr(addr string, mod func(*ClientConfig)) error {
	cfg := ClientConfig{Addr: addr, Logger: testLogger()}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err == nil {
		c.Close()
	}
	return err
}

func TestSecretAndTokens(t *testing.T) {
	s := startServer(t, ServerConfig{Secret: "s3cret", Tokens: map[string]string{"t": "tok"},
		Channels: []transport.ChannelInfo{{Name: "t"}, {Name: "other"}}})
	addr := s.Addr().String()
	if err := dialErr(addr, func(c *ClientConfig) { c.Secret = "wrong" }); !errors.Is(err, transport.ErrDenied) {
		t.Fatalf("wrong secret: %v", err)
	}
	// With the secret: everything.
	admin := dialClient(t, addr, func(c *ClientConfig) { c.Secret = "s3cret" })
	am, err := admin.Join(ctxT(t), "other", &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	// Without the secret but with the channel's token: that channel only.
	tc := dialClient(t, addr, func(c *ClientConfig) { c.Tokens = map[string]string{"t": "tok"} })
	if _, err := tc.Join(ctxT(t), "t", &logHandler{}); err != nil {
		t.Fatalf("join with token: %v", err)
	}
	_, err = tc.Join(ctxT(t), "other", &logHandler{})
	if !errors.Is(err, transport.ErrDenied) {
		t.Fatalf("join without token: %v", err)
	}
	var re *Error
	if !errors.As(err, &re) || re.Code != CodeDenied {
		t.Fatalf("error carries no code: %v", err)
	}
	bad := dialClient(t, addr, func(c *ClientConfig) { c.Tokens = map[string]string{"t": "nope"} })
	if _, err := bad.Join(ctxT(t), "t", &logHandler{}); !errors.Is(err, transport.ErrDenied) {
		t.Fatalf("wrong token: %v", err)
	}
	if err := tc.CreateChannel(ctxT(t), transport.ChannelInfo{Name: "new"}); !errors.Is(err, transport.ErrDenied) {
		t.Fatalf("create without secret: %v", err)
	}
	// The relay kept serving the others.
	if _, err := am.Publish(ctxT(t), []byte("still here")); err != nil {
		t.Fatal(err)
	}
}

// TestTokensWithoutSecret: a relay with channel tokens and no secret still
// guards those channels (joining and removing them), and leaves the others
// open.
func TestTokensWithoutSecret(t *testing.T) {
	s := startServer(t, ServerConfig{Tokens: map[string]string{"t": "tok"}, AllowCreate: true,
		Channels: []transport.ChannelInfo{{Name: "t"}, {Name: "open"}}})
	addr := s.Addr().String()
	anon := dialClient(t, addr)
	if _, err := anon.Join(ctxT(t), "t", &logHandler{}); !errors.Is(err, transport.ErrDenied) || !strings.Contains(err.Error(), "needs a token") {
		t.Fatalf("join of a token channel without its token: %v", err)
	}
	if err := anon.RemoveChannel(ctxT(t), "t"); !errors.Is(err, transport.ErrDenied) || !strings.Contains(err.Error(), "has a token") {
		t.Fatalf("remove of a token channel without the secret: %v", err)
	}
	if _, err := anon.Join(ctxT(t), "open", &logHandler{}); err != nil {
		t.Fatalf("join of an open channel: %v", err)
	}
	bad := dialClient(t, addr, func(c *ClientConfig) { c.Tokens = map[string]string{"t": "nope"} })
	if _, err := bad.Join(ctxT(t), "t", &logHandler{}); !errors.Is(err, transport.ErrDenied) || !strings.Contains(err.Error(), "wrong token") {
		t.Fatalf("join with a wrong token: %v", err)
	}
	good := dialClient(t, addr, func(c *ClientConfig) { c.Tokens = map[string]string{"t": "tok"} })
	m, err := good.Join(ctxT(t), "t", &logHandler{})
	if err != nil {
		t.Fatalf("join with the token: %v", err)
	}
	if _, err := m.Publish(ctxT(t), []byte("guarded")); err != nil {
		t.Fatal(err)
	}
	if err := anon.RemoveChannel(ctxT(t), "open"); err != nil {
		t.Fatalf("remove of an open channel on a relay that allows creation: %v", err)
	}
}

func TestNoSecretOnlyTokensDenied(t *testing.T) {
	s := startServer(t, ServerConfig{Secret: "x"})
	if err := dialErr(s.Addr().String(), nil); !errors.Is(err, transport.ErrDenied) {
		t.Fatalf("no secret: %v", err)
	}
}

// testPKI makes a CA, a server certificate for 127.0.0.1 and a client
// certificate.
func testPKI(t *testing.T) (pool *x509.CertPool, server, client tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	mk := func(serial int64, usage x509.ExtKeyUsage) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "relay test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return pool, mk(2, x509.ExtKeyUsageServerAuth), mk(3, x509.ExtKeyUsageClientAuth)
}

func TestTLS(t *testing.T) {
	pool, scert, ccert := testPKI(t)
	s := startServer(t, ServerConfig{AllowCreate: true, TLS: &tls.Config{
		Certificates: []tls.Certificate{scert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}})
	addr := s.Addr().String()
	c := dialClient(t, addr, func(c *ClientConfig) {
		c.TLS = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{ccert}}
	})
	h := &logHandler{}
	m, err := c.Join(ctxT(t), "secure", h)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := m.Publish(ctxT(t), []byte("x")); err != nil || seq != 1 {
		t.Fatalf("publish over TLS: %d %v", seq, err)
	}
	// No client certificate, or no TLS at all: refused; the relay goes on.
	if err := dialErr(addr, func(c *ClientConfig) { c.TLS = &tls.Config{RootCAs: pool} }); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	if err := dialErr(addr, nil); err == nil {
		t.Fatal("a plain TCP client was accepted by a TLS relay")
	}
	if _, err := m.Publish(ctxT(t), []byte("y")); err != nil {
		t.Fatal(err)
	}
}
