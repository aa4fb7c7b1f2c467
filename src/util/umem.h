/* SPDX-License-Identifier: MIT */
/*
 * umem: uhmm's own memory (docs/ARCHITECTURE.md, "uhmm's own memory").
 *
 * Everything uhmm allocates for itself -- contexts, ranges and the range
 * table, notifiers, copy batches, simdev and dmirror state, the warm-pool
 * reserve, device memory, bounce and zero buffers, thread stacks -- comes
 * from here, never from the application's malloc heap nor from an
 * mmap(NULL, ...) of its own.  Why:
 *
 *  - An application may register any span of its heap (uhmm_register).  If
 *    uhmm's bookkeeping lived in that heap, uhmm would fault on its own
 *    objects while holding the page they sit on (a hang), and a heap
 *    overflow of the application could scribble on uhmm's tables.
 *  - A small mmap(NULL, ...) goes to the first gap the kernel finds, which
 *    may be a hole the application just punched into its own buffer (and
 *    means to map again with MAP_FIXED_NOREPLACE, or expects to stay
 *    empty).
 *
 * So umem reserves address space in large PROT_NONE chunks (UMEM_CHUNK, at
 * least 1 GiB: the kernel only places a mapping in a gap that fits it
 * whole, so never in a small hole of the application's), and makes pages
 * accessible only inside those reservations, with mmap(MAP_FIXED) over its
 * own PROT_NONE pages.  A chunk that runs out is followed by another; there
 * is no fixed limit.  Two carvers share the reservations:
 *
 *  (a) a small-object heap (size classes up to 16 KiB, one lock each) in
 *      64 KiB slabs, each ending in a PROT_NONE guard page; larger objects
 *      are page mappings (b) with a header page;
 *  (b) page-aligned mappings of any size with an alignment (2 MiB for the
 *      warm pool and simdev memory), a PROT_NONE guard page before and
 *      after each, optionally MAP_NORESERVE or MAP_POPULATE, read-only or
 *      read-write.  Unmapping puts the pages back to PROT_NONE (the memory
 *      is freed, the address space stays reserved for reuse).
 *
 * Why not a Debian allocator: jemalloc, tcmalloc and mimalloc replace the
 * process's malloc (they are meant to be the application's heap, chosen by
 * the application), and glibc's malloc arenas cannot be confined to an
 * address range; none offers a second, private heap in address space the
 * library reserved for itself that coexists with whatever malloc the
 * application uses.  A library-private heap of a few size classes is small.
 *
 * All calls are thread safe.  They never touch memory uhmm manages: a
 * reservation of umem's cannot be registered (uhmm__umem_owns() is checked
 * by uhmm_register), so a SIGBUS of uhmm's (synchronous, raised only by an
 * access to managed memory) never interrupts a thread inside umem, and the
 * SIGBUS handler may call umem (docs/ARCHITECTURE.md, "What the handler may
 * block on").  umem is not async-signal safe in general.
 *
 * Exported from libuhmm with default visibility under uhmm__ names so that
 * libuhmm-dmirror shares the one heap; not part of the API.
 */
#ifndef UHMM_UTIL_UMEM_H
#define UHMM_UTIL_UMEM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UMEM_EXPORT __attribute__((visibility("default")))

/* The small-object heap: malloc/calloc/realloc/free/strdup equivalents
 * (16-byte alignment; NULL when out of memory; free(NULL) is a no-op). */
UMEM_EXPORT void *uhmm__umem_malloc(size_t size);
UMEM_EXPORT void *uhmm__umem_calloc(size_t n, size_t size);
UMEM_EXPORT void *uhmm__umem_realloc(void *p, size_t size);
UMEM_EXPORT void uhmm__umem_free(void *p);
UMEM_EXPORT char *uhmm__umem_strdup(const char *s);

/* uhmm__umem_map flags. */
#define UMEM_RDONLY 0x1u    /* PROT_READ (zero-filled for good) */
#define UMEM_NORESERVE 0x2u /* MAP_NORESERVE: no commit charge */
#define UMEM_POPULATE 0x4u  /* MAP_POPULATE: fault the pages in now */

/*
 * Zeroed pages, len rounded up to 4 KiB, at an address aligned to align (a
 * power of two; 0 or anything below 4 KiB means 4 KiB).  NULL when the
 * address space or the memory is exhausted (errno says which).
 */
UMEM_EXPORT void *uhmm__umem_map(size_t len, size_t align, unsigned flags);
/*
 * A shared mapping of @len bytes of file @fd from offset 0, read-write, at
 * an address inside umem's reservations (never in a hole the application
 * left in its own mappings, as mmap(NULL, ...) may choose).  Not counted
 * in uhmm__umem_bytes.  NULL and errno as mmap's.  Given back with
 * uhmm__umem_unmap.
 */
UMEM_EXPORT void *uhmm__umem_map_file(size_t len, int fd);
/* Give back what uhmm__umem_map(len, ...) returned (the same len). */
UMEM_EXPORT void uhmm__umem_unmap(void *p, size_t len);

/* Does [addr, addr + len) meet any reservation of umem's? */
UMEM_EXPORT bool uhmm__umem_owns(uintptr_t addr, size_t len);

/* Bytes of private memory in use: heap slabs and large objects, and page
 * mappings made without UMEM_NORESERVE (accessible, charged; touched or
 * not).  Not the reservations, nor UMEM_NORESERVE mappings (the warm-pool
 * reserve, simdev memory, thread stacks: memory only where touched). */
UMEM_EXPORT uint64_t uhmm__umem_bytes(void);

/*
 * pthread_create with a stack from umem (8 MiB, MAP_NORESERVE: touched
 * pages only, a guard page below), so that glibc maps no stack of its own.
 * Threads created so must be joined with uhmm__umem_thread_join, which
 * gives the stack back.  Returns 0 or an errno value, as pthread_create.
 */
UMEM_EXPORT int uhmm__umem_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);
UMEM_EXPORT int uhmm__umem_thread_join(pthread_t t, void **ret);

/*
 * /proc/self/maps (or any text file) line by line without stdio, whose
 * FILE buffers come from malloc.  Lines longer than the buffer are cut.
 */
struct uhmm_lines {
	int fd;
	size_t pos, len;
	char buf[4096];
};
UMEM_EXPORT int uhmm__lines_open(struct uhmm_lines *l, const char *path);
/* Copy the next line (with its '\n' if it fit) into line[cap]; false at
 * the end. */
UMEM_EXPORT bool uhmm__lines_next(struct uhmm_lines *l, char *line, size_t cap);
UMEM_EXPORT void uhmm__lines_close(struct uhmm_lines *l);

/* An in-place sort (heapsort): glibc's qsort takes malloc'd scratch for
 * arrays above 1 KiB. */
UMEM_EXPORT void uhmm__sort(void *base, size_t n, size_t size,
			    int (*cmp)(const void *, const void *));

#endif /* UHMM_UTIL_UMEM_H */
