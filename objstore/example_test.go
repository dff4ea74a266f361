package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/cairn-backup/cairn/objstore"
)

// Open a store by URL, write an object, read part of it back, and list.
// mem:// keeps objects in memory; file:///path and, with objstore/s3 imported,
// s3://bucket/prefix?endpoint=... work the same way.
func ExampleOpen() {
	ctx := context.Background()
	s, err := objstore.Open(ctx, "mem://example")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	if err := s.Put(ctx, "greetings/hello", strings.NewReader("hello, world"), 12); err != nil {
		log.Fatal(err)
	}
	rc, err := s.Get(ctx, "greetings/hello", 7, -1) // from byte 7 to the end
	if err != nil {
		log.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(b))

	for info, err := range s.List(ctx, "greetings/") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(info.Key, info.Size)
	}

	err = s.Create(ctx, "greetings/hello", strings.NewReader("again"), 5)
	fmt.Println(errors.Is(err, objstore.ErrExist))

	_, err = s.Stat(ctx, "greetings/goodbye")
	fmt.Println(errors.Is(err, objstore.ErrNotExist))
	// Output:
	// world
	// greetings/hello 12
	// true
	// true
}
