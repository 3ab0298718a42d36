// The Gateway API Inference Extension's endpoint picker (EPP), v1.5.0, built from its Go module
// exactly as its cmd/epp/main.go builds it, for the integration tests (tests/gateway/README.md).
package main

import (
	"os"

	ctrl "sigs.k8s.io/controller-runtime"

	"sigs.k8s.io/gateway-api-inference-extension/cmd/epp/runner"
)

func main() {
	if err := runner.NewRunner().Run(ctrl.SetupSignalHandler()); err != nil {
		os.Exit(1)
	}
}
