// Package s3 is the objstore backend for Amazon S3 and S3-compatible servers
// (Ceph radosgw, Garage, MinIO, Scaleway, ...), on aws-sdk-go-v2. Importing it
// registers the s3:// scheme with objstore.Open:
//
//	import _ "github.com/cairn-backup/cairn/objstore/s3"
//
//	s, err := objstore.Open(ctx, "s3://bucket/prefix?endpoint=http://127.0.0.1:7480&region=us-east-1&path_style=true")
//
// The URL names the bucket and an optional key prefix (the store's keys live
// under "prefix/"). Query parameters, all optional:
//
//   - endpoint: the server's base URL, e.g. https://s3.fr-par.scw.cloud or
//     http://127.0.0.1:7480; default: AWS, or AWS_ENDPOINT_URL(_S3).
//   - region: the signing region; default: the SDK's (AWS_REGION, shared
//     config), else us-east-1.
//   - path_style=true: address the bucket as ENDPOINT/bucket instead of
//     bucket.ENDPOINT; most self-hosted servers (radosgw, Garage, MinIO) need it.
//   - part_size: bytes per multipart part (minimum 5 MiB, default 16 MiB).
//     Objects up to this size go in one PutObject; larger ones, or ones of
//     unknown size that turn out larger, are uploaded part by part.
//   - concurrency: parts of one object uploaded at once (default 4). A Put
//     holds at most concurrency+1 parts in memory, whatever the object's size.
//   - max_attempts: attempts per request, with exponential backoff and jitter
//     between them, on throttling, 5xx responses and broken connections
//     (default 10).
//   - read_timeout: how long a connection may deliver no data before the
//     request is abandoned and retried (default 60s; Go duration syntax).
//   - create=auto|on|off: how Create works, see below (default auto).
//
// A Put that fails aborts its multipart upload. One case escapes: when the
// response to CreateMultipartUpload is lost and the SDK retries, the server
// holds an upload whose ID no client ever saw. Give the bucket a lifecycle
// rule that aborts incomplete multipart uploads after a day, as for any S3
// client.
//
// Credentials come from the SDK's default chain (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared files, web identity, EC2 and
// container roles), never from the URL: a URL with user or password is
// rejected. Request checksums are computed and response checksums validated
// only when the operation requires them, because the CRC trailers that recent
// SDKs send by default are rejected by several S3-compatible servers. Over
// plain HTTP the payload's SHA-256 is signed, which still protects the body.
//
// # Conditional create
//
// Create sends PutObject with If-None-Match: *, which AWS (since 2024) and
// recent S3-compatible servers honour atomically: of concurrent creators
// exactly one wins, the others get 412 and Create returns objstore.ErrExist.
// Servers that do not know the header ignore it and overwrite, which would make
// every creator win. Ceph radosgw 16.2 (Pacific), the test server, honours it
// on PutObject (412 over an existing key; of 32 concurrent creators exactly one
// wins, see TestServerIfNoneMatch) but ignores it on CompleteMultipartUpload. With create=auto the store therefore probes the server
// before the first Create: it writes a probe object under the prefix (a key
// starting with ".cairn-create-probe-", which List skips), writes it again with
// If-None-Match: *, and deletes it. If the second write is refused with 412,
// Create uses the header; if it succeeds or the server rejects the header as
// not implemented, Create returns objstore.ErrNotSupported and stores nothing,
// so callers fall back to a protocol that works with Put and List.
// create=on skips the probe and trusts the header; create=off always returns
// ErrNotSupported. Create needs a single PutObject, so objects larger than
// part_size are refused with ErrNotSupported too.
//
// A retried Create whose first attempt in fact succeeded (the response was
// lost) gets 412 from its own object; Create tells this apart by a random token
// it stores in the object's metadata (x-amz-meta-cairn-create), so it does not
// report ErrExist for an object it wrote itself.
package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/cairn-backup/cairn/objstore"
)

// Defaults and limits of the URL's query parameters.
const (
	DefaultPartSize    = 16 << 20         // part_size when unset
	MinPartSize        = 5 << 20          // the S3 minimum for every part but the last
	DefaultConcurrency = 4                // concurrency when unset
	DefaultMaxAttempts = 10               // max_attempts when unset
	DefaultReadTimeout = 60 * time.Second // read_timeout when unset
)

