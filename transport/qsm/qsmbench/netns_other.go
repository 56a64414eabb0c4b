//go:build !linux

package qsmbench

import (
	"context"

	"github.com/liveobjects/liveobjects/transport/qsm/qsmlab"
)

// RunNetns needs Linux network namespaces.
func RunNetns(ctx context.Context, o Options) (*Result, error) { return nil, qsmlab.ErrNeedRoot }
