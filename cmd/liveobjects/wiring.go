package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/objects/micro"
	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/services"
	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/qsm"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// This file wires the drivers and services into the generic layers
// (channels.Hub, services.Host): the only place that knows them all.

// driverDialer returns how channels.Hub connects to a substrate. host,
// when not nil, hosts the root's services in this process: a QSM client
// whose uplink is a local service of host's attaches to it
// (qsm.Service.Attach) rather than dialing its own process.
func driverDialer(host *services.Host) channels.DialFunc {
	return func(ctx context.Context, driver string, params map[string]string) (transport.Driver, error) {
		return dialDriver(ctx, host, driver, params)
	}
}

func dialDriver(ctx context.Context, host *services.Host, driver string, params map[string]string) (transport.Driver, error) {
	switch driver {
	case "relay":
		secret := os.Getenv("LIVEOBJECTS_RELAY_SECRET")
		c, err := relay.Dial(ctx, relay.ClientConfig{
			Addr:   normalizeAddr(params["address"], params["mainport"]),
			Secret: secret,
		})
		if errors.Is(err, transport.ErrDenied) {
			// The mount's user sees this in user.liveobject.error.
			if secret == "" {
				return nil, fmt.Errorf("%w (no secret was sent: start the mount with the relay's shared secret in $LIVEOBJECTS_RELAY_SECRET)", err)
			}
			return nil, fmt.Errorf("%w (the secret in the mount's $LIVEOBJECTS_RELAY_SECRET is not the relay's)", err)
		}
		return c, err
	case "qsm":
		cfg, err := qsm.ParseConfig(params)
		if err != nil {
			return nil, err
		}
		if s := hostedQSM(host, qsmUplink(cfg)); s != nil {
			if c, err := s.Attach(ctx); err == nil {
				return c, nil
			}
			// Closed since it was looked up (switched off or
			// restarting): dial as any client would.
		}
		c, err := qsm.Dial(ctx, qsmUplink(cfg))
		if err != nil {
			return nil, fmt.Errorf("%w; %s", err, qsmServiceHint(host))
		}
		return c, nil
	}
	return nil, fmt.Errorf("no communication driver named %q in this build (relay, qsm)", driver)
}

// qsmServiceHint says what to do when no QSM local service answers: the
// root's own failed to start (and why), or it is to be switched on.
func qsmServiceHint(host *services.Host) string {
	if s, ok := failedService(host, objects.ClassQSMLocalService); ok {
		return fmt.Sprintf("the root's QSM local service (%s) failed: %s; once that is fixed, it starts within seconds", s.Path, s.Err)
	}
	return "or switch it on in the root: liveobjects service on ROOT quicksilver_localservice"
}

// hostedQSM returns host's running QSM local service that serves clients
// at uplink, or nil.
func hostedQSM(host *services.Host, uplink string) *qsm.Service {
	if host == nil {
		return nil
	}
	want, err := netip.ParseAddrPort(uplink)
	if err != nil {
		return nil
	}
	for _, svc := range host.Running(objects.ClassQSMLocalService) {
		s, ok := svc.(*qsm.Service)
		if !ok {
			continue
		}
		if got, err := netip.ParseAddrPort(s.Addr()); err == nil && servesUplink(got, want, isLocalAddr) {
			return s
		}
	}
	return nil
}

// servesUplink reports whether a service listening at listen serves the
// clients that dial want: the same address, or a listener on every
// address (0.0.0.0) when want is an address of this machine (local).
func servesUplink(listen, want netip.AddrPort, local func(netip.Addr) bool) bool {
	if listen.Port() != want.Port() {
		return false
	}
	if listen.Addr() == want.Addr() {
		return true
	}
	return listen.Addr().IsUnspecified() && local(want.Addr().Unmap())
}

