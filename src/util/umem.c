/* SPDX-License-Identifier: MIT */
/*
 * umem.c - uhmm's own memory: reservations, page mappings, the small-object
 * heap, thread stacks (the why is in umem.h and docs/ARCHITECTURE.md).
 *
 * Locks, in the order they may nest: va_lock (page mappings' free list) ->
 * a size class's lock -> slab_lock (the heap's bump pointer).  tstack_lock
 * (thread stacks) nests nothing.  None is held while touching anything but
 * umem's own pages.  All are taken around fork() (umem_prepare).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/umem.h"

#define PG 4096ul
#define UMEM_CHUNK (1ul << 30)   /* one reservation, at least */
#define SLAB (64ul << 10)        /* heap slab: 15 pages of objects, 1 guard */
#define SLAB_HDR 64ul            /* slab header; objects start past it */
#define MAX_CLASS 16384ul
#define MAGIC_SLAB 0x756d656d536c6162ull  /* "umemSlab" */
#define MAGIC_LARGE 0x756d656d4c617267ull /* "umemLarg" */

static inline uintptr_t align_up(uintptr_t x, uintptr_t a)
{
	return (x + a - 1) & ~(a - 1);
}

static _Atomic uint64_t used_bytes;

UMEM_EXPORT uint64_t uhmm__umem_bytes(void)
{
	return atomic_load_explicit(&used_bytes, memory_order_relaxed);
}

/* ---- reservations ---------------------------------------------------------
 * Each starts with a header page (read-write) linking it into a push-only
 * list, so uhmm__umem_owns() needs no lock and no allocation. */

struct resv {
	uintptr_t base;
	size_t len;
	struct resv *next;
};

static struct resv *_Atomic resv_list;

static int commit(uintptr_t a, size_t len, int prot, int extra, int fd)
{
	void *p = fd < 0 ? mmap((void *)a, len, prot,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | extra, -1, 0)
			 : mmap((void *)a, len, prot, MAP_SHARED | MAP_FIXED | extra, fd, 0);
	return p == MAP_FAILED ? -1 : 0;
}

