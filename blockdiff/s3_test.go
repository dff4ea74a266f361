package blockdiff

import (
	"bytes"
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
	_ "github.com/cairn-backup/cairn/objstore/s3" // registers s3://
)

// s3Store opens a store on a fresh bucket of the test environment's radosgw,
// configured as an operator configures an S3-compatible server.
func s3Store(t *testing.T) objstore.Store {
	env := testenv.S3(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := s3.NewFromConfig(aws.Config{
		Region:                     env.Region,
		Credentials:                credentials.NewStaticCredentialsProvider(env.AccessKey, env.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(env.Endpoint)
		o.UsePathStyle = true
	})
	bucket := "cairn-blockdiff-" + randHex(10)
	if _, err := cli.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("CreateBucket %s: %v", bucket, err)
	}
	q := url.Values{"endpoint": {env.Endpoint}, "region": {env.Region}, "path_style": {"true"}}
	s, err := objstore.Open(ctx, "s3://"+bucket+"/repo?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // radosgw keeps its objects in memory: give them back
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for info, err := range s.List(ctx, "") {
			if err != nil {
				break
			}
			_ = s.Delete(ctx, info.Key)
		}
		s.Close()
		if _, err := cli.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket}); err != nil {
			t.Logf("delete bucket %s: %v", bucket, err)
		}
	})
	return s
}

// TestRoundTripS3 runs the byte-for-byte round trips against the real S3
// server, plain and encrypted, and an incremental backup.
func TestRoundTripS3(t *testing.T) {
	t.Run("plain", func(t *testing.T) { roundTrips(t, s3Store(t), "") })
	t.Run("encrypted", func(t *testing.T) { roundTrips(t, s3Store(t), "pw") })
	t.Run("incremental", func(t *testing.T) {
		s := s3Store(t)
		r := newRepo(t, s, "")
		img := randBytes(11, 30*testBS)
		v1 := backupBytes(t, r, "vol", img, BackupOptions{})
		img2 := changeBlocks(img, 4)
		v2 := backupBytes(t, r, "vol", img2, BackupOptions{Base: v1.ID, Hints: hintsFor(4)})
		if v2.Stats.BlocksNew != 1 || countPrefix(t, s, "data/") != 31 {
			t.Fatalf("incremental on S3: %+v", v2.Stats)
		}
		if !bytes.Equal(restoreBytes(t, r, v2.ID), img2) {
			t.Fatal("S3 restore differs")
		}
	})
}
