package etcd

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/sealed"
	"github.com/acmehook/acmehook/engine/store/storetest"
	"github.com/acmehook/acmehook/internal/testetcd"
)

// storage returns storetest's Storage on cluster c below a fresh prefix,
// each Open a client and session of its own; with sealedToo, wrapped in the
// age layer.
func storage(c *testetcd.Cluster, seq *atomic.Int64, sealedToo bool) func(t *testing.T) storetest.Storage {
	var id *age.X25519Identity
	if sealedToo {
		var err error
		if id, err = age.GenerateX25519Identity(); err != nil {
			panic(err)
		}
	}
	return func(t *testing.T) storetest.Storage {
		prefix := fmt.Sprintf("/conformance/%d/", seq.Add(1))
		n := 0
		return storetest.Storage{
			Open: func(t *testing.T) store.Backend {
				n++
				b, err := Open(t.Context(), Config{Endpoints: c.Endpoints, Prefix: prefix, Node: fmt.Sprintf("node-%d", n), LeaseTTL: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				if !sealedToo {
					return b
				}
				s, err := sealed.Open(t.Context(), b, []age.Recipient{id.Recipient()}, []age.Identity{id})
				if err != nil {
					b.Close()
					t.Fatal(err)
				}
				return s
			},
			Raw: func(t *testing.T, key string) ([]byte, error) {
				resp, err := c.Client(t).Get(t.Context(), prefix+key)
				if err != nil {
					return nil, err
				}
				if len(resp.Kvs) == 0 {
					return nil, store.ErrNotFound
				}
				return resp.Kvs[0].Value, nil
			},
			Sealed: sealedToo,
		}
	}
}

func TestConformance(t *testing.T) {
	var seq atomic.Int64
	t.Run("single", func(t *testing.T) { storetest.Run(t, storage(cluster, &seq, false)) })
	t.Run("sealed", func(t *testing.T) { storetest.Run(t, storage(cluster, &seq, true)) })
	t.Run("three-members", func(t *testing.T) {
		c := testetcd.Start(t, testetcd.Options{Members: 3})
		storetest.Run(t, storage(c, &seq, false))
	})
}