/* Back to reserved: the pages are freed, the addresses stay ours. */
static void decommit(uintptr_t a, size_t len)
{
	if (mmap((void *)a, len, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
		/* (Out of VMAs.)  Still give the memory back. */
		madvise((void *)a, len, MADV_DONTNEED);
		mprotect((void *)a, len, PROT_NONE);
	}
}

/* Reserve at least len bytes; the usable part starts one page in. */
static struct resv *reserve(size_t len)
{
	len = len < UMEM_CHUNK ? UMEM_CHUNK : align_up(len, UMEM_CHUNK);
	void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (commit((uintptr_t)p, PG, PROT_READ | PROT_WRITE, 0, -1)) {
		munmap(p, len);
		return NULL;
	}
	struct resv *r = p;
	r->base = (uintptr_t)p;
	r->len = len;
	r->next = atomic_load(&resv_list);
	while (!atomic_compare_exchange_weak(&resv_list, &r->next, r))
		;
	atomic_fetch_add_explicit(&used_bytes, PG, memory_order_relaxed);
	return r;
}

UMEM_EXPORT bool uhmm__umem_owns(uintptr_t addr, size_t len)
{
	uintptr_t end = addr + len < addr ? UINTPTR_MAX : addr + len;
	for (struct resv *r = atomic_load(&resv_list); r; r = r->next)
		if (addr < r->base + r->len && r->base < end)
			return true;
	return false;
}

/* ---- the small-object heap -------------------------------------------- */

struct slab_hdr {
	uint64_t magic;
	uint32_t cls;
	uint32_t pad;
	size_t large_len; /* MAGIC_LARGE: the mapping's length */
};

static const uint32_t class_size[] = {
	16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
	3072, 4096, 6144, 8192, 12288, 16384,
};
#define NCLASS (sizeof(class_size) / sizeof(class_size[0]))

struct sclass {
	pthread_mutex_t lock;
	void *free;          /* freed objects, linked through their first word */
	uintptr_t bump, end; /* the class's current slab */
};

static struct sclass classes[NCLASS] = {
	[0 ... NCLASS - 1] = { .lock = PTHREAD_MUTEX_INITIALIZER },
};

static pthread_mutex_t slab_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t slab_next, slab_end;

/* A new slab for class c (its header written), or 0. */
static uintptr_t slab_new(uint32_t c)
{
	pthread_mutex_lock(&slab_lock);
	if (slab_next + SLAB > slab_end) {
		struct resv *r = reserve(UMEM_CHUNK);
		if (!r) {
			pthread_mutex_unlock(&slab_lock);
			return 0;
		}
		slab_next = align_up(r->base + PG, SLAB);
		slab_end = r->base + r->len;
	}
	uintptr_t s = slab_next;
	/* The last page stays PROT_NONE: a guard between slabs. */
	if (commit(s, SLAB - PG, PROT_READ | PROT_WRITE, 0, -1)) {
		pthread_mutex_unlock(&slab_lock);
		return 0;
	}
	slab_next += SLAB;
	pthread_mutex_unlock(&slab_lock);
	atomic_fetch_add_explicit(&used_bytes, SLAB - PG, memory_order_relaxed);
	struct slab_hdr *h = (struct slab_hdr *)s;
	h->magic = MAGIC_SLAB;
	h->cls = c;
	return s;
}

static uint32_t class_of(size_t size)
{
	uint32_t lo = 0, hi = NCLASS - 1;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (class_size[mid] >= size)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void *large_alloc(size_t size)
{
	if (size > SIZE_MAX - 2 * SLAB) {
		errno = ENOMEM;
		return NULL;
	}
	size_t len = PG + size;
	char *base = uhmm__umem_map(len, SLAB, 0);
	if (!base)
		return NULL;
	struct slab_hdr *h = (struct slab_hdr *)base;
	h->magic = MAGIC_LARGE;
	h->large_len = len;
	return base + PG;
}

UMEM_EXPORT void *uhmm__umem_malloc(size_t size)
{
	if (size == 0)
		size = 1;
	if (size > MAX_CLASS)
		return large_alloc(size);
	uint32_t c = class_of(size);
	struct sclass *k = &classes[c];
	void *p;
	pthread_mutex_lock(&k->lock);
	if (k->free) {
		p = k->free;
		k->free = *(void **)p;
	} else {
		if (k->bump + class_size[c] > k->end) {
			uintptr_t s = slab_new(c);
			if (!s) {
				pthread_mutex_unlock(&k->lock);
				errno = ENOMEM;
				return NULL;
			}
			k->bump = s + SLAB_HDR;
			k->end = s + SLAB - PG;
		}
		p = (void *)k->bump;
		k->bump += class_size[c];
	}
	pthread_mutex_unlock(&k->lock);
	return p;
}

static struct slab_hdr *hdr_of(void *p)
{
	struct slab_hdr *h = (struct slab_hdr *)((uintptr_t)p & ~(SLAB - 1));
	if (h->magic != MAGIC_SLAB && h->magic != MAGIC_LARGE)
		abort(); /* not ours: a wild free */
	return h;
}

/* How many bytes p's block holds. */
static size_t usable(void *p, struct slab_hdr *h)
{
	if (h->magic == MAGIC_LARGE)
		return h->large_len - PG;
	return class_size[h->cls];
}

UMEM_EXPORT void uhmm__umem_free(void *p)
{
	if (!p)
		return;
	struct slab_hdr *h = hdr_of(p);
	if (h->magic == MAGIC_LARGE) {
		uhmm__umem_unmap(h, h->large_len);
		return;
	}
	struct sclass *k = &classes[h->cls];
	pthread_mutex_lock(&k->lock);
	*(void **)p = k->free;
	k->free = p;
	pthread_mutex_unlock(&k->lock);
}

UMEM_EXPORT void *uhmm__umem_calloc(size_t n, size_t size)
{
	size_t bytes;
	if (__builtin_mul_overflow(n, size, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = uhmm__umem_malloc(bytes);
	/* Large objects are fresh pages: zero already. */
	if (p && bytes <= MAX_CLASS)
		memset(p, 0, bytes);
	return p;
}

UMEM_EXPORT void *uhmm__umem_realloc(void *p, size_t size)
{
	if (!p)
		return uhmm__umem_malloc(size);
	if (size == 0) {
		uhmm__umem_free(p);
		return NULL;
	}
	size_t have = usable(p, hdr_of(p));
	if (size <= have && (size > MAX_CLASS || class_of(size) == hdr_of(p)->cls))
		return p;
	void *n = uhmm__umem_malloc(size);
	if (!n)
		return NULL;
	memcpy(n, p, size < have ? size : have);
	uhmm__umem_free(p);
	return n;
}

UMEM_EXPORT char *uhmm__umem_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = uhmm__umem_malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

/* ---- page mappings ----------------------------------------------------
 * Free address space of the reservations, as a sorted list of extents
 * (nodes from the heap).  A mapping [a, a + len) takes [a - PG, a + len +
 * PG): a PROT_NONE guard page on each side. */

struct extent {
	uintptr_t start, end;
	struct extent *next;
};

static pthread_mutex_t va_lock = PTHREAD_MUTEX_INITIALIZER;
static struct extent *va_free;
static struct extent *va_nores; /* live UMEM_NORESERVE mappings */

/* Add [s, e) to the free list, merging.  Caller holds va_lock. */
static void va_insert_locked(uintptr_t s, uintptr_t e)
{
	struct extent **pp = &va_free, *prev = NULL;
	while (*pp && (*pp)->start < s) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	struct extent *next = *pp;
	if (prev && prev->end == s) {
		prev->end = e;
		if (next && next->start == e) {
			prev->end = next->end;
			prev->next = next->next;
			uhmm__umem_free(next);
		}
		return;
	}
	if (next && next->start == e) {
		next->start = s;
		return;
	}
	struct extent *x = uhmm__umem_malloc(sizeof(*x));
	if (!x)
		return; /* (the space is lost, the pages are not) */
	x->start = s;
	x->end = e;
	x->next = next;
	*pp = x;
}

/* Carve room for len bytes aligned to align; 0 if none. */
static uintptr_t va_take_locked(size_t len, size_t align)
{
	for (struct extent **pp = &va_free; *pp; pp = &(*pp)->next) {
		struct extent *x = *pp;
		uintptr_t a = align_up(x->start + PG, align);
		if (a < x->start || a + len + PG < a || a + len + PG > x->end)
			continue;
		uintptr_t ls = x->start, le = a - PG, rs = a + len + PG, re = x->end;
		if (ls < le && rs < re) {
			struct extent *y = uhmm__umem_malloc(sizeof(*y));
			if (!y)
				return 0;
			x->end = le;
			y->start = rs;
			y->end = re;
			y->next = x->next;
			x->next = y;
		} else if (ls < le) {
			x->end = le;
		} else if (rs < re) {
			x->start = rs;
		} else {
			*pp = x->next;
			uhmm__umem_free(x);
		}
		return a;
	}
	return 0;
}

static void *map_in_reserve(size_t len, size_t align, unsigned flags, int fd);

UMEM_EXPORT void *uhmm__umem_map(size_t len, size_t align, unsigned flags)
{
	return map_in_reserve(len, align, flags, -1);
}

UMEM_EXPORT void *uhmm__umem_map_file(size_t len, int fd)
{
	if (fd < 0) {
		errno = EBADF;
		return NULL;
	}
	/* Not uhmm's pages but the file's: kept aside as NORESERVE mappings
	 * are, out of the gauge (the kernel ignores MAP_NORESERVE on a
	 * shared mapping). */
	return map_in_reserve(len, PG, UMEM_NORESERVE, fd);
}

static void *map_in_reserve(size_t len, size_t align, unsigned flags, int fd)
{
	if (align < PG)
		align = PG;
	if (len == 0 || (align & (align - 1)) || len > (SIZE_MAX >> 2) || align > (SIZE_MAX >> 2)) {
		errno = EINVAL;
		return NULL;
	}
	len = align_up(len, PG);
	pthread_mutex_lock(&va_lock);
	uintptr_t a = va_take_locked(len, align);
	if (!a) {
		struct resv *r = reserve(len + align + 3 * PG);
		if (r) {
			va_insert_locked(r->base + PG, r->base + r->len);
			a = va_take_locked(len, align);
		}
	}
	pthread_mutex_unlock(&va_lock);
	if (!a) {
		errno = ENOMEM;
		return NULL;
	}
	int prot = flags & UMEM_RDONLY ? PROT_READ : PROT_READ | PROT_WRITE;
	int extra = (flags & UMEM_NORESERVE ? MAP_NORESERVE : 0) |
		    (flags & UMEM_POPULATE ? MAP_POPULATE : 0);
	if (commit(a, len, prot, extra, fd)) {
		int e = errno;
		decommit(a, len); /* a failed MAP_FIXED may have unmapped it */
		pthread_mutex_lock(&va_lock);
		va_insert_locked(a - PG, a + len + PG);
		pthread_mutex_unlock(&va_lock);
		errno = e;
		return NULL;
	}
	/* NORESERVE mappings (reserves, device memory, stacks) are address
	 * space more than memory: kept aside, not in the gauge. */
	struct extent *nr = flags & UMEM_NORESERVE ? uhmm__umem_malloc(sizeof(*nr)) : NULL;
	if (nr) {
		nr->start = a;
		nr->end = a + len;
		pthread_mutex_lock(&va_lock);
		nr->next = va_nores;
		va_nores = nr;
		pthread_mutex_unlock(&va_lock);
	} else {
		atomic_fetch_add_explicit(&used_bytes, len, memory_order_relaxed);
	}
	return (void *)a;
}

UMEM_EXPORT void uhmm__umem_unmap(void *p, size_t len)
{
	if (!p || !len)
		return;
	uintptr_t a = (uintptr_t)p;
	len = align_up(len, PG);
	struct extent *nr = NULL;
	pthread_mutex_lock(&va_lock);
	for (struct extent **pp = &va_nores; *pp; pp = &(*pp)->next)
		if ((*pp)->start == a) {
			nr = *pp;
			*pp = nr->next;
			break;
		}
	pthread_mutex_unlock(&va_lock);
	if (nr)
		uhmm__umem_free(nr);
	else
		atomic_fetch_sub_explicit(&used_bytes, len, memory_order_relaxed);
	decommit(a, len);
	pthread_mutex_lock(&va_lock);
	va_insert_locked(a - PG, a + len + PG);
	pthread_mutex_unlock(&va_lock);
}

/* ---- thread stacks ----------------------------------------------------- */

#define STACK_BYTES (8ul << 20)

struct tstack {
	pthread_t t;
	void *stack;
	struct tstack *next;
};

static pthread_mutex_t tstack_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tstack *tstacks;

UMEM_EXPORT int uhmm__umem_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	struct tstack *s = uhmm__umem_malloc(sizeof(*s));
	if (!s)
		return ENOMEM;
	s->stack = uhmm__umem_map(STACK_BYTES, PG, UMEM_NORESERVE);
	if (!s->stack) {
		uhmm__umem_free(s);
		return EAGAIN;
	}
	pthread_attr_t attr;
	int err = pthread_attr_init(&attr);
	if (!err)
		err = pthread_attr_setstack(&attr, s->stack, STACK_BYTES);
	if (!err)
		err = pthread_create(&s->t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	if (err) {
		uhmm__umem_unmap(s->stack, STACK_BYTES);
		uhmm__umem_free(s);
		return err;
	}
	*t = s->t;
	pthread_mutex_lock(&tstack_lock);
	s->next = tstacks;
	tstacks = s;
	pthread_mutex_unlock(&tstack_lock);
	return 0;
}

UMEM_EXPORT int uhmm__umem_thread_join(pthread_t t, void **ret)
{
	int err = pthread_join(t, ret);
	if (err)
		return err;
	struct tstack *s = NULL;
	pthread_mutex_lock(&tstack_lock);
	for (struct tstack **pp = &tstacks; *pp; pp = &(*pp)->next)
		if (pthread_equal((*pp)->t, t)) {
			s = *pp;
			*pp = s->next;
			break;
		}
	pthread_mutex_unlock(&tstack_lock);
	if (s) {
		uhmm__umem_unmap(s->stack, STACK_BYTES);
		uhmm__umem_free(s);
	}
	return 0;
}

/* ---- fork ----------------------------------------------------------------
 * glibc's malloc is fork-safe (its locks are taken around fork); umem must
 * be too: a fork child that calls uhmm (fork.c's handlers, a new context)
 * would otherwise find a lock held by a thread that does not exist there.
 * Registered from a constructor, so before fork.c's handlers: prepare
 * handlers run in reverse order of registration, so fork.c's (which
 * allocate while evacuating) run first, and its parent/child handlers
 * after umem's have unlocked. */

static void umem_prepare(void)
{
	pthread_mutex_lock(&tstack_lock);
	pthread_mutex_lock(&va_lock);
	for (size_t c = 0; c < NCLASS; c++)
		pthread_mutex_lock(&classes[c].lock);
	pthread_mutex_lock(&slab_lock);
}

static void umem_after(void)
{
	pthread_mutex_unlock(&slab_lock);
	for (size_t c = NCLASS; c-- > 0;)
		pthread_mutex_unlock(&classes[c].lock);
	pthread_mutex_unlock(&va_lock);
	pthread_mutex_unlock(&tstack_lock);
}

__attribute__((constructor)) static void umem_init(void)
{
	pthread_atfork(umem_prepare, umem_after, umem_after);
}

/* ---- reading lines without stdio --------------------------------------- */

UMEM_EXPORT int uhmm__lines_open(struct uhmm_lines *l, const char *path)
{
	l->pos = l->len = 0;
	l->fd = open(path, O_RDONLY | O_CLOEXEC);
	return l->fd < 0 ? -errno : 0;
}

UMEM_EXPORT bool uhmm__lines_next(struct uhmm_lines *l, char *line, size_t cap)
{
	size_t k = 0;
	bool got = false;
	for (;;) {
		if (l->pos == l->len) {
			if (l->fd < 0)
				break;
			ssize_t r;
			do
				r = read(l->fd, l->buf, sizeof(l->buf));
			while (r < 0 && errno == EINTR);
			if (r <= 0) {
				close(l->fd);
				l->fd = -1;
				break;
			}
			l->pos = 0;
			l->len = (size_t)r;
		}
		got = true;
		char c = l->buf[l->pos++];
		if (k + 1 < cap)
			line[k++] = c;
		if (c == '\n')
			break;
	}
	if (cap)
		line[k] = '\0';
	return got;
}

UMEM_EXPORT void uhmm__lines_close(struct uhmm_lines *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}

/* ---- an in-place sort ---------------------------------------------------- */

static void swap_bytes(char *a, char *b, size_t size)
{
	while (size--) {
		char t = *a;
		*a++ = *b;
		*b++ = t;
	}
}

static void sift_down(char *base, size_t i, size_t n, size_t size,
		      int (*cmp)(const void *, const void *))
{
	for (;;) {
		size_t big = i, l = 2 * i + 1, r = l + 1;
		if (l < n && cmp(base + l * size, base + big * size) > 0)
			big = l;
		if (r < n && cmp(base + r * size, base + big * size) > 0)
			big = r;
		if (big == i)
			return;
		swap_bytes(base + i * size, base + big * size, size);
		i = big;
	}
}

UMEM_EXPORT void uhmm__sort(void *base, size_t n, size_t size,
			    int (*cmp)(const void *, const void *))
{
	char *b = base;
	if (n < 2)
		return;
	for (size_t i = n / 2; i-- > 0;)
		sift_down(b, i, n, size, cmp);
	for (size_t end = n - 1; end > 0; end--) {
		swap_bytes(b, b + end * size, size);
		sift_down(b, 0, end, size, cmp);
	}
}
