package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"
)

// controllers are the kube-controller-manager loops Kiln's objects depend on: Jobs complete, Deployments
// roll out through ReplicaSets, owner references are collected, namespaces are emptied on delete and every
// namespace gets its default ServiceAccount (the ServiceAccount admission plugin refuses Pods without it),
// an HorizontalPodAutoscaler (hpa mode) scales its LLMService through the /scale subresource, and a
// Service's EndpointSlices list its ready Pods (KEDA's HTTP add-on interceptor holds a request until
// they do).
const controllers = "garbagecollector,namespace,job,deployment,replicaset,statefulset,serviceaccount,serviceaccount-token,ttl-after-finished,horizontalpodautoscaling,endpointslice,resourcequota"

type startOptions struct {
	kubeconfig         string
	operatorKubeconfig string
	operatorUser       string
	dataDir            string
	auditLog           string
	readyTimeout       time.Duration
}

func start(args []string) int {
	fs := flag.NewFlagSet("start", flag.ExitOnError)
	var o startOptions
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "write the admin kubeconfig here once the API server is ready (required)")
	fs.StringVar(&o.operatorKubeconfig, "operator-kubeconfig", "", "also write a kubeconfig authenticating as the operator's ServiceAccount")
	fs.StringVar(&o.operatorUser, "operator-user", "system:serviceaccount:kiln-system:kiln",
		"the identity the operator token authenticates as")
	fs.StringVar(&o.dataDir, "data-dir", "", "state directory (default: a temporary directory removed on exit)")
	fs.StringVar(&o.auditLog, "audit-log", "", "write the API server's audit log (every request's user and verb, JSON lines) here")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 3*time.Minute, "give up if the control plane is not ready by then")
	_ = fs.Parse(args)
	if o.kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "kiln-controlplane start: --kubeconfig PATH is required")
		return 2
	}
	if err := dieWithParent(); err != nil {
		fmt.Fprintf(os.Stderr, "kiln-controlplane: %v\n", err)
		return 1
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "kiln-controlplane: %v\n", err)
		return 1
	}
	return 0
}

// dieWithParent asks the kernel for SIGTERM when the process that started this one dies, so that a test
// runner killed with SIGKILL leaves no control plane (and etcd) behind: SIGTERM stops it as usual, and
// the components, children of this process, follow it (their Pdeathsig, startChild).
//
// The parent-death signal belongs to the thread that sets it (prctl(2); the kernel checks each thread of
// the orphaned process), and the children's to the thread that forked them: this goroutine stays on its
// thread, which then lives as long as the process, and starts every child from it.
func dieWithParent() error {
	runtime.LockOSThread()
	parent := os.Getppid()
	// tests/controlplane/start passes its own parent, which is ours after its exec: if that one died
	// before this process got here, nothing would signal it any more.
	if given, err := strconv.Atoi(os.Getenv("KILN_CONTROLPLANE_PARENT")); err == nil {
		parent = given
	}
	os.Unsetenv("KILN_CONTROLPLANE_PARENT") // not the components' business
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
	}
	if os.Getppid() != parent {
		return fmt.Errorf("the process that started the control plane (pid %d) has already exited", parent)
	}
	return nil
}

