package objstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/objstore"
	"github.com/cairn-backup/cairn/objstore/storetest"
)

func TestMemConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store {
		s, err := objstore.Open(t.Context(), "mem://")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestMemNamedShare(t *testing.T) {
	ctx := t.Context()
	a, err := objstore.Open(ctx, "mem://"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, "k", strings.NewReader("v"), 1); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := a.Put(ctx, "k", strings.NewReader("v"), 1); err == nil {
		t.Error("Put after Close: no error")
	}
	b, err := objstore.Open(ctx, "mem://"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if info, err := b.Stat(ctx, "k"); err != nil || info.Size != 1 {
		t.Fatalf("second handle: Stat = %+v, %v", info, err)
	}
	c, err := objstore.Open(ctx, "mem://other-"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Stat(ctx, "k"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("another name shares data: Stat = %v", err)
	}
	for _, bad := range []string{"mem://name/path", "mem://user@name", "mem://name?x=1", "mem://name:1"} {
		if _, err := objstore.Open(ctx, bad); err == nil {
			t.Errorf("Open(%q): no error", bad)
		}
	}
}
