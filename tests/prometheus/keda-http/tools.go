//go:build tools

// Package tools pins the KEDA HTTP add-on's interceptor and operator the integration tests run
// (tests/prometheus/build builds both); nothing here is compiled on its own.
package tools

import (
	_ "github.com/kedacore/http-add-on/interceptor"
	_ "github.com/kedacore/http-add-on/operator"
)
