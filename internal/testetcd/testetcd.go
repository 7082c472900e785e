// Package testetcd runs real etcd servers in-process (go.etcd.io/etcd/server/v3/embed)
// on loopback ports chosen at random, for the tests of the etcd storage
// backend, the fleet package and the fleet demo: a single member or a cluster
// of several, each with its data directory in a temporary directory that is
// removed at Close.
//
// The servers run with a short heartbeat (so leases as short as one second
// are honoured and a cluster elects its leader quickly) and without fsync
// (test data need not survive a power cut). Each member's log goes to
// etcd.log in its data directory rather than to the test's output.
package testetcd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// Options configure a Cluster. The zero value is one member without TLS.
type Options struct {
	// Members is the number of members; 0 means 1.
	Members int
	// TLS serves the client URLs over TLS with a CA generated for the
	// cluster and requires client certificates signed by it (see
	// Cluster.TLS for the files).
	TLS bool
	// Dir holds the members' data directories; empty means a new
	// temporary directory, removed at Close.
	Dir string
	// StartTimeout bounds the wait for every member to be ready; 0 means
	// 30 s.
	StartTimeout time.Duration
}

// Cluster is a running etcd cluster.
type Cluster struct {
	// Endpoints are the members' client URLs, one per member.
	Endpoints []string
	// TLS names the certificate files when Options.TLS was set.
	TLS *TLSFiles

	members []*Member
	dir     string
	tempDir bool
}

// Member is one running etcd server of a Cluster.
type Member struct {
	Name      string
	Dir       string
	ClientURL string
	etcd      *embed.Etcd
}

// Heartbeat and election timeout of the test members. etcd's shortest lease
// is 1.5 election timeouts (rounded up to seconds), so these allow 1 s
// leases.
const (
	tickMs     = 25
	electionMs = 500
)

// Start runs a cluster for the test and stops it at the test's cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// New runs a cluster until Close; for TestMain and the fleet demo, where
// there is no testing.TB.
func New(opts Options) (*Cluster, error) {
	n := opts.Members
	if n <= 0 {
		n = 1
	}
	c := &Cluster{dir: opts.Dir}
	if c.dir == "" {
		d, err := os.MkdirTemp("", "testetcd-")
		if err != nil {
			return nil, fmt.Errorf("creating data directory: %w", err)
		}
		c.dir, c.tempDir = d, true
	}
	if opts.TLS {
		files, err := writeTLS(filepath.Join(c.dir, "tls"))
		if err != nil {
			c.Close()
			return nil, err
		}
		c.TLS = files
	}

	cfgs := make([]*embed.Config, n)
	var initial []string
	for i := range n {
		peer, err := pebbletest.FreePort()
		if err != nil {
			c.Close()
			return nil, err
		}
		client, err := pebbletest.FreePort()
		if err != nil {
			c.Close()
			return nil, err
		}
		name := "m" + strconv.Itoa(i)
		cfg := embed.NewConfig()
		cfg.Name = name
		cfg.Dir = filepath.Join(c.dir, name)
		cfg.TickMs, cfg.ElectionMs = tickMs, electionMs
		cfg.UnsafeNoFsync = true
		cfg.LogLevel = "warn"
		cfg.LogOutputs = []string{filepath.Join(c.dir, name+".log")}
		cfg.EnableGRPCGateway = false
		cfg.InitialClusterToken = filepath.Base(c.dir)
		scheme := "http"
		if c.TLS != nil {
			scheme = "https"
			cfg.ClientTLSInfo.CertFile = c.TLS.ServerCert
			cfg.ClientTLSInfo.KeyFile = c.TLS.ServerKey
			cfg.ClientTLSInfo.TrustedCAFile = c.TLS.CA
			cfg.ClientTLSInfo.ClientCertAuth = true
		}
		pu := loopbackURL("http", peer)
		cu := loopbackURL(scheme, client)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		initial = append(initial, name+"="+pu.String())
		c.Endpoints = append(c.Endpoints, cu.String())
		cfgs[i] = cfg
	}
	for _, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("starting etcd member %s: %w", cfg.Name, err)
		}
		c.members = append(c.members, &Member{Name: cfg.Name, Dir: cfg.Dir, ClientURL: cfg.AdvertiseClientUrls[0].String(), etcd: e})
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := time.After(timeout)
	for _, m := range c.members {
		select {
		case <-m.etcd.Server.ReadyNotify():
		case err := <-m.etcd.Err():
			c.Close()
			return nil, fmt.Errorf("etcd member %s: %w", m.Name, err)
		case <-deadline:
			c.Close()
			return nil, fmt.Errorf("etcd member %s not ready after %s (log: %s)", m.Name, timeout, filepath.Join(c.dir, m.Name+".log"))
		}
	}
	return c, nil
}

func loopbackURL(scheme string, port int) url.URL {
	return url.URL{Scheme: scheme, Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}

// Members returns the cluster's members in the order of Endpoints.
func (c *Cluster) Members() []*Member { return c.members }

// Close stops every member and removes the data directory if New made it.
func (c *Cluster) Close() {
	// Without the leadership transfer a graceful stop does: the whole
	// cluster goes, and a leader handing over to members that are stopping
	// waits for its request timeout.
	var wg sync.WaitGroup
	for _, m := range c.members {
		if m.etcd != nil {
			wg.Go(m.etcd.Server.HardStop)
		}
	}
	wg.Wait()
	for _, m := range c.members {
		wg.Go(m.Stop)
	}
	wg.Wait()
	c.members = nil
	if c.tempDir {
		os.RemoveAll(c.dir)
	}
}

// Stop stops the member; the rest of its cluster carries on while it keeps
// its quorum. Stopping a stopped member does nothing.
func (m *Member) Stop() {
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
}

// ClientConfig returns the configuration of a client of the cluster (with
// the client certificate when the cluster serves TLS).
func (c *Cluster) ClientConfig() (clientv3.Config, error) {
	cfg := clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if c.TLS != nil {
		tc, err := c.TLS.ClientTLS()
		if err != nil {
			return cfg, err
		}
		cfg.TLS = tc
	}
	return cfg, nil
}

// Client returns a client of the cluster, closed at the test's cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cfg, err := c.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("connecting to etcd %v: %v", c.Endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// EnableAuth creates the root user with password and turns on etcd's
// authentication, so clients from then on must log in.
func (c *Cluster) EnableAuth(ctx context.Context, password string) error {
	cfg, err := c.ClientConfig()
	if err != nil {
		return err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.UserAdd(ctx, "root", password); err != nil {
		return fmt.Errorf("adding user root: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		return fmt.Errorf("granting root: %w", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enabling authentication: %w", err)
	}
	return nil
}
