package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// relayFlags are the flags of the relay command.
type relayFlags struct {
	root, listen, data        string
	memory, noCreate, noSync  bool
	secretEnv, tokensFile     string
	tlsCert, tlsKey, clientCA string
	maxEvent, memberQueue     int
	checkpointTimeout         time.Duration
	compactEvents             int
	maxLogMiB                 int64
}

var relayOpts relayFlags

func init() {
	register(&command{
		Name:    "relay",
		Args:    "",
		Summary: "run the relay server (default communication: total order, state transfer, durable log)",
		Help: `Runs the relay that carries every channel of the default communication
substrate: it orders each channel's events, transfers state to joiners and,
unless --memory is given, keeps each channel's latest checkpoint and log on
disk so a restart (even kill -9) loses no acknowledged event.

Channels come from ROOT/channels/*/metadata.xml (with --root) and from
clients that create them (unless --no-create). The log lives in
ROOT/.state/relay (the same place the daemon's relay service uses), or in
--data DIR.

The relay prints "listening ADDR" on stdout once it accepts clients, and
runs until interrupted (SIGINT/SIGTERM).

Authorization: a shared secret (--secret-env names the environment variable
holding it; default LIVEOBJECTS_RELAY_SECRET) and/or per-channel tokens
(--tokens FILE, one "CHANNEL TOKEN" per line, # for comments, each channel
once). TLS with --tls-cert and
--tls-key; --client-ca requires client certificates signed by that CA.

Examples:
  liveobjects relay --root ./myroot --listen 127.0.0.1:60000
  liveobjects relay --memory --listen :60000`,
		Flags: func(fs *flag.FlagSet) {
			o := &relayOpts
			fs.StringVar(&o.root, "root", "", "root folder whose channels/ folder lists the channels")
			fs.StringVar(&o.listen, "listen", "127.0.0.1:60000", "TCP address to listen on")
			fs.StringVar(&o.data, "data", "", "directory of the durable log (default ROOT/.state/relay)")
			fs.BoolVar(&o.memory, "memory", false, "keep everything in memory (a restart loses all channels' state)")
			fs.BoolVar(&o.noCreate, "no-create", false, "do not let clients create channels")
			fs.BoolVar(&o.noSync, "nosync", false, "do not fsync the log (survives process crashes, not machine crashes)")
			fs.StringVar(&o.secretEnv, "secret-env", "LIVEOBJECTS_RELAY_SECRET", "environment variable holding the shared secret (unset or empty: none)")
			fs.StringVar(&o.tokensFile, "tokens", "", "file of per-channel tokens, one \"CHANNEL TOKEN\" per line")
			fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate file (PEM)")
			fs.StringVar(&o.tlsKey, "tls-key", "", "TLS key file (PEM)")
			fs.StringVar(&o.clientCA, "client-ca", "", "CA file (PEM) that client certificates must chain to")
			fs.IntVar(&o.maxEvent, "max-event", relay.DefaultMaxEvent, "largest event in bytes")
			fs.IntVar(&o.memberQueue, "member-queue", 65536, "events a member may lag before it is caught up by state transfer")
			fs.DurationVar(&o.checkpointTimeout, "checkpoint-timeout", 5*time.Second, "how long a member has to answer a checkpoint request")
			fs.IntVar(&o.compactEvents, "compact-events", 10000, "ask for a checkpoint (and compact the log) after this many events")
			fs.Int64Var(&o.maxLogMiB, "max-log", 256, "MiB of log kept per channel when no member can give a checkpoint")
		},
		Run: runRelay,
	})
}