const (
	maxParts        = 10000 // the S3 limit
	maxBackoff      = 5 * time.Second
	baseBackoff     = 100 * time.Millisecond
	probePrefix     = ".cairn-create-probe-"
	createTokenMeta = "cairn-create"
	uploadTokenMeta = "cairn-upload"
)

func init() { objstore.Register("s3", open) }

// store is the s3 backend behind objstore.Guard, which checks the store, the
// context and the key before each call.
type store struct {
	cli         *s3.Client
	httpClient  aws.HTTPClient
	bucket      string
	prefix      string // "" or ends with "/"
	partSize    int64
	concurrency int
	maxAttempts int
	createMode  string // auto, on, off

	probeMu sync.Mutex
	probed  bool
	condOK  bool
}

func parseBool(name, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("objstore s3: %s=%q: want true or false", name, v)
	}
	return b, nil
}

func open(ctx context.Context, u *url.URL) (objstore.Store, error) {
	if u.User != nil {
		return nil, fmt.Errorf("objstore s3: URL %q carries credentials; put them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a profile (AWS_PROFILE), never in the URL", u.Redacted())
	}
	if u.Host == "" || u.Port() != "" || u.Opaque != "" {
		return nil, fmt.Errorf("objstore s3: URL %q: want s3://BUCKET/PREFIX?endpoint=... (the server goes in the endpoint parameter)", u.Redacted())
	}
	s := &store{
		bucket:      u.Host,
		partSize:    DefaultPartSize,
		concurrency: DefaultConcurrency,
		maxAttempts: DefaultMaxAttempts,
		createMode:  "auto",
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if err := objstore.ValidateKey(p); err != nil {
			return nil, fmt.Errorf("objstore s3: bad prefix in URL: %w", err)
		}
		s.prefix = p + "/"
	}
	var (
		endpoint, region string
		pathStyle        bool
		readTimeout      = DefaultReadTimeout
	)
	for name, vals := range u.Query() {
		v := vals[len(vals)-1]
		var err error
		switch name {
		case "endpoint":
			eu, perr := url.Parse(v)
			if perr != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" {
				return nil, fmt.Errorf("objstore s3: endpoint=%q: want http(s)://HOST[:PORT]", v)
			}
			if eu.User != nil {
				return nil, fmt.Errorf("objstore s3: the endpoint carries credentials; put them in the environment, never in the URL")
			}
			endpoint = v
		case "region":
			region = v
		case "path_style":
			pathStyle, err = parseBool(name, v)
		case "part_size":
			s.partSize, err = strconv.ParseInt(v, 10, 64)
			if err != nil || s.partSize < MinPartSize || s.partSize > 5<<30 {
				err = fmt.Errorf("objstore s3: part_size=%q: want bytes between %d and %d", v, MinPartSize, 5<<30)
			}
		case "concurrency":
			s.concurrency, err = strconv.Atoi(v)
			if err != nil || s.concurrency < 1 || s.concurrency > 64 {
				err = fmt.Errorf("objstore s3: concurrency=%q: want 1 to 64", v)
			}
		case "max_attempts":
			s.maxAttempts, err = strconv.Atoi(v)
			if err != nil || s.maxAttempts < 1 || s.maxAttempts > 100 {
				err = fmt.Errorf("objstore s3: max_attempts=%q: want 1 to 100", v)
			}
		case "read_timeout":
			readTimeout, err = time.ParseDuration(v)
			if err != nil || readTimeout <= 0 {
				err = fmt.Errorf("objstore s3: read_timeout=%q: want a positive duration such as 30s", v)
			}
		case "create":
			s.createMode = v
			if v != "auto" && v != "on" && v != "off" {
				err = fmt.Errorf("objstore s3: create=%q: want auto, on or off", v)
			}
		default:
			err = fmt.Errorf("objstore s3: unknown URL parameter %q (known: endpoint, region, path_style, part_size, concurrency, max_attempts, read_timeout, create)", name)
		}
		if err != nil {
			return nil, err
		}
	}

	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(awshttp.NewBuildableClient().
			WithReadTimeout(readTimeout).
			WithTransportOptions(func(tr *http.Transport) {
				tr.MaxIdleConnsPerHost = 64
				tr.ResponseHeaderTimeout = readTimeout
			})),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = s.maxAttempts
				o.MaxBackoff = maxBackoff
				o.BaseDelay = baseBackoff
				// A backup must not give up on a flaky server because other
				// requests used up a shared retry budget: attempts are bounded
				// per request instead.
				o.RateLimiter = ratelimit.None
				o.Retryables = append(slices.Clone(o.Retryables), retry.IsErrorRetryableFunc(extraRetryable))
			})
		}),
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("objstore s3: loading the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	// The loader may have added a CA bundle (AWS_CA_BUNDLE) to the buildable
	// client; freeze what it built, so that Close can close its connections.
	if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		cfg.HTTPClient = bc.Freeze()
	}
	s.httpClient = cfg.HTTPClient
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("objstore s3: no credentials from the AWS default chain (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE): %w", err)
	}
	s.cli = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = pathStyle
	})
	return objstore.Guard("s3", s, nil), nil
}

