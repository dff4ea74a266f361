package s3_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cairn-backup/cairn/internal/testenv"
	"github.com/cairn-backup/cairn/objstore"
)

func status(err error) string {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("HTTP %d", re.HTTPStatusCode())
	}
	if err == nil {
		return "HTTP 200"
	}
	return err.Error()
}

// TestServerIfNoneMatch records what the test server does with
// If-None-Match: * on PutObject and CompleteMultipartUpload, with the SDK
// alone, and checks the properties that Create relies on when the probe says
// the header is honoured: 412 on an existing key, and exactly one winner
// among concurrent writers of a new key.
func TestServerIfNoneMatch(t *testing.T) {
	env := testenv.S3(t)
	cli := client(env)
	b := bucket(t, env)
	ctx := t.Context()
	put := func(key string, cond bool) error {
		in := &s3.PutObjectInput{Bucket: &b, Key: &key, Body: bytes.NewReader([]byte(key)), ContentLength: aws.Int64(int64(len(key)))}
		if cond {
			in.IfNoneMatch = aws.String("*")
		}
		_, err := cli.PutObject(ctx, in)
		return err
	}
	errNew := put("new", true)
	errExisting := put("new", true)
	t.Logf("PutObject If-None-Match: * on a new key: %s; on an existing key: %s", status(errNew), status(errExisting))
	if errNew != nil {
		t.Fatalf("conditional put of a new key failed: %v", errNew)
	}
	honoured := false
	var re *awshttp.ResponseError
	if errors.As(errExisting, &re) && re.HTTPStatusCode() == http.StatusPreconditionFailed {
		honoured = true
	}
	if !honoured {
		t.Logf("the server does not honour If-None-Match on PutObject; Create must return ErrNotSupported")
		s, err := objstore.Open(ctx, storeURL(env, env.Endpoint, b, "probe"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Create(ctx, "x", bytes.NewReader(nil), 0); !errors.Is(err, objstore.ErrNotSupported) {
			t.Fatalf("Create on a server that ignores If-None-Match = %v, want ErrNotSupported", err)
		}
		return
	}

	const rounds, racers = 10, 32
	for r := range rounds {
		key := fmt.Sprintf("race/%d", r)
		var wins atomic.Int32
		var wg sync.WaitGroup
		var other error
		var mu sync.Mutex
		for range racers {
			wg.Go(func() {
				err := put(key, true)
				switch {
				case err == nil:
					wins.Add(1)
				case errors.As(err, new(*awshttp.ResponseError)) && status(err) == "HTTP 412":
				default:
					mu.Lock()
					other = err
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if other != nil {
			t.Fatalf("round %d: a racer failed otherwise than with 412: %v", r, other)
		}
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d of %d concurrent conditional PutObjects won, want exactly 1", r, wins.Load(), racers)
		}
	}
	t.Logf("%d rounds of %d concurrent conditional PutObjects: exactly one winner each", rounds, racers)

	// For the record: CompleteMultipartUpload with If-None-Match over an
	// existing key. The backend does not rely on it.
	key := "new"
	mu, err := cli.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &b, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	part, err := cli.UploadPart(ctx, &s3.UploadPartInput{Bucket: &b, Key: &key, UploadId: mu.UploadId, PartNumber: aws.Int32(1),
		Body: bytes.NewReader([]byte("part")), ContentLength: aws.Int64(4)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &b, Key: &key, UploadId: mu.UploadId, IfNoneMatch: aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{ETag: part.ETag, PartNumber: aws.Int32(1)}}}})
	t.Logf("CompleteMultipartUpload If-None-Match: * over an existing key: %s", status(err))
	if err != nil {
		cli.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b, Key: &key, UploadId: mu.UploadId})
	}
}