func runRelay(ctx context.Context, args []string) error {
	o := relayOpts
	if len(args) != 0 {
		return usagef("unexpected arguments %q", args)
	}
	cfg := relay.ServerConfig{
		Listen:            o.listen,
		AllowCreate:       !o.noCreate,
		MaxEvent:          o.maxEvent,
		MemberQueue:       o.memberQueue,
		CheckpointTimeout: o.checkpointTimeout,
		CompactEvents:     o.compactEvents,
		MaxLogBytes:       o.maxLogMiB << 20,
		NoSync:            o.noSync,
		Logger:            slog.Default(),
	}
	if o.secretEnv != "" {
		cfg.Secret = os.Getenv(o.secretEnv)
	}
	var reg *registry.Root
	if o.root != "" {
		if st, err := os.Stat(o.root); err != nil || !st.IsDir() {
			return usagef("--root %s is not a folder", o.root)
		}
		var err error
		if reg, err = registry.Open(o.root); err != nil {
			return fmt.Errorf("open root %s: %w", o.root, err)
		}
		defer reg.Close()
		cfg.Channels = rootChannels(reg)
	}
	switch {
	case o.memory && o.data != "":
		return usagef("--memory and --data exclude each other")
	case o.memory:
	case o.data != "":
		cfg.DataDir = o.data
	case o.root != "":
		cfg.DataDir = stateDir(o.root, "relay")
	default:
		return usagef("give --root ROOT or --data DIR for the durable log, or --memory")
	}
	if o.tokensFile != "" {
		toks, err := readTokens(o.tokensFile)
		if err != nil {
			return err
		}
		cfg.Tokens = toks
	}
	if o.tlsCert != "" || o.tlsKey != "" || o.clientCA != "" {
		tc, err := serverTLS(o.tlsCert, o.tlsKey, o.clientCA)
		if err != nil {
			return err
		}
		cfg.TLS = tc
	}
	s, err := relay.NewServer(cfg)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		s.Close()
		return err
	}
	fmt.Printf("listening %s\n", s.Addr())
	os.Stdout.Sync()
	stopWatch := func() {}
	if reg != nil {
		// Channels added to ROOT/channels/ while running are created at
		// the relay. Removing a folder does not delete a channel's
		// history: that takes a client's RemoveChannel (rm in the mount).
		// Subscribed before watching starts, and the root's channels added
		// once more after: nothing added since the configuration was read
		// is missed.
		changes, stop := reg.Subscribe()
		if err := reg.Watch(ctx); err != nil {
			stop()
			slog.Warn("relay: not watching the root for new channels", "root", o.root, "err", err)
		} else {
			done := make(chan struct{})
			go func() {
				defer close(done)
				addRootChannels(s, reg)
				for ch := range changes {
					if ch.Kind == registry.Added || ch.Kind == registry.Changed || ch.Kind == registry.Resync {
						addRootChannels(s, reg)
					}
				}
			}()
			stopWatch = func() { stop(); <-done }
		}
	}
	<-ctx.Done()
	stopWatch()
	slog.Info("relay: shutting down")
	if err := s.Close(); err != nil {
		return err
	}
	return nil
}

// readTokens reads a tokens file (see parseTokens).
func readTokens(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	defer f.Close()
	return parseTokens(file, f)
}

// parseTokens reads "CHANNEL TOKEN" lines; blank lines and lines starting
// with # are skipped. A channel named twice is an error, not a silent
// override: one of the two lines is a mistake. Errors name the file and
// line.
func parseTokens(file string, r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	line := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want \"CHANNEL TOKEN\", got %d fields", file, n, len(fields))
		}
		if first, ok := line[fields[0]]; ok {
			return nil, fmt.Errorf("%s:%d: channel %q already has a token (line %d); keep one of the two lines", file, n, fields[0], first)
		}
		out[fields[0]], line[fields[0]] = fields[1], n
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("a line is longer than 64 KiB: %w", err)
		}
		return nil, fmt.Errorf("read tokens %s: %w", file, err)
	}
	return out, nil
}

func serverTLS(cert, key, clientCA string) (*tls.Config, error) {
	if cert == "" || key == "" {
		return nil, usagef("TLS needs both --tls-cert and --tls-key")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pool, err := loadPool(clientCA)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificates in " + file)
	}
	return pool, nil
}

// addRootChannels creates at the relay the root's channels it lacks.
func addRootChannels(s *relay.Server, reg *registry.Root) {
	for _, info := range rootChannels(reg) {
		err := s.CreateChannel(info)
		switch {
		case err == nil:
			slog.Info("relay: channel added from the root", "channel", info.Name, "id", info.ID)
		case errors.Is(err, relay.ErrExists):
		default:
			slog.Warn("relay: cannot add channel from the root", "channel", info.Name, "err", err)
		}
	}
}
