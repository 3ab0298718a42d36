//go:build tools

// Package tools pins the Prometheus Operator the integration tests run (tests/prometheus/build
// builds its cmd/operator and keeps its CRDs beside it); nothing here is compiled on its own.
package tools

import _ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
