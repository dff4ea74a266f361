package s3_test

import (
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
)

// TestOpenErrors checks that bad URLs fail with a message saying what is
// wrong, before any request.
func TestOpenErrors(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	for _, c := range []struct{ url, want string }{
		{"s3://AKID:secret@bucket/p", "never in the URL"},
		{"s3://AKID@bucket/p", "never in the URL"},
		{"s3://bucket/p?endpoint=http://AKID:secret@127.0.0.1:7480", "never in the URL"},
		{"s3:///prefix", "want s3://BUCKET"},
		{"s3://bucket:9000/p", "endpoint parameter"},
		{"s3://bucket/p?endpoint=127.0.0.1:7480", "endpoint="},
		{"s3://bucket/p?endpoint=ftp://host", "endpoint="},
		{"s3://bucket/p?path_style=maybe", "path_style"},
		{"s3://bucket/p?part_size=1024", "part_size"},
		{"s3://bucket/p?part_size=lots", "part_size"},
		{"s3://bucket/p?concurrency=0", "concurrency"},
		{"s3://bucket/p?max_attempts=-1", "max_attempts"},
		{"s3://bucket/p?read_timeout=soon", "read_timeout"},
		{"s3://bucket/p?create=maybe", "create"},
		{"s3://bucket/p?pathstyle=true", `unknown URL parameter "pathstyle"`},
		{"s3://bucket/a//b", "bad prefix"},
		{"s3://bucket/a/../b", "bad prefix"},
	} {
		s, err := objstore.Open(t.Context(), c.url)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q): no error", c.url)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %q, want it to mention %q", c.url, err, c.want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) = %q shows the secret", c.url, err)
		}
	}
	s, err := objstore.Open(t.Context(), "s3://bucket/some/prefix/?endpoint=http://127.0.0.1:1&region=r&path_style=true&part_size=5242880&concurrency=2&max_attempts=3&read_timeout=5s&create=off")
	if err != nil {
		t.Fatalf("a good URL: %v", err)
	}
	s.Close()
}
