// Package clibin builds the liveobjects command for tests that run it as
// a process of their own: once per test binary, on first use, into a
// temporary folder that Run removes when the tests end.
//
// A test package that uses it calls Run from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(clibin.Run(m)) }
//
// and Path from its tests. Path fails a test of a package whose TestMain
// does not use Run, since nothing would then remove the binary.
//
// # Concurrency
//
// Path and Build may be called from any number of goroutines at once: the
// first call builds, the others wait for it and get the same result. Run
// removes the folder after m.Run has returned, when no test runs any more.
package clibin
