package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCA is a certificate authority of a test: it signs loopback
// certificates, and its certificate (CAFile) is what the probe under test
// is told to trust.
type TestCA struct {
	Cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	dir    string
	CAFile string
}

// NewTestCA makes a CA whose PEM certificate is written to a temp file.
func NewTestCA(t testing.TB) *TestCA {
	t.Helper()
	ca, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// NewCA makes a CA whose PEM certificate (CAFile) and leaves are written
// to dir (the demo's; tests use NewTestCA).
func NewCA(dir string) (*TestCA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mxprobe test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &TestCA{Cert: cert, key: key, dir: dir, CAFile: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(ca.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return ca, nil
}

// Leaf is a certificate the CA signed, with its key.
type Leaf struct {
	TLS      tls.Certificate
	CertFile string
	KeyFile  string
}

// Issue signs a certificate for names (DNS names or IP addresses) valid
// until notAfter (a time in the past gives an expired one).
func (ca *TestCA) Issue(t testing.TB, notAfter time.Time, names ...string) Leaf {
	t.Helper()
	l, err := ca.IssueLeaf(notAfter, names...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// IssueLeaf is Issue with an error (for the demo).
func (ca *TestCA) IssueLeaf(notAfter time.Time, names ...string) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return Leaf{}, err
	}
	notBefore := time.Now().Add(-time.Hour)
	if nb := notAfter.Add(-time.Hour); nb.Before(notBefore) {
		notBefore = nb
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return Leaf{}, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Leaf{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return Leaf{}, err
	}
	f, err := os.CreateTemp(ca.dir, "leaf-*.pem")
	if err != nil {
		return Leaf{}, err
	}
	f.Close()
	l := Leaf{TLS: pair, CertFile: f.Name(), KeyFile: f.Name() + ".key"}
	if err := os.WriteFile(l.CertFile, certPEM, 0o600); err != nil {
		return Leaf{}, err
	}
	if err := os.WriteFile(l.KeyFile, keyPEM, 0o600); err != nil {
		return Leaf{}, err
	}
	return l, nil
}