// extraRetryable retries what the SDK's defaults do not: a response cut off
// mid-body (a dropped connection after the headers), and the 409 that AWS
// returns when a conditional write races another write in flight.
func extraRetryable(err error) aws.Ternary {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return aws.TrueTernary
	}
	if apiCode(err) == "ConditionalRequestConflict" {
		return aws.TrueTernary
	}
	return aws.UnknownTernary
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// isNotFound reports whether err says the object does not exist (and not that
// the bucket does not).
func isNotFound(err error) bool {
	code := apiCode(err)
	if code == "NoSuchBucket" {
		return false
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	return errors.As(err, &nsk) || errors.As(err, &nf) || code == "NoSuchKey" || code == "NotFound" || httpStatus(err) == http.StatusNotFound
}

func (s *store) err(op, key string, err error) error {
	if isNotFound(err) {
		err = fmt.Errorf("%w: %w", objstore.ErrNotExist, err)
	} else if apiCode(err) == "NoSuchBucket" {
		err = fmt.Errorf("bucket %q does not exist: %w", s.bucket, err)
	}
	return &objstore.OpError{Backend: "s3", Op: op, Key: key, Err: err}
}

func token() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// readFull reads up to len(buf) bytes, returning how many and whether r is
// at its end (io.EOF seen).
func readFull(r io.Reader, buf []byte) (int, bool, error) {
	n, err := io.ReadFull(r, buf)
	switch err {
	case nil:
		return n, false, nil
	case io.EOF, io.ErrUnexpectedEOF:
		return n, true, nil
	}
	return n, false, fmt.Errorf("reading the object: %w", err)
}

func (s *store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, "put", key, r, size, false)
}

func (s *store) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	if size > s.partSize {
		return s.err("create", key, fmt.Errorf("%w: conditional create of objects larger than part_size (%d bytes) needs a multipart upload, which the s3 backend cannot make conditional", objstore.ErrNotSupported, s.partSize))
	}
	ok, err := s.conditionalSupported(ctx)
	if err != nil {
		return s.err("create", key, fmt.Errorf("probing whether the server honours If-None-Match: %w", err))
	}
	if !ok {
		return s.err("create", key, fmt.Errorf("%w: the server does not honour If-None-Match: * on PutObject (create=%s)", objstore.ErrNotSupported, s.createMode))
	}
	return s.put(ctx, "create", key, r, size, true)
}

// put uploads r in one PutObject when it fits in a part, else part by part.
// Under objstore.Guard, r fails once ctx is done.
func (s *store) put(ctx context.Context, op, key string, r io.Reader, size int64, excl bool) error {
	if br := objstore.InMemory(r, size); br != nil && size <= s.partSize {
		// The caller's bytes (a backup's sealed block): no copy, and no
		// garbage of a part's size per object.
		return s.putObject(ctx, op, key, br, size, excl)
	}
	want := s.partSize
	if size >= 0 && size <= s.partSize {
		want = size
	}
	var (
		buf []byte
		n   int
		eof bool
		err error
	)
	if size >= 0 {
		buf = make([]byte, want)
		n, eof, err = readFull(r, buf)
	} else {
		// Unknown size: grow with what arrives rather than allocate a whole
		// part for what is often a small object.
		buf, err = io.ReadAll(io.LimitReader(r, want))
		n, eof = len(buf), int64(len(buf)) < want
		if err != nil {
			err = fmt.Errorf("reading the object: %w", err)
		}
	}
	if err != nil {
		return s.err(op, key, err)
	}
	buf = buf[:n]
	if size >= 0 && int64(n) < want {
		return s.err(op, key, fmt.Errorf("reader ended after %d of the announced %d bytes: %w", n, size, io.ErrUnexpectedEOF))
	}
	if size >= 0 && size == int64(n) && !eof {
		if err := objstore.ExpectEOF(r, size); err != nil {
			return s.err(op, key, err)
		}
		eof = true
	}
	if eof {
		return s.putObject(ctx, op, key, bytes.NewReader(buf), int64(len(buf)), excl)
	}
	if excl {
		return s.err(op, key, fmt.Errorf("%w: conditional create of objects larger than part_size (%d bytes) needs a multipart upload, which the s3 backend cannot make conditional", objstore.ErrNotSupported, s.partSize))
	}
	return s.multipart(ctx, key, buf, r, size)
}

