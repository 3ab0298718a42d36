// Command kiln-controlplane runs a real Kubernetes control plane on loopback for Kiln's test suites:
// an embedded etcd, kube-apiserver and kube-controller-manager from k8s.io/kubernetes, the
// LeaderWorkerSet controller from sigs.k8s.io/lws, and kubectl; and kube-scheduler, which `start`
// does not run (the tests' simulated kubelet places pods itself) and a test starts when it wants
// the real placement.
//
//	kiln-controlplane start --kubeconfig PATH [--operator-kubeconfig PATH] [--data-dir DIR]
//	kiln-controlplane kubectl ARGS...
//	kiln-controlplane kube-scheduler ARGS...
//	kiln-controlplane version
//
// `start` is a supervisor: each Kubernetes component runs as a child process of this same binary
// (`kiln-controlplane kube-apiserver ...`), because kube-apiserver's command installs a process-wide
// signal handler and both components register process-global flags and feature gates; one process each
// keeps them exactly as upstream runs them.
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kiln-controlplane start|kubectl|version|kube-apiserver|kube-controller-manager|kube-scheduler|leaderworkerset-controller ...")
		os.Exit(2)
	}
	sub, rest := os.Args[1], os.Args[2:]
	switch sub {
	case "start":
		os.Exit(start(rest))
	case "version":
		fmt.Println(version.Get().GitVersion)
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "leaderworkerset-controller":
		os.Exit(leaderWorkerSetController(rest))
	case "kubectl":
		// kubectl reads os.Args itself for plugin lookup; present it as if invoked as `kubectl`.
		os.Args = append([]string{"kubectl"}, rest...)
		cmd := kubectlcmd.NewDefaultKubectlCommand()
		os.Exit(cli.Run(cmd))
	default:
		fmt.Fprintf(os.Stderr, "kiln-controlplane: unknown command %q\n", sub)
		os.Exit(2)
	}
}
