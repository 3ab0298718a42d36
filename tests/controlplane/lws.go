package main

// The LeaderWorkerSet controller of sigs.k8s.io/lws v0.8.0, the newest release whose go.mod fits this
// build's k8s.io staging modules (v0.34.3, lifted to v0.35.4 here; v0.9.0 and later need v0.36), run as
// upstream's cmd/main.go runs it: the LeaderWorkerSet and Pod reconcilers and the two webhooks, which
// label each group's Pods and give them LWS_* environment. The webhooks are served on loopback with the
// API server's own certificate (signed by this run's CA, valid for 127.0.0.1) and registered with URL
// client configs, as config/webhook/manifests.yaml with its patches registers them through a Service.

import (
	"bytes"
	"context"
	"crypto/tls"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	leaderworkersetv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"
	lwscontrollers "sigs.k8s.io/lws/pkg/controllers"
	"sigs.k8s.io/lws/pkg/webhooks"
	"sigs.k8s.io/yaml"
)

// The CRD of that release, copied unchanged from its config/crd/bases/ (Apache-2.0).
//
//go:embed crds/leaderworkerset.x-k8s.io_leaderworkersets.yaml
var leaderWorkerSetCRD []byte

// leaderWorkerSetController is the `leaderworkerset-controller` subcommand: the manager, until SIGTERM.
func leaderWorkerSetController(args []string) int {
	fs := flag.NewFlagSet("leaderworkerset-controller", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "the admin kubeconfig")
	certDir := fs.String("cert-dir", "", "directory holding the webhook server's tls.crt and tls.key")
	port := fs.Int("port", 0, "the webhook server's port on 127.0.0.1")
	_ = fs.Parse(args)
	ctrl.SetLogger(zap.New())
	if err := runLeaderWorkerSet(*kubeconfig, *certDir, *port); err != nil {
		fmt.Fprintf(os.Stderr, "leaderworkerset-controller: %v\n", err)
		return 1
	}
	return 0
}

func runLeaderWorkerSet(kubeconfig, certDir string, port int) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(leaderworkersetv1.AddToScheme(scheme))
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	config.QPS, config.Burst = 500, 500 // upstream's defaults (--kube-api-qps, --kube-api-burst)
	mgr, err := ctrl.NewManager(config, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: certDir}),
	})
	if err != nil {
		return err
	}
	if err := lwscontrollers.SetupIndexes(mgr.GetFieldIndexer()); err != nil {
		return err
	}
	recorder := mgr.GetEventRecorderFor("leaderworkerset")
	if err := lwscontrollers.NewLeaderWorkerSetReconciler(mgr.GetClient(), mgr.GetScheme(), recorder).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := lwscontrollers.NewPodReconciler(mgr.GetClient(), mgr.GetScheme(), recorder, nil).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := webhooks.SetupLeaderWorkerSetWebhook(mgr); err != nil {
		return err
	}
	if err := webhooks.NewPodWebhook(nil).Setup(mgr); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

