//go:build tools

// Package tools pins the KEDA HTTP add-on's interceptor the integration tests run
// (tests/prometheus/build builds its interceptor); nothing here is compiled on its own.
package tools

import _ "github.com/kedacore/http-add-on/interceptor"
