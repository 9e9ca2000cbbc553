package main

import (
	"runtime"
	"testing"
)

// TestHashConcurrencyDefault checks that -hash-concurrency defaults to one
// fewer than the CPUs Go runs on, and never below one, so that password
// hashing always leaves a core to token checks.
func TestHashConcurrencyDefault(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tt := range []struct{ procs, want int }{
		{procs: 1, want: 1},
		{procs: 2, want: 1},
		{procs: 3, want: 2},
		{procs: 4, want: 3},
		{procs: 16, want: 15},
	} {
		runtime.GOMAXPROCS(tt.procs)
		if got := defaultConfig().HashConcurrency; got != tt.want {
			t.Errorf("with GOMAXPROCS %d, the default -hash-concurrency = %d; want %d", tt.procs, got, tt.want)
		}
	}
}
