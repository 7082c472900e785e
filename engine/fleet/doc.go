// Package fleet runs acmehook on the storage [storage] describes, and
// several acmehook nodes on one shared etcd storage: OpenStore opens the
// configured backend (private keys sealed with age on etcd), Migrate grows
// a single machine's file storage into etcd, and Nodes lists the live nodes
// of a fleet from their session leases.
package fleet
