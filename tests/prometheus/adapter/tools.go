//go:build tools

// Package tools pins the prometheus-adapter the integration tests run (tests/prometheus/build
// builds its cmd/adapter); nothing here is compiled on its own.
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