// startLeaderWorkerSet installs the CRD, starts the controller as a child and, once its webhook server
// answers, registers the webhooks; returns the child.
func startLeaderWorkerSet(ctx context.Context, self, dir, logDir, server, adminKubeconfig string, p *pki,
	client *http.Client) (*child, error) {
	if err := postObject(client, server, p.adminToken, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
		leaderWorkerSetCRD); err != nil {
		return nil, fmt.Errorf("installing the LeaderWorkerSet CRD: %w", err)
	}
	crd := server + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/leaderworkersets.leaderworkerset.x-k8s.io"
	if err := poll(ctx, func() bool { return established(client, crd, p.adminToken) }); err != nil {
		return nil, fmt.Errorf("the LeaderWorkerSet CRD not established: %w", err)
	}
	certDir := filepath.Join(dir, "lws-webhook")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	for name, from := range map[string]string{"tls.crt": p.serverCert, "tls.key": p.serverKey} {
		data, err := os.ReadFile(from)
		if err == nil {
			err = os.WriteFile(filepath.Join(certDir, name), data, 0o600)
		}
		if err != nil {
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, "leaderworkerset-controller.log")
	lws, err := startChild(self, logPath, "leaderworkerset-controller", "--kubeconfig="+adminKubeconfig,
		"--cert-dir="+certDir, fmt.Sprintf("--port=%d", port))
	if err != nil {
		return nil, err
	}
	address := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitFor(ctx, lws, func() bool { return answers(address) }); err != nil {
		return lws, fmt.Errorf("the LeaderWorkerSet webhooks not serving (log: %s): %w", logPath, err)
	}
	for _, config := range webhookConfigurations(address, p.caPEM) {
		body, err := json.Marshal(config.object)
		if err == nil {
			err = postObject(client, server, p.adminToken, "/apis/admissionregistration.k8s.io/v1/"+config.plural, body)
		}
		if err != nil {
			return lws, fmt.Errorf("registering the LeaderWorkerSet webhooks: %w", err)
		}
	}
	return lws, nil
}

type registration struct {
	plural string
	object map[string]any
}

// webhookConfigurations are lws v0.8.0's config/webhook/manifests.yaml with mutating-patch.yaml and
// validating-patch.yaml applied (the Pod webhooks only for Pods with the leaderworkerset.sigs.k8s.io/name
// label), each calling the server at address.
func webhookConfigurations(address, caPEM string) []registration {
	hook := func(name, path string, resource, group string, operations []string, podsOnly bool) map[string]any {
		h := map[string]any{
			"name": name, "admissionReviewVersions": []string{"v1"}, "sideEffects": "None", "failurePolicy": "Fail",
			"clientConfig": map[string]any{"url": "https://" + address + path,
				"caBundle": base64.StdEncoding.EncodeToString([]byte(caPEM))},
			"rules": []map[string]any{{"apiGroups": []string{group}, "apiVersions": []string{"v1"},
				"operations": operations, "resources": []string{resource}}},
		}
		if podsOnly {
			h["objectSelector"] = map[string]any{"matchExpressions": []map[string]any{
				{"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}}}
		}
		return h
	}
	createUpdate := []string{"CREATE", "UPDATE"}
	group := "leaderworkerset.x-k8s.io"
	return []registration{
		{"mutatingwebhookconfigurations", map[string]any{
			"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
			"metadata": map[string]any{"name": "lws-mutating-webhook-configuration"},
			"webhooks": []map[string]any{
				hook("mleaderworkerset.kb.io", "/mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset", "leaderworkersets",
					group, createUpdate, false),
				hook("mpod.kb.io", "/mutate--v1-pod", "pods", "", []string{"CREATE"}, true),
			}}},
		{"validatingwebhookconfigurations", map[string]any{
			"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
			"metadata": map[string]any{"name": "lws-validating-webhook-configuration"},
			"webhooks": []map[string]any{
				hook("vleaderworkerset.kb.io", "/validate-leaderworkerset-x-k8s-io-v1-leaderworkerset", "leaderworkersets",
					group, createUpdate, false),
				hook("vpod.kb.io", "/validate--v1-pod", "pods", "", createUpdate, true),
			}}},
	}
}

// postObject creates the object (YAML or JSON) at path; one that exists already is left as it is.
func postObject(client *http.Client, server, token, path string, body []byte) error {
	data, err := yaml.YAMLToJSON(body)
	if err != nil {
		return err
	}
	req, _ := http.NewRequest(http.MethodPost, server+path, bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return nil
}

func established(client *http.Client, u, token string) bool {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var crd struct {
		Status struct {
			Conditions []struct{ Type, Status string } `json:"conditions"`
		} `json:"status"`
	}
	if json.NewDecoder(resp.Body).Decode(&crd) != nil {
		return false
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == "Established" && c.Status == "True" {
			return true
		}
	}
	return false
}

// answers is whether a TLS server accepts connections at address.
func answers(address string) bool {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", address,
		&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only whether it is up
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func poll(ctx context.Context, ready func() bool) error {
	for !ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}
