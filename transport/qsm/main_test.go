package qsm

import (
	"log/slog"
	"os"
	"testing"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
)

func TestMain(m *testing.M) {
	if os.Getenv("LIVEOBJECTS_QSM_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	}
	os.Exit(clibin.Run(m))
}
