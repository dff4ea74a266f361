package s3_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
	_ "github.com/cairn-backup/cairn/objstore/s3"
	"github.com/cairn-backup/cairn/objstore/storetest"
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// client is an SDK client configured as an operator configures one for an
// S3-compatible server such as Garage or Scaleway: a custom endpoint, path
// style, static keys from the environment, checksums only when required.
func client(env testenv.S3Env) *s3.Client {
	cfg := aws.Config{
		Region:                     env.Region,
		Credentials:                credentials.NewStaticCredentialsProvider(env.AccessKey, env.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(env.Endpoint)
		o.UsePathStyle = true
	})
}

// bucket creates a bucket for one test and removes it, with everything in
// it, when the test ends. A multipart upload left behind fails the test.
func bucket(t testing.TB, env testenv.S3Env) string {
	t.Helper()
	return newBucket(t, env, true)
}

// faultyBucket is bucket for tests that inject faults: a lost response to
// CreateMultipartUpload leaves an upload whose ID no client knows, which only
// a lifecycle rule (AbortIncompleteMultipartUpload) can remove, so uploads
// left behind are logged, not failed.
func faultyBucket(t testing.TB, env testenv.S3Env) string {
	t.Helper()
	return newBucket(t, env, false)
}

func newBucket(t testing.TB, env testenv.S3Env, strict bool) string {
	t.Helper()
	cli := client(env)
	name := "cairn-test-" + randHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cli.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("CreateBucket %s: %v", name, err)
	}
	t.Cleanup(func() { emptyAndDelete(t, cli, name, strict) })
	return name
}

func emptyAndDelete(t testing.TB, cli *s3.Client, name string, strict bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	uploads, err := cli.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &name})
	if err == nil {
		for _, u := range uploads.Uploads {
			report := t.Errorf
			if !strict {
				report = t.Logf
			}
			report("multipart upload left behind: %s %s", aws.ToString(u.Key), aws.ToString(u.UploadId))
			cli.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &name, Key: u.Key, UploadId: u.UploadId})
		}
	}
	p := s3.NewListObjectsV2Paginator(cli, &s3.ListObjectsV2Input{Bucket: &name})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Logf("cleanup of bucket %s: %v", name, err)
			return
		}
		var ids []types.ObjectIdentifier
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		if len(ids) > 0 {
			if _, err := cli.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &name, Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}}); err != nil {
				t.Logf("cleanup of bucket %s: %v", name, err)
				return
			}
		}
	}
	if _, err := cli.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &name}); err != nil {
		t.Logf("cleanup of bucket %s: %v", name, err)
	}
}

// storeURL is the URL of a store in bucket under prefix on endpoint, with a
// part size of 5 MiB so that storetest's big objects take three parts.
func storeURL(env testenv.S3Env, endpoint, bucket, prefix string, extra ...string) string {
	q := url.Values{}
	q.Set("endpoint", endpoint)
	q.Set("region", env.Region)
	q.Set("path_style", "true")
	q.Set("part_size", "5242880")
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return "s3://" + bucket + "/" + prefix + "?" + q.Encode()
}

// newStores returns a storetest.NewStore that opens each subtest's store
// under a prefix of its own in one bucket.
func newStores(env testenv.S3Env, endpoint, bucket string, extra ...string) storetest.NewStore {
	return func(t *testing.T) objstore.Store {
		prefix := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + randHex(2)
		s, err := objstore.Open(t.Context(), storeURL(env, endpoint, bucket, "t/"+prefix, extra...))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

func TestConformance(t *testing.T) {
	env := testenv.S3(t)
	storetest.Run(t, newStores(env, env.Endpoint, bucket(t, env)))
}
