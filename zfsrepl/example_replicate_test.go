package zfsrepl_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"os"

	"github.com/cairn-backup/cairn/zfsrepl"
	"github.com/cairn-backup/cairn/zfsrepl/transport"
	"github.com/cairn-backup/cairn/zfsrepl/zfs"
)

// One round of the seed's zrepl-garage-push, by hand: the local ZFS
// filesystems under tank/garage go to the sink backup-node:8888 over mutual
// TLS as the client "garage" (its certificate's CN), which stores them under
// its root_fs/garage/. A second round sends only what is new since the
// replication cursor; an interrupted one resumes from the receiver's token.
// (Compile-only: it needs ZFS and a running sink.)
func ExampleReplicate() {
	ca := x509.NewCertPool()
	pem, err := os.ReadFile("/etc/zrepl/ca.crt")
	if err != nil {
		log.Fatal(err)
	}
	ca.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair("/etc/zrepl/garage.crt", "/etc/zrepl/garage.key")
	if err != nil {
		log.Fatal(err)
	}
	sink, err := transport.NewTLSClient("backup-node:8888",
		transport.TLSClientConfig{CA: ca, Cert: cert, ServerName: "backup-node"}, transport.ClientOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()
	filter, err := zfsrepl.NewFilter(map[string]bool{"tank/garage<": true})
	if err != nil {
		log.Fatal(err)
	}
	sender := &zfsrepl.LocalSender{ZFS: &zfs.Runner{}, Job: "garage_push", Filter: filter}

	rep := zfsrepl.Replicate(context.Background(), sender, sink, zfsrepl.Config{Job: "garage_push"})
	for _, fs := range rep.Filesystems {
		fmt.Printf("%s: %s, %d bytes in %d steps\n", fs.Filesystem, fs.State, fs.Bytes, len(fs.Steps))
	}
	if err := rep.Err(); err != nil {
		log.Fatal(err)
	}
}
