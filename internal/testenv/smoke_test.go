package testenv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// Smoke tests: one per server of the test environment, so that a broken
// environment shows up as a named failure rather than inside a feature test.

// TestSmokeS3 makes a round trip through radosgw with aws-sdk-go-v2 configured
// as objstore/s3 must be for S3-compatible servers: credentials from the
// default chain, checksums only when required, path-style addressing.
func TestSmokeS3(t *testing.T) {
	env := testenv.S3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(env.Region))
	if err != nil {
		t.Fatalf("loading the AWS config: %v", err)
	}
	cfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	cfg.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	cli := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(env.Endpoint)
		o.UsePathStyle = true
	})

	bucket := fmt.Sprintf("smoke-%d", time.Now().UnixNano())
	if _, err := cli.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("CreateBucket %s on %s: %v", bucket, env.Endpoint, err)
	}
	t.Cleanup(func() {
		if _, err := cli.DeleteBucket(context.Background(), &s3.DeleteBucketInput{Bucket: &bucket}); err != nil {
			t.Errorf("DeleteBucket: %v", err)
		}
	})

	body := []byte("hello from cairn's smoke test\n")
	key := aws.String("smoke/a")
	if _, err := cli.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: key, Body: bytes.NewReader(body)}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	if got := getObject(ctx, t, cli, bucket, *key, ""); !bytes.Equal(got, body) {
		t.Fatalf("GetObject returned %q, want %q", got, body)
	}
	if got := getObject(ctx, t, cli, bucket, *key, "bytes=6-9"); string(got) != "from" {
		t.Fatalf("ranged GetObject returned %q, want %q", got, "from")
	}

	// multipart: 5 MiB + 1 MiB, seekable parts
	parts := [][]byte{make([]byte, 5<<20), make([]byte, 1<<20)}
	for _, p := range parts {
		rand.Read(p)
	}
	big := aws.String("smoke/big")
	mu, err := cli.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: big})
	if err != nil {
		t.Fatalf("CreateMultipartUpload: %v", err)
	}
	var done []types.CompletedPart
	for i, p := range parts {
		n := int32(i + 1)
		up, err := cli.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: big, UploadId: mu.UploadId,
			PartNumber: &n, Body: bytes.NewReader(p)})
		if err != nil {
			t.Fatalf("UploadPart %d: %v", n, err)
		}
		done = append(done, types.CompletedPart{ETag: up.ETag, PartNumber: &n})
	}
	if _, err := cli.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: big,
		UploadId: mu.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}}); err != nil {
		t.Fatalf("CompleteMultipartUpload: %v", err)
	}
	if got := getObject(ctx, t, cli, bucket, *big, ""); !bytes.Equal(got, bytes.Join(parts, nil)) {
		t.Fatalf("multipart object differs (%d bytes read)", len(got))
	}

	lst, err := cli.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: aws.String("smoke/")})
	if err != nil {
		t.Fatalf("ListObjectsV2: %v", err)
	}
	if len(lst.Contents) != 2 {
		t.Fatalf("ListObjectsV2 listed %d objects, want 2", len(lst.Contents))
	}
	for _, k := range []*string{key, big} {
		if _, err := cli.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: k}); err != nil {
			t.Fatalf("DeleteObject %s: %v", *k, err)
		}
	}
}

func getObject(ctx context.Context, t *testing.T, cli *s3.Client, bucket, key, rng string) []byte {
	t.Helper()
	in := &s3.GetObjectInput{Bucket: &bucket, Key: &key}
	if rng != "" {
		in.Range = &rng
	}
	out, err := cli.GetObject(ctx, in)
	if err != nil {
		t.Fatalf("GetObject %s %s: %v", key, rng, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	return b
}

// TestSmokePostgres runs SELECT 1 through psql, checks that a wrong password
// is refused, and that pg_dumpall writes a dump.
func TestSmokePostgres(t *testing.T) {
	pg := testenv.Postgres(t)
	out, err := exec.Command(pg.Bin("psql"), pg.DSN, "-Atc", "SELECT 1").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("psql SELECT 1: %v: %s", err, out)
	}

	wrong := exec.Command(pg.Bin("psql"), "-Atc", "SELECT 1")
	wrong.Env = append(os.Environ(), "PGPASSWORD=wrong", "PGCONNECT_TIMEOUT=10")
	if out, err := wrong.CombinedOutput(); err == nil || !strings.Contains(string(out), "password authentication failed") {
		t.Fatalf("psql with a wrong password: err=%v, output %q; want a password failure", err, out)
	}

	dump := exec.Command(pg.Bin("pg_dumpall"))
	var stderr bytes.Buffer
	dump.Stderr = &stderr
	out, err = dump.Output()
	if err != nil {
		t.Fatalf("pg_dumpall: %v: %s", err, stderr.String())
	}
	if !bytes.Contains(out, []byte("PostgreSQL database cluster dump")) {
		t.Fatalf("pg_dumpall wrote %d bytes without the cluster dump header", len(out))
	}
	t.Logf("pg_dumpall: %d bytes", len(out))
}