// putObject sends body, n bytes from its current offset, in one PutObject;
// the SDK seeks back to that offset to retry.
func (s *store) putObject(ctx context.Context, op, key string, body io.ReadSeeker, n int64, excl bool) error {
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           aws.String(s.prefix + key),
		Body:          body,
		ContentLength: aws.Int64(n),
	}
	var tok string
	if excl {
		tok = token()
		in.IfNoneMatch = aws.String("*")
		in.Metadata = map[string]string{createTokenMeta: tok}
	}
	_, err := s.cli.PutObject(ctx, in)
	if err == nil {
		return nil
	}
	if excl && isPreconditionFailed(err) {
		// Did an earlier attempt of this very call create it?
		head, herr := s.cli.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: in.Key})
		if herr == nil && head.Metadata[createTokenMeta] == tok {
			return nil
		}
		return s.err(op, key, fmt.Errorf("%w: %w", objstore.ErrExist, err))
	}
	if excl && isNotImplemented(err) {
		return s.err(op, key, fmt.Errorf("%w: the server rejects If-None-Match: %w", objstore.ErrNotSupported, err))
	}
	return s.err(op, key, err)
}

func isPreconditionFailed(err error) bool {
	return httpStatus(err) == http.StatusPreconditionFailed || apiCode(err) == "PreconditionFailed"
}

func isNotImplemented(err error) bool {
	return httpStatus(err) == http.StatusNotImplemented || apiCode(err) == "NotImplemented"
}

