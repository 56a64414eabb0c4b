package services

import "time"

// SetStartLimits shortens how long a host waits for a service's Start and,
// after a timeout, for Start to return once its context has ended. It
// returns a function that restores the limits.
func SetStartLimits(timeout, stopWait time.Duration) (restore func()) {
	oldTimeout, oldStopWait := startTimeout, startStopWait
	startTimeout, startStopWait = timeout, stopWait
	return func() { startTimeout, startStopWait = oldTimeout, oldStopWait }
}

// SetCloseWait shortens how long a host's Close waits for the services
// whose Start outlasted its context to be stopped. It returns a function
// that restores the limit.
func SetCloseWait(d time.Duration) (restore func()) {
	old := closeWait
	closeWait = d
	return func() { closeWait = old }
}
