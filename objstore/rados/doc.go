// Package rados is the objstore backend that keeps a store directly in a Ceph
// RADOS pool, through librados (go-ceph). It is built only with the build tag
// ceph (with Debian's Ceph Pacific: -tags "ceph pacific"); importing it then
// registers the rados:// scheme with objstore.Open:
//
//	import _ "github.com/cairn-backup/cairn/objstore/rados"
//
//	s, err := objstore.Open(ctx, "rados://backups/cairn/repo1")
//
// The URL names the pool and an optional key prefix. Query parameters, all
// optional:
//
//   - namespace: the base of the RADOS namespaces of the store's objects
//     (default "cairn"): a key lives in NAMESPACE/FIRST-SEGMENT (the key up to
//     its first slash, so data/ab/cd is in cairn/data), and large objects'
//     parts in NAMESPACE.parts.
//   - part_size: the largest object written in one operation, and the size
//     of the parts of larger objects (default 32 MiB, 64 KiB..64 MiB). It is
//     lowered to what the OSDs accept (osd_max_object_size and
//     osd_max_write_size, asked from the monitors when the store opens).
//   - conf: the ceph.conf path (default CEPH_CONF, else /etc/ceph/ceph.conf).
//   - id: the client ID, without "client." (default from CEPH_ARGS, else admin).
//   - keyring: a keyring path overriding the configuration's.
//   - timeout: connect and per-operation timeout (default 60s).
//
// The connection follows the standard Ceph environment (CEPH_CONF, CEPH_ARGS
// such as "--id backup --keyring /etc/ceph/keyring"). Keys are never part of
// the URL: one with user information is rejected.
//
// # Object format
//
// A key maps to the object PREFIX/KEY in the namespace NAMESPACE/FIRST-SEGMENT.
// Every object
// starts with a 24-byte header: "CRD1", a kind byte, three zero bytes, the
// logical size and the write time (Unix nanoseconds, the writer's clock), both
// big-endian uint64. Objects up to part_size hold their bytes after the
// header and are written with one write-full operation, which RADOS applies
// atomically: readers see the old object or the new one.
//
// RADOS has no rename, so a larger object is written as parts: objects of at
// most part_size bytes in the namespace NAMESPACE.parts, named after the key,
// a random 128-bit token and the part number, each written in 4 MiB
// operations. Only when every part is stored is the head written, in one
// write-full: the header of kind "parts", the part size and the token. The
// head is the commit point: until it is written readers see the old object,
// afterwards the new one. The parts of the replaced object are deleted after
// the new head is written, so a Get that streams a large object while it is
// replaced or deleted fails with an error saying so rather than returning a
// mix. A crash in the middle of a large Put, or a failed best-effort deletion
// of old parts, leaves parts that no head names; they hold no data a reader
// can reach and can be removed with `rados -p POOL -N NAMESPACE.parts rm`
// (their names start with the object's name and a 0x1f byte). Memory per Put
// is at most part_size (small objects are buffered whole; parts are streamed
// in 4 MiB chunks).
//
// Create adds an exclusive-create step to the head's write-full operation,
// so of concurrent Creates exactly one wins and the others get
// objstore.ErrExist; librados resends a lost request with the same request ID,
// which the OSD recognises, so a retry never reports ErrExist for its own
// object.
//
// Get reads the head, then the header again together with the requested
// bytes in one read operation (starting over if the header changed between
// the two reads); large objects are streamed from their parts 4 MiB at a
// time. Stat reads only the header.
//
// # Listing cost
//
// RADOS lists a namespace unsorted and cannot filter by name prefix. List
// therefore walks a whole namespace (the OSDs scan the pool's placement
// groups and return only that namespace's names), keeps the names under the
// prefix in memory, sorts them, and then reads each one's header (16 at a
// time) for its size and time: O(objects in the namespace) names transferred
// plus one small read per listed object. Because the first key segment picks
// the namespace, a prefix with a slash walks only its segment's objects:
// listing a repository's versions/ or index/ does not transfer the names of
// its data/ objects. A prefix without a slash (List("") included) may span
// segments and walks every namespace of the pool, RBD images' objects
// included when the pool is shared. Several stores may share a namespace
// base with different prefixes, but each List walks the others' objects of
// its namespaces too. Objects in the namespaces that this backend did not
// write are skipped by List and reported as errors by Get and Stat.
//
// Close must not be called while operations are in flight.
package rados