// conditionalSupported reports whether Create may rely on If-None-Match,
// probing the server once in create=auto mode.
func (s *store) conditionalSupported(ctx context.Context) (bool, error) {
	switch s.createMode {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	if s.probed {
		return s.condOK, nil
	}
	key := aws.String(s.prefix + probePrefix + token())
	put := func(cond bool) error {
		in := &s3.PutObjectInput{Bucket: &s.bucket, Key: key, Body: bytes.NewReader([]byte("probe")), ContentLength: aws.Int64(5)}
		if cond {
			in.IfNoneMatch = aws.String("*")
		}
		_, err := s.cli.PutObject(ctx, in)
		return err
	}
	if err := put(false); err != nil {
		return false, err
	}
	defer s.cli.DeleteObject(context.WithoutCancel(ctx), &s3.DeleteObjectInput{Bucket: &s.bucket, Key: key})
	err := put(true)
	switch {
	case err == nil:
		s.condOK = false // ignored the header and overwrote
	case isPreconditionFailed(err):
		s.condOK = true
	case isNotImplemented(err) || httpStatus(err) == http.StatusBadRequest:
		s.condOK = false
	default:
		return false, err
	}
	s.probed = true
	return s.condOK, nil
}

// multipart uploads an object part by part: first is the first part, already
// read; the rest comes from r. At most s.concurrency parts are in flight and
// s.concurrency+1 part buffers exist. On any failure the upload is aborted so
// that no parts are left behind.
func (s *store) multipart(ctx context.Context, key string, first []byte, r io.Reader, size int64) (err error) {
	partSize := s.partSize
	if size > 0 {
		// The first part, already read, has the configured size; the others
		// grow when the object would otherwise need more than maxParts.
		if need := (size + maxParts - 2) / (maxParts - 1); need > partSize {
			partSize = (need + 1<<20 - 1) &^ (1<<20 - 1)
		}
	}
	fullKey := aws.String(s.prefix + key)
	tok := token()
	created, err := s.cli.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: &s.bucket, Key: fullKey, Metadata: map[string]string{uploadTokenMeta: tok},
	})
	if err != nil {
		return s.err("put", key, fmt.Errorf("CreateMultipartUpload: %w", err))
	}
	uploadID := created.UploadId
	defer func() {
		if err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_, aerr := s.cli.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: fullKey, UploadId: uploadID})
			if aerr != nil && !isNotFound(aerr) && apiCode(aerr) != "NoSuchUpload" {
				err = fmt.Errorf("%w; and aborting the multipart upload %s failed, leaving parts to a lifecycle rule: %v", err, aws.ToString(uploadID), aerr)
			}
		}
	}()

	uctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		parts []types.CompletedPart
		free  = make(chan []byte, s.concurrency+1)
		nbufs = 1
		total = int64(len(first))
	)
	upload := func(num int32, buf []byte) {
		defer wg.Done()
		out, err := s.cli.UploadPart(uctx, &s3.UploadPartInput{
			Bucket: &s.bucket, Key: fullKey, UploadId: uploadID, PartNumber: aws.Int32(num),
			Body: bytes.NewReader(buf), ContentLength: aws.Int64(int64(len(buf))),
		})
		if err != nil {
			cancel(fmt.Errorf("UploadPart %d: %w", num, err))
			return
		}
		mu.Lock()
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		mu.Unlock()
		free <- buf[:cap(buf)]
	}
	wg.Add(1)
	go upload(1, first)
	var readErr error
	for num := int32(2); ; num++ {
		if uctx.Err() != nil {
			break // an upload failed: stop reading
		}
		want := partSize
		if size >= 0 {
			want = min(partSize, size-total)
			if want == 0 {
				readErr = objstore.ExpectEOF(r, size)
				break
			}
		}
		var buf []byte
		select {
		case buf = <-free:
		default:
			if nbufs <= s.concurrency {
				buf = make([]byte, partSize)
				nbufs++
			} else {
				select {
				case buf = <-free:
				case <-uctx.Done():
				}
			}
		}
		if buf == nil {
			break // an upload failed
		}
		n, eof, err := readFull(r, buf[:want])
		total += int64(n)
		if err != nil {
			readErr = err
			break
		}
		if size >= 0 && int64(n) < want {
			readErr = fmt.Errorf("reader ended after %d of the announced %d bytes: %w", total, size, io.ErrUnexpectedEOF)
			break
		}
		if n > 0 {
			if num > maxParts {
				readErr = fmt.Errorf("object of unknown size exceeds %d parts of %d bytes; raise part_size", maxParts, partSize)
				break
			}
			wg.Add(1)
			go upload(num, buf[:n])
		}
		if eof {
			break
		}
	}
	if readErr != nil {
		cancel(readErr)
	}
	wg.Wait()
	if cause := context.Cause(uctx); cause != nil && uctx.Err() != nil {
		if ctx.Err() != nil {
			cause = ctx.Err()
		}
		return s.err("put", key, cause)
	}
	slices.SortFunc(parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	_, err = s.cli.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: fullKey, UploadId: uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil && apiCode(err) == "NoSuchUpload" {
		// A retried Complete whose first attempt succeeded finds no upload.
		head, herr := s.cli.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: fullKey})
		if herr == nil && head.Metadata[uploadTokenMeta] == tok {
			return nil
		}
	}
	if err != nil {
		return s.err("put", key, fmt.Errorf("CompleteMultipartUpload: %w", err))
	}
	return nil
}

