package testetcd

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestCluster(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"single", Options{}},
		{"three", Options{Members: 3}},
		{"tls", Options{TLS: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			c := Start(t, tt.opts)
			t.Logf("%d member(s) ready in %s", len(c.Members()), time.Since(start))
			cli := c.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := cli.Put(ctx, "k", "v"); err != nil {
				t.Fatalf("Put: %v", err)
			}
			// Every member serves the value written through any of them.
			for _, m := range c.Members() {
				cfg, err := c.ClientConfig()
				if err != nil {
					t.Fatal(err)
				}
				cfg.Endpoints = []string{m.ClientURL}
				resp, err := cliFor(t, cfg).Get(ctx, "k")
				if err != nil {
					t.Fatalf("Get from %s: %v", m.Name, err)
				}
				if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
					t.Errorf("Get(k) from %s = %v, want v", m.Name, resp.Kvs)
				}
			}
		})
	}
}

func cliFor(t *testing.T, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestQuorum: a 3-member cluster keeps serving writes with one member
// stopped.
func TestQuorum(t *testing.T) {
	c := Start(t, Options{Members: 3})
	c.Members()[0].Stop()
	cfg, err := c.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Endpoints = c.Endpoints[1:]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cliFor(t, cfg).Put(ctx, "k", "v"); err != nil {
		t.Fatalf("Put with 2 of 3 members: %v", err)
	}
}

func TestEnableAuth(t *testing.T) {
	c := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.EnableAuth(ctx, "s3cret"); err != nil {
		t.Fatal(err)
	}
	cfg, _ := c.ClientConfig()
	if _, err := cliFor(t, cfg).Put(ctx, "k", "v"); err == nil {
		t.Error("Put without credentials succeeded with authentication on")
	}
	cfg.Username, cfg.Password = "root", "s3cret"
	if _, err := cliFor(t, cfg).Put(ctx, "k", "v"); err != nil {
		t.Errorf("Put as root: %v", err)
	}
}
