package qsm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig(map[string]string{
		"qsm": "true", "asm_application": "false", "qsm_controller": "false", "uplink_controller": "true",
		"uplink_address": "localhost", "uplink_port": "61000", "uplink_subnet": "", "subnet": "198.18.0.0/24",
		"port": "62000", "gms_address": "198.18.0.1:62001", "heartbeat_interval": "250", "missed_heartbeats": "3",
		"token_rate": "20", "partition_size": "5", "credits": "4096", "rate": "10000", "Multicast": "239.1.0.0/16",
		"uplink_local": "false",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.QSM || cfg.Application || cfg.UplinkPort != 61000 || cfg.Port != 62000 || cfg.HeartbeatInterval != 250*time.Millisecond ||
		cfg.FailureTimeout() != 750*time.Millisecond || cfg.Window != 4096 || cfg.Rate != 10000 || cfg.Multicast.String() != "239.1.0.0/16" || cfg.UplinkLocal {
		t.Fatalf("parsed %+v", cfg)
	}
	if cfg.UplinkAddr() != "localhost:61000" {
		t.Fatalf("uplink %s", cfg.UplinkAddr())
	}
	for _, bad := range []map[string]string{
		{"port": "70000"},
		{"port": "x"},
		{"qsm": "maybe"},
		{"heartbeat_interval": "soon"},
		{"multicast": "10.0.0.0/8"},
		{"nonsense": "1"},
		{"gms_address": "nocolon"},
		{"drop_rate": "1.5"},
		{"uplink_local": "sometimes"},
		{"max_groups": "0"},
		{"max_groups": "2000000"},
	} {
		_, err := ParseConfig(bad)
		if !errors.Is(err, ErrBadConfig) {
			t.Errorf("%v: got %v, want ErrBadConfig", bad, err)
		}
	}
	_, err = ParseConfig(map[string]string{"nonsense": "1"})
	if err == nil || !strings.Contains(err.Error(), "gms_address") {
		t.Errorf("unknown-setting error should list the known ones: %v", err)
	}
	if cfg, err := ParseConfig(map[string]string{"max_groups": "500"}); err != nil || cfg.MaxGroups != 500 {
		t.Errorf("max_groups=500: %v, %d", err, cfg.MaxGroups)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if !DefaultConfig().UplinkLocal {
		t.Fatal("the local uplink socket should be on by default")
	}
}

func TestProvides(t *testing.T) {
	var c Client
	g := c.Provides()
	if !g.Satisfies(transport.Reliable|transport.FIFO) || !g.Satisfies(transport.Membership) {
		t.Fatalf("QSM must provide reliable FIFO with membership, has %v", g)
	}
	if g.Satisfies(transport.TotalOrder) || g.Satisfies(transport.StateTransfer) {
		t.Fatalf("QSM must not claim total order or state transfer, has %v", g)
	}
	if m := g.Missing(transport.TotalOrder | transport.StateTransfer); m != transport.TotalOrder|transport.StateTransfer {
		t.Fatalf("missing = %v", m)
	}
}

func TestErrorCodes(t *testing.T) {
	for _, err := range []error{ErrMalformed, transport.ErrTooLarge, ErrVersion, transport.ErrClosed, transport.ErrNoChannel, ErrUnknownMember, transport.ErrDenied} {
		back := codeError(errorCode(err), "detail")
		if !errors.Is(back, err) {
			t.Errorf("%v -> code %d -> %v", err, errorCode(err), back)
		}
	}
}

// FuzzParseConfig: any settings give a Config that validates or an
// ErrBadConfig; nothing panics.
func FuzzParseConfig(f *testing.F) {
	f.Add("port", "62000", "heartbeat_interval", "250ms", "multicast", "239.1.0.0/16")
	f.Add("partition_size", "-1", "token_rate", "0", "credits", "99999999999999999999")
	f.Add("gms_address", "[::1]:1", "subnet", "198.18.0.0/33", "drop_rate", "NaN")
	f.Add("uplink_port", "0x10", "rate", "1e9", "missed_heartbeats", " 3 ")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		params := map[string]string{k1: v1, k2: v2, k3: v3}
		cfg, err := ParseConfig(params)
		if err != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("%v: error %v is not ErrBadConfig", params, err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%v: accepted, but the result does not validate: %v", params, err)
		}
	})
}
