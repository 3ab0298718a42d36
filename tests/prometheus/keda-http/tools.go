//go:build tools

// Package tools pins the KEDA HTTP add-on's interceptor, operator and scaler the integration tests
// run (tests/prometheus/build builds them); nothing here is compiled on its own.
package tools

import (
	_ "github.com/kedacore/http-add-on/interceptor"
	_ "github.com/kedacore/http-add-on/operator"
	_ "github.com/kedacore/http-add-on/scaler"
)