func run(o startOptions) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	dir := o.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "kiln-controlplane-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	pki, err := writePKI(filepath.Join(dir, "pki"), o.operatorUser)
	if err != nil {
		return fmt.Errorf("generating certificates and keys: %w", err)
	}

	etcdURL, etcd, err := startEtcd(filepath.Join(dir, "etcd"))
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer etcd.Close()

	port, err := freePort()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logDir := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}

	var audit []string
	if o.auditLog != "" {
		policy := filepath.Join(dir, "audit-policy.yaml")
		// Metadata is who did what to which object, without bodies: what a request count needs.
		text := "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
		if err := os.WriteFile(policy, []byte(text), 0o600); err != nil {
			return err
		}
		audit = []string{"--audit-policy-file=" + policy, "--audit-log-path=" + o.auditLog,
			"--audit-log-format=json", "--audit-log-mode=batch", "--audit-log-maxsize=0"}
	}
	apiserver, err := startChild(self, filepath.Join(logDir, "kube-apiserver.log"), "kube-apiserver", append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + pki.dir,
		"--tls-cert-file=" + pki.serverCert,
		"--tls-private-key-file=" + pki.serverKey,
		"--client-ca-file=" + pki.caCert,
		"--token-auth-file=" + pki.tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.saPublic,
		"--service-account-signing-key-file=" + pki.saPrivate,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--profiling=false",
		// Besides the default admission plugins, the one OpenShift enables: setting an owner
		// reference needs delete on the object, and blockOwnerDeletion delete on the owner
		// (kubernetes/kubernetes, plugin/pkg/admission/gc/gc_admission.go).
		"--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
		// The aggregation layer, as kubeadm configures it: an APIService (custom.metrics.k8s.io
		// from prometheus-adapter, say) is proxied to with the front-proxy client certificate and
		// the caller's identity in these headers.
		"--requestheader-client-ca-file=" + pki.frontProxyCA,
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + pki.frontProxyClient,
		"--proxy-client-key-file=" + pki.frontProxyClientKey,
	}, audit...)...)
	if err != nil {
		return err
	}
	children := []*child{apiserver}
	defer func() { stopChildren(children) }()

	adminKubeconfig := filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(adminKubeconfig, server, pki.caPEM, pki.adminToken, "admin"); err != nil {
		return err
	}
	client := httpsClient(pki.caPEM)
	readyCtx, cancel := context.WithTimeout(ctx, o.readyTimeout)
	defer cancel()
	if err := waitFor(readyCtx, apiserver, func() bool {
		return get(client, server+"/readyz", pki.adminToken) == http.StatusOK
	}); err != nil {
		return fmt.Errorf("kube-apiserver not ready (log: %s): %w", filepath.Join(logDir, "kube-apiserver.log"), err)
	}

	kcm, err := startChild(self, filepath.Join(logDir, "kube-controller-manager.log"), "kube-controller-manager",
		"--kubeconfig="+adminKubeconfig,
		"--controllers="+controllers,
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+pki.saPrivate,
		"--root-ca-file="+pki.caCert,
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
		// The HPA controller's loop, every 15 s upstream, every 2 s here so a test of hpa mode
		// sees its decisions within seconds; its algorithm and its defaults are unchanged.
		"--horizontal-pod-autoscaler-sync-period=2s",
	)
	if err != nil {
		return err
	}
	children = append(children, kcm)
	// The default ServiceAccount appearing proves the controller-manager is running its loops.
	if err := waitFor(readyCtx, kcm, func() bool {
		return get(client, server+"/api/v1/namespaces/default/serviceaccounts/default", pki.adminToken) == http.StatusOK
	}); err != nil {
		return fmt.Errorf("kube-controller-manager not running (log: %s): %w", filepath.Join(logDir, "kube-controller-manager.log"), err)
	}

	lws, err := startLeaderWorkerSet(readyCtx, self, dir, logDir, server, adminKubeconfig, pki, client)
	if lws != nil {
		children = append(children, lws)
	}
	if err != nil {
		return err
	}

	if o.operatorKubeconfig != "" {
		if err := writeKubeconfig(o.operatorKubeconfig, server, pki.caPEM, pki.operatorToken, "kiln-operator"); err != nil {
			return err
		}
	}
	// Written last: its presence is the readiness signal callers wait for.
	if err := writeKubeconfig(o.kubeconfig, server, pki.caPEM, pki.adminToken, "admin"); err != nil {
		return err
	}
	fmt.Printf("kube-apiserver %s ready at %s (logs in %s)\n", serverVersion(client, server, pki.adminToken), server, logDir)

	select {
	case <-ctx.Done():
		return nil
	case <-apiserver.done:
		return apiserver.err
	case <-kcm.done:
		return kcm.err
	case <-lws.done:
		return lws.err
	}
}

func startEtcd(dir string) (string, *embed.Etcd, error) {
	clientPort, err := freePort()
	if err != nil {
		return "", nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return "", nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "kiln"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	// The data is thrown away with the test run; fsync only slows every write down.
	cfg.UnsafeNoFsync = true
	clientURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peerURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*clientURL}, []url.URL{*clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		e.Close()
		return "", nil, errors.New("etcd not ready after a minute")
	}
	return clientURL.String(), e, nil
}

// child is a component's process, waited for by exactly one goroutine.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startChild(self, logPath, component string, args ...string) (*child, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{component}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	// Children die with the supervisor even if it is killed without a chance to stop them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", component, err)
	}
	c := &child{name: component, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		c.err = fmt.Errorf("%s exited (%v); its log: %s", component, err, logPath)
		log.Close()
		close(c.done)
	}()
	return c, nil
}

// stopChildren stops the controllers before the API server they talk to, each with SIGTERM first.
func stopChildren(children []*child) {
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}

func waitFor(ctx context.Context, c *child, ready func() bool) error {
	for {
		if ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return c.err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func httpsClient(caPEM string) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
}

func get(client *http.Client, u, token string) int {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func serverVersion(client *http.Client, server, token string) string {
	req, _ := http.NewRequest(http.MethodGet, server+"/version", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return "unknown"
	}
	defer resp.Body.Close()
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return "unknown"
	}
	return strings.TrimSpace(v.GitVersion)
}
