package s3_test

import (
	"context"
	"log"

	"github.com/cairn-backup/cairn/objstore"
	_ "github.com/cairn-backup/cairn/objstore/s3" // registers s3://
)

// Open a repository prefix in a bucket on an S3-compatible server (here
// radosgw on loopback; Garage and Scaleway look alike). The keys come from
// the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or
// AWS_PROFILE.
func Example() {
	ctx := context.Background()
	s, err := objstore.Open(ctx, "s3://backups/cluster-a?endpoint=http://127.0.0.1:7480&region=us-east-1&path_style=true")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
}