func (s *store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if length == 0 {
		if _, err := s.stat(ctx, "get", key); err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	end := int64(-1) // exclusive; -1: the object's end
	if length > 0 {
		end = offset + length
	}
	for attempt := 1; ; attempt++ {
		g := &getReader{s: s, ctx: ctx, key: key, pos: offset, end: end}
		if err := g.request(); err != nil {
			if httpStatus(err) == http.StatusRequestedRangeNotSatisfiable || apiCode(err) == "InvalidRange" {
				return io.NopCloser(bytes.NewReader(nil)), nil // the object exists; the range starts past its end
			}
			return nil, s.err("get", key, err)
		}
		if g.end < 0 || g.end-g.pos > smallGet {
			return g, nil
		}
		// A small body is read here, so that when it is replaced while a
		// broken connection is resumed, the read can start over instead of
		// failing after handing out part of it.
		b, err := io.ReadAll(g)
		g.Close()
		if errors.Is(err, errReplaced) && attempt < s.maxAttempts {
			continue
		}
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
}

// smallGet is the size up to which Get reads the body before returning.
const smallGet = 1 << 20

// errReplaced says that an object was replaced while a Get was reading it.
var errReplaced = errors.New("the object was replaced while it was being read")

// getReader is an object's body that resumes where it broke off: when the
// connection fails mid-body, it asks again for the rest of the range, of the
// same version of the object (If-Match on the ETag), up to max_attempts times.
// If the object was replaced meanwhile, reading fails with errReplaced rather
// than splice two versions; Get starts small objects over instead.
type getReader struct {
	s        *store
	ctx      context.Context
	key      string
	etag     *string
	body     io.ReadCloser
	pos, end int64 // next byte to read; end exclusive, -1 until known
	resumes  int
}

func (g *getReader) request() error {
	in := &s3.GetObjectInput{Bucket: &g.s.bucket, Key: aws.String(g.s.prefix + g.key), IfMatch: g.etag}
	if g.pos > 0 || g.end >= 0 {
		rng := "bytes=" + strconv.FormatInt(g.pos, 10) + "-"
		if g.end >= 0 {
			rng += strconv.FormatInt(g.end-1, 10)
		}
		in.Range = &rng
	}
	out, err := g.s.cli.GetObject(g.ctx, in)
	if err != nil {
		return err
	}
	g.body = out.Body
	if g.etag == nil {
		g.etag = out.ETag
	}
	if out.ContentLength != nil {
		// Fix the end so that resumed requests ask for exactly the rest.
		g.end = g.pos + *out.ContentLength
	}
	return nil
}

func (g *getReader) Read(p []byte) (int, error) {
	for {
		if g.end >= 0 && g.pos >= g.end {
			return 0, io.EOF
		}
		if g.body == nil {
			if err := g.request(); err != nil {
				if isPreconditionFailed(err) {
					err = fmt.Errorf("%w: %w", errReplaced, err)
				}
				return 0, g.s.err("get", g.key, fmt.Errorf("resuming at byte %d: %w", g.pos, err))
			}
		}
		n, err := g.body.Read(p)
		g.pos += int64(n)
		if err == nil || (err == io.EOF && (g.end < 0 || g.pos >= g.end)) {
			return n, err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		g.body.Close()
		g.body = nil
		if g.ctx.Err() != nil || g.resumes+1 >= g.s.maxAttempts {
			return n, g.s.err("get", g.key, fmt.Errorf("reading the body at byte %d: %w", g.pos, err))
		}
		g.resumes++
		if n > 0 {
			return n, nil
		}
		select {
		case <-time.After(time.Duration(g.resumes) * 100 * time.Millisecond):
		case <-g.ctx.Done():
			return 0, g.s.err("get", g.key, g.ctx.Err())
		}
	}
}

func (g *getReader) Close() error {
	if g.body != nil {
		err := g.body.Close()
		g.body = nil
		return err
	}
	return nil
}

func (s *store) stat(ctx context.Context, op, key string) (objstore.ObjectInfo, error) {
	out, err := s.cli.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.prefix + key)})
	if err != nil {
		return objstore.ObjectInfo{}, s.err(op, key, err)
	}
	return objstore.ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

func (s *store) Stat(ctx context.Context, key string) (objstore.ObjectInfo, error) {
	return s.stat(ctx, "stat", key)
}

func (s *store) Delete(ctx context.Context, key string) error {
	_, err := s.cli.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(s.prefix + key)})
	if err != nil && !isNotFound(err) {
		return s.err("delete", key, err)
	}
	return nil
}

func (s *store) List(ctx context.Context, prefix string) iter.Seq2[objstore.ObjectInfo, error] {
	return func(yield func(objstore.ObjectInfo, error) bool) {
		p := s3.NewListObjectsV2Paginator(s.cli, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.prefix + prefix)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(objstore.ObjectInfo{}, s.err("list", prefix, err))
				return
			}
			for _, o := range page.Contents {
				key := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
				if key == "" || strings.HasPrefix(key, probePrefix) {
					continue
				}
				if !yield(objstore.ObjectInfo{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}, nil) {
					return
				}
			}
		}
	}
}

func (s *store) Close() error {
	if c, ok := s.httpClient.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return nil
}
