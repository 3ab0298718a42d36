package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki is what one run of the control plane trusts: a CA and a loopback serving certificate, the
// ServiceAccount token signing key pair and a static token file. All of it is generated at start, so
// nothing secret is stored in the repository or outlives the run.
type pki struct {
	dir                   string
	caCert, caPEM         string
	serverCert, serverKey string
	saPublic, saPrivate   string
	tokens                string
	adminToken            string
	operatorToken         string
	// The aggregation layer's: the CA an extension API server trusts for the identity
	// kube-apiserver forwards (--requestheader-client-ca-file), and the client certificate
	// kube-apiserver proxies with (--proxy-client-cert-file), as kubeadm's front-proxy pair.
	frontProxyCA                          string
	frontProxyClient, frontProxyClientKey string
}

// frontProxyClientName is the proxy client certificate's common name, the one name
// --requestheader-allowed-names admits.
const frontProxyClientName = "front-proxy-client"

func writePKI(dir, operatorUser string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{dir: dir}

	now := time.Now()
	caCert, caDER, caKey, err := newCA("kiln-controlplane-ca", 1, now)
	if err != nil {
		return nil, err
	}
	p.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	p.caCert = filepath.Join(dir, "ca.crt")

	serverDER, serverKeyDER, err := newLeaf(&x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	}, caCert, caKey)
	if err != nil {
		return nil, err
	}
	p.serverCert = filepath.Join(dir, "apiserver.crt")
	p.serverKey = filepath.Join(dir, "apiserver.key")

	frontCA, frontCADER, frontCAKey, err := newCA("kiln-controlplane-front-proxy-ca", 3, now)
	if err != nil {
		return nil, err
	}
	frontDER, frontKeyDER, err := newLeaf(&x509.Certificate{
		SerialNumber: big.NewInt(4),
		Subject:      pkix.Name{CommonName: frontProxyClientName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, frontCA, frontCAKey)
	if err != nil {
		return nil, err
	}
	p.frontProxyCA = filepath.Join(dir, "front-proxy-ca.crt")
	p.frontProxyClient = filepath.Join(dir, "front-proxy-client.crt")
	p.frontProxyClientKey = filepath.Join(dir, "front-proxy-client.key")

	// ServiceAccount tokens are signed with RSA, the algorithm every Kubernetes release accepts.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPublicDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	p.saPrivate = filepath.Join(dir, "sa.key")
	p.saPublic = filepath.Join(dir, "sa.pub")

	if p.adminToken, err = randomToken(); err != nil {
		return nil, err
	}
	if p.operatorToken, err = randomToken(); err != nil {
		return nil, err
	}
	// The operator's line mirrors what a projected ServiceAccount token authenticates as, so the chart's
	// RoleBindings to the ServiceAccount subject apply to it.
	ns := serviceAccountNamespace(operatorUser)
	p.tokens = filepath.Join(dir, "tokens.csv")
	tokens := fmt.Sprintf("%s,admin,kiln-admin,\"system:masters\"\n%s,%s,kiln-operator,\"system:serviceaccounts,system:serviceaccounts:%s,system:authenticated\"\n",
		p.adminToken, p.operatorToken, operatorUser, ns)

	files := map[string][]byte{
		p.caCert:              []byte(p.caPEM),
		p.serverCert:          pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: serverDER}),
		p.serverKey:           pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: serverKeyDER}),
		p.saPrivate:           pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		p.saPublic:            pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPublicDER}),
		p.tokens:              []byte(tokens),
		p.frontProxyCA:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: frontCADER}),
		p.frontProxyClient:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: frontDER}),
		p.frontProxyClientKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: frontKeyDER}),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// newCA is a self-signed certificate authority valid for the run (and an hour before it, for
// clock skew), with its DER encoding and its key.
func newCA(name string, serial int64, now time.Time) (*x509.Certificate, []byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, der, key, err
}

// newLeaf is a certificate from template signed by ca, with a key of its own: both DER-encoded.
func newLeaf(template, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	return der, keyDER, err
}

func serviceAccountNamespace(user string) string {
	// A ServiceAccount identity reads system:serviceaccount:NAMESPACE:NAME.
	if parts := strings.Split(user, ":"); len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount" {
		return parts[2]
	}
	return "default"
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func writeKubeconfig(path, server, caPEM, token, user string) error {
	ca := base64.StdEncoding.EncodeToString([]byte(caPEM))
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kiln
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: kiln
  context:
    cluster: kiln
    user: %s
    namespace: default
current-context: kiln
`, server, ca, user, token, user)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		return err
	}
	// A rename, so a reader waiting for the file never sees half of it.
	return os.Rename(tmp, path)
}
