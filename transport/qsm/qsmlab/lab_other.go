//go:build !linux

package qsmlab

import "errors"

// ErrNeedRoot is returned by New where namespaces are not available.
var ErrNeedRoot = errors.New("qsmlab: network namespaces need Linux and root")

// Available reports why namespaces cannot be used here.
func Available() error { return ErrNeedRoot }