// isLocalAddr reports whether a is an address of this machine: loopback,
// unspecified, or an address of one of its network interfaces.
func isLocalAddr(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if pfx, err := netip.ParsePrefix(ia.String()); err == nil && pfx.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

// relayOf returns the relay client of the hub for params, for channel
// management.
func relayOf(ctx context.Context, hub *channels.Hub, params map[string]string) (*relay.Client, error) {
	d, err := hub.Driver(ctx, channels.Spec{Driver: "relay", Params: params})
	if err != nil {
		return nil, err
	}
	c, ok := d.(*relay.Client)
	if !ok {
		return nil, errors.New("the channels folder is not carried by a relay")
	}
	return c, nil
}

func channelInfo(md objects.Metadata) transport.ChannelInfo {
	return transport.ChannelInfo{ID: md.ID, Name: md.Name, Comment: md.Comment, Members: -1}
}

// createRemoteChannel tells the relay about a channel made from the shell.
func createRemoteChannel(ctx context.Context, hub *channels.Hub, params map[string]string, md objects.Metadata) error {
	c, err := relayOf(ctx, hub, params)
	if err != nil {
		return err
	}
	err = c.CreateChannel(ctx, channelInfo(md))
	if err != nil && errors.Is(err, relay.ErrExists) {
		return nil
	}
	return err
}

// removeRemoteChannel tells the relay a channel was removed from the shell.
func removeRemoteChannel(ctx context.Context, hub *channels.Hub, params map[string]string, md objects.Metadata) error {
	c, err := relayOf(ctx, hub, params)
	if err != nil {
		return err
	}
	key := md.ID
	if key == "" {
		key = md.Name
	}
	err = c.RemoveChannel(ctx, key)
	if err != nil && errors.Is(err, transport.ErrNoChannel) {
		return nil
	}
	return err
}

// rootChannels lists a root's channels for a relay server.
func rootChannels(reg *registry.Root) []transport.ChannelInfo {
	var out []transport.ChannelInfo
	for _, md := range reg.Channels() {
		out = append(out, channelInfo(md))
	}
	return out
}

// stateDir is where services hosted for a root keep their data.
func stateDir(root, name string) string {
	return filepath.Join(root, ".state", name)
}

func boolParam(p map[string]string, k string, def bool) bool {
	v, ok := p[k]
	if !ok || v == "" {
		return def
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return def
	}
	return b
}

// serviceFactories maps service classes to their makers, for a daemon
// hosting the services of root. listen, if set, overrides the relay's
// address.
func serviceFactories(reg *registry.Root, listen string) map[string]services.Factory {
	root := reg.Dir()
	return map[string]services.Factory{
		objects.ClassRelayServer: func(def services.Definition) (services.Service, error) {
			addr := normalizeAddr(def.Params["address"], def.Params["mainport"])
			if listen != "" {
				addr = listen
			}
			cfg := relay.ServerConfig{
				Listen:      addr,
				Channels:    rootChannels(reg),
				AllowCreate: true,
				Secret:      os.Getenv("LIVEOBJECTS_RELAY_SECRET"),
			}
			if boolParam(def.Params, "durable", true) {
				cfg.DataDir = stateDir(root, "relay")
			}
			s, err := relay.NewServer(cfg)
			if err != nil {
				return nil, err
			}
			return relayService{s}, nil
		},
		objects.ClassQSMLocalService: func(def services.Definition) (services.Service, error) {
			cfg, err := qsm.ParseConfig(def.Params)
			if err != nil {
				return nil, err
			}
			return qsm.NewService(cfg)
		},
		objects.ClassQSMCoordinator: func(def services.Definition) (services.Service, error) {
			cfg, err := qsm.ParseConfig(def.Params)
			if err != nil {
				return nil, err
			}
			return qsm.NewCoordinator(cfg)
		},
		objects.ClassMOServer: func(def services.Definition) (services.Service, error) {
			cfg := micro.ServerConfig{Listen: def.Params["address"], DataDir: stateDir(root, "mo")}
			if v, err := strconv.ParseInt(def.Params["cache"], 10, 64); err == nil && v > 0 {
				cfg.CacheBytes = v << 20 // the "cache" setting is in MiB
			}
			s, err := micro.NewServer(cfg)
			if err != nil {
				return nil, err
			}
			return moService{s}, nil
		},
	}
}

// relayService adapts *relay.Server to services.Service.
type relayService struct{ *relay.Server }

func (r relayService) Addr() string { return addrString(r.Server.Addr()) }

// moService adapts *micro.Server to services.Service.
type moService struct{ *micro.Server }

func (m moService) Addr() string { return addrString(m.Server.Addr()) }

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// mirrorChannels keeps the root's channels/ in line with the relay's
// channels, so that mounts of different roots sharing one relay (on other
// machines) see the same channels: channels created or removed elsewhere
// appear and disappear here. It runs until ctx ends, reconnecting as the
// relay client does.
func mirrorChannels(ctx context.Context, hub *channels.Hub, params map[string]string, reg *registry.Root) {
	log := slog.Default().With("component", "channels")
	for delay := 100 * time.Millisecond; ctx.Err() == nil; delay = min(2*delay, 5*time.Second) {
		if c, err := relayOf(ctx, hub, params); err != nil {
			log.Debug("relay not reachable yet; channels are not mirrored", "err", err)
		} else {
			followChannels(ctx, c, reg, log)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// followChannels mirrors the relay's channels into reg until ctx ends or
// the client's notifications stop.
func followChannels(ctx context.Context, c *relay.Client, reg *registry.Root, log *slog.Logger) {
	changes, stop := c.Watch()
	defer stop()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	infos, err := c.Channels(lctx)
	cancel()
	if err == nil {
		for _, in := range infos {
			addMirrored(reg, in, log)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ch, ok := <-changes:
			if !ok {
				return
			}
			switch ch.Kind {
			case relay.ChannelAdded:
				addMirrored(reg, ch.Info, log)
			case relay.ChannelRemoved:
				if !objects.IsChannelID(ch.Info.ID) {
					continue
				}
				if _, ok := reg.Channel(ch.Info.ID); ok {
					if err := reg.RemoveChannel(ch.Info.ID); err != nil {
						log.Warn("remove channel removed on the relay", "id", ch.Info.ID, "err", err)
					}
				}
			}
		}
	}
}

// addMirrored writes a relay channel into the root unless it is there.
func addMirrored(reg *registry.Root, in transport.ChannelInfo, log *slog.Logger) {
	if !objects.IsChannelID(in.ID) {
		return // a channel known by name only has no folder of its own
	}
	if _, ok := reg.Channel(in.ID); ok {
		return
	}
	err := reg.AddChannel(objects.Metadata{ID: in.ID, Name: in.Name, Comment: in.Comment})
	if err != nil && !errors.Is(err, registry.ErrExists) {
		log.Warn("add channel created on the relay", "id", in.ID, "name", in.Name, "err", err)
	}
}
