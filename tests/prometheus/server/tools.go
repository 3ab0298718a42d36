//go:build tools

// Package tools pins the Prometheus server the integration tests run (tests/prometheus/build
// builds its cmd/prometheus); nothing here is compiled on its own.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
