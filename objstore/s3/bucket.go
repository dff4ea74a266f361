package s3

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// EnsureBucket implements objstore.Bucketer: nil when the bucket exists;
// otherwise, with create, it creates it, and without, an error naming it.
func (s *store) EnsureBucket(ctx context.Context, create bool) error {
	_, err := s.cli.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err == nil {
		return nil
	}
	if !isMissingBucket(err) {
		return fmt.Errorf("objstore s3: checking bucket %q: %w", s.bucket, err)
	}
	if !create {
		return fmt.Errorf("objstore s3: bucket %q does not exist: create it, or run init with --create-bucket", s.bucket)
	}
	in := &s3.CreateBucketInput{Bucket: &s.bucket}
	// AWS wants the region as the location constraint outside us-east-1;
	// other servers (radosgw's zone groups, Garage) may refuse one they do
	// not know, so the bucket is then created without.
	if region := s.cli.Options().Region; region != "" && region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(region)}
	}
	_, err = s.cli.CreateBucket(ctx, in)
	if err != nil && in.CreateBucketConfiguration != nil && apiCode(err) == "InvalidLocationConstraint" {
		in.CreateBucketConfiguration = nil
		_, err = s.cli.CreateBucket(ctx, in)
	}
	if err != nil {
		return fmt.Errorf("objstore s3: creating bucket %q: %w", s.bucket, err)
	}
	return nil
}

// isMissingBucket reports whether a HeadBucket error says the bucket does
// not exist (HEAD responses have no body, so only the status tells).
func isMissingBucket(err error) bool {
	var nb *types.NotFound
	var nsb *types.NoSuchBucket
	return errors.As(err, &nb) || errors.As(err, &nsb) || apiCode(err) == "NoSuchBucket" || apiCode(err) == "NotFound" || httpStatus(err) == 404
}
