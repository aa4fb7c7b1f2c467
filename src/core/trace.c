/* SPDX-License-Identifier: MIT */
/*
 * trace.c - a context records its events into a compact binary file
 * (uhmm_ctx_opts.trace_path, UHMM_TRACE): CPU and device faults,
 * migrations with their cause, evictions, invalidations.  The format is in
 * trace.h and docs/TRACING.md; tools/trace reads it.
 *
 * Per-thread buffers, no lock on the fault path.  A thread's first record
 * into a trace registers a buffer of its own (uhmm's memory) under the
 * trace's lock; the thread remembers it in a small thread-local cache keyed
 * by the trace's id (ids are never reused, so a cache entry of a destroyed
 * trace never matches a new one).  A full buffer reserves its place at the
 * end of the file with one atomic fetch_add and pwrite()s there: threads
 * never wait for one another.  uhmm_ctx_destroy() flushes every buffer (by
 * then no thread records: the service thread, the devices' threads and the
 * SIGBUS handlers have stopped, and calls in flight have left) and writes
 * the final header.  A buffer is kept until destroy, also after its thread
 * exited (a thread's first record into a trace costs one buffer).
 *
 * From a SIGBUS handler (UHMM_CTX_SIGBUS): the first record of a thread
 * allocates its buffer there.  That is safe because such a SIGBUS only
 * comes from a touch of managed memory, which no uhmm code does while it
 * holds a umem or trace lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

int uhmm__tracing;

#define TBUF_RECS 1600u /* 64000 bytes of records a thread */

struct tbuf {
	struct tbuf *next;          /* the trace's list, under its lock */
	const void *owner;          /* the owning thread (its TLS cache's address) */
	uint32_t n;                 /* records in rec[] */
	uint32_t _pad;
	struct uhmm_trace_chunk chunk;
	struct uhmm_trace_rec rec[TBUF_RECS]; /* right after chunk: one pwrite */
};
_Static_assert(offsetof(struct tbuf, rec) ==
	       offsetof(struct tbuf, chunk) + sizeof(struct uhmm_trace_chunk),
	       "a chunk and its records are written at once");

struct uhmm_trace {
	uint64_t id;
	int fd;
	_Atomic uint64_t off;       /* the file's end: where the next chunk goes */
	_Atomic uint64_t nrec, lost;
	pthread_mutex_t lock;       /* bufs, hdr */
	struct tbuf *bufs;
	struct uhmm_trace_hdr hdr;
};

static _Atomic uint64_t next_id = 1;

/* The calling thread's buffers, by trace id (a miss looks in the trace's
 * list, then registers a new buffer). */
#define TLS_SLOTS 4
static __thread struct tls_cache {
	uint64_t id[TLS_SLOTS];
	struct tbuf *b[TLS_SLOTS];
	unsigned turn;
	uint32_t tid;
	uint8_t cause;
} tls __attribute__((tls_model("initial-exec")));

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint32_t uhmm__tr_tid(void)
{
	if (!tls.tid)
		tls.tid = (uint32_t)syscall(SYS_gettid);
	return tls.tid;
}

void uhmm__trace_thread_cause(unsigned cause)
{
	tls.cause = (uint8_t)cause;
}

unsigned uhmm__trace_cause(void)
{
	return tls.cause;
}

static void write_hdr_locked(struct uhmm_trace *t)
{
	/* A header that cannot be written is a trace that cannot be read:
	 * counted as lost too (the tools say so). */
	const char *h = (const char *)t + offsetof(struct uhmm_trace, hdr);
	if (pwrite(t->fd, h, sizeof(t->hdr), 0) != (ssize_t)sizeof(t->hdr))
		atomic_fetch_add_explicit(&t->lost, 1, memory_order_relaxed);
}

int uhmm__trace_open(struct uhmm_ctx *ctx, const char *path)
{
	struct uhmm_trace *t = uhmm__umem_calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (t->fd < 0) {
		int err = -errno;
		uhmm__umem_free(t);
		return err;
	}
	t->id = atomic_fetch_add(&next_id, 1);
	pthread_mutex_init(&t->lock, NULL);
	memcpy(t->hdr.magic, UHMM_TRACE_MAGIC, sizeof(t->hdr.magic));
	t->hdr.version = UHMM_TRACE_VERSION;
	t->hdr.hdr_bytes = UHMM_TRACE_HDR_BYTES;
	t->hdr.page_size = PAGE_SIZE;
	t->hdr.rec_bytes = sizeof(struct uhmm_trace_rec);
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	t->hdr.clock_base = mono_ns();
	t->hdr.realtime_base = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec;
	t->hdr.pid = (uint32_t)getpid();
	t->hdr.fault_around = ctx->opts.fault_around;
	t->hdr.readahead_pages = ctx->opts.readahead_pages;
	atomic_store(&t->off, UHMM_TRACE_HDR_BYTES);
	pthread_mutex_lock(&t->lock);
	write_hdr_locked(t);
	pthread_mutex_unlock(&t->lock);
	if (atomic_load(&t->lost)) {
		close(t->fd);
		pthread_mutex_destroy(&t->lock);
		uhmm__umem_free(t);
		return -EIO;
	}
	ctx->trace = t;
	__atomic_fetch_add(&uhmm__tracing, 1, __ATOMIC_RELAXED);
	return 0;
}

/* Write b's records at the file's end; b is empty afterwards. */
static void flush(struct uhmm_trace *t, struct tbuf *b)
{
	if (!b->n)
		return;
	b->chunk.nrec = b->n;
	size_t bytes = sizeof(b->chunk) + (size_t)b->n * sizeof(b->rec[0]);
	uint64_t off = atomic_fetch_add_explicit(&t->off, bytes, memory_order_relaxed);
	const char *p = (const char *)&b->chunk;
	size_t done = 0;
	while (done < bytes) {
		ssize_t w = pwrite(t->fd, p + done, bytes - done, (off_t)(off + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	if (done == bytes) {
		atomic_fetch_add_explicit(&t->nrec, b->n, memory_order_relaxed);
	} else {
		/* The chunk's place holds what was written, or a hole
		 * (zeros: no chunk magic); readers stop there and say so. */
		atomic_fetch_add_explicit(&t->lost, b->n, memory_order_relaxed);
	}
	b->chunk.seq++;
	b->n = 0;
}

/* The calling thread's buffer for t (registered on first use), or NULL. */
static struct tbuf *my_buf(struct uhmm_trace *t)
{
	for (unsigned i = 0; i < TLS_SLOTS; i++)
		if (tls.id[i] == t->id)
			return tls.b[i];
	/* More traces than slots, alternately: it may be registered. */
	struct tbuf *b;
	pthread_mutex_lock(&t->lock);
	for (b = t->bufs; b; b = b->next)
		if (b->owner == &tls)
			break;
	if (!b) {
		b = uhmm__umem_malloc(sizeof(*b));
		if (b) {
			b->owner = &tls;
			b->n = 0;
			b->chunk = (struct uhmm_trace_chunk){ .magic = UHMM_TRACE_CHUNK_MAGIC,
							      .tid = uhmm__tr_tid() };
			b->next = t->bufs;
			t->bufs = b;
		}
	}
	pthread_mutex_unlock(&t->lock);
	if (!b)
		return NULL;
	unsigned s = tls.turn++ % TLS_SLOTS;
	tls.id[s] = t->id;
	tls.b[s] = b;
	return b;
}

/* A record slot of the calling thread's buffer, or NULL (counted lost). */
static struct uhmm_trace_rec *rec_get(struct uhmm_trace *t, uint8_t kind)
{
	struct tbuf *b = my_buf(t);
	if (!b) {
		atomic_fetch_add_explicit(&t->lost, 1, memory_order_relaxed);
		return NULL;
	}
	if (b->n == TBUF_RECS)
		flush(t, b);
	struct uhmm_trace_rec *r = &b->rec[b->n++];
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->time = mono_ns() - t->hdr.clock_base;
	return r;
}

uint64_t uhmm__tr_now(struct uhmm_ctx *ctx)
{
	return ctx->trace || UHMM_PROBE_TIMED() ? mono_ns() : 0;
}

static uint32_t dur_since(uint64_t t0)
{
	if (!t0)
		return 0;
	uint64_t d = mono_ns() - t0;
	return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

void uhmm__tr_cpu_fault(struct uhmm_ctx *ctx, uintptr_t addr, bool write, uint32_t word,
			uint32_t tid, uint64_t t0)
{
	struct uhmm_trace *t = ctx->trace;
	if (!t)
		return;
	uint32_t dur = dur_since(t0);
	struct uhmm_trace_rec *r = rec_get(t, UHMM_TR_CPU_FAULT);
	if (!r)
		return;
	r->addr = addr;
	r->a = write;
	r->b = (uint8_t)pg_dev(word);
	r->c = pg_loc(word) == LOC_CPU ? UHMM_TR_CF_ZERO
	       : pg_excl(word)        ? UHMM_TR_CF_REVOKE
				      : UHMM_TR_CF_DEVICE;
	r->dur = dur;
	/* The faulting thread, when known (the service thread serves
	 * other threads' faults: the message names them). */
	r->len = tid;
}

void uhmm__tr_dev_fault(struct uhmm_ctx *ctx, struct uhmm_device *dev, uintptr_t addr,
			unsigned access, bool first)
{
	struct uhmm_trace *t = ctx ? ctx->trace : NULL;
	if (!t)
		return;
	struct uhmm_trace_rec *r = rec_get(t, UHMM_TR_DEV_FAULT);
	if (!r)
		return;
	r->addr = addr;
	r->a = (uint8_t)access;
	r->b = (uint8_t)dev->id;
	r->c = first;
}

void uhmm__tr_migrate(struct uhmm_ctx *ctx, uintptr_t addr, size_t span, size_t pages,
		      unsigned from, unsigned to, unsigned cause, uint64_t t0)
{
	struct uhmm_trace *t = ctx->trace;
	if (!t)
		return;
	uint32_t dur = dur_since(t0);
	struct uhmm_trace_rec *r = rec_get(t, UHMM_TR_MIGRATE);
	if (!r)
		return;
	r->addr = addr;
	r->len = (uint64_t)pages << PAGE_SHIFT;
	r->span = (uint32_t)span;
	r->a = (uint8_t)from;
	r->b = (uint8_t)to;
	r->c = (uint8_t)cause;
	r->dur = dur;
	if (t0 && r->time >= dur)
		r->time -= dur; /* a slice: from its start */
}

unsigned uhmm__tr_install_from(const struct install_req *req)
{
	for (size_t i = 0; i < req->n; i++)
		if (req->want[i] == 2 || req->want[i] == 6)
			return pg_dev(atomic_load_explicit(&range_page(req->r, req->idx + i)->word,
							   memory_order_relaxed));
	return 0;
}

void uhmm__tr_evict(struct uhmm_ctx *ctx, unsigned dev, uintptr_t addr, size_t bytes)
{
	struct uhmm_trace *t = ctx->trace;
	if (!t)
		return;
	struct uhmm_trace_rec *r = rec_get(t, UHMM_TR_EVICT);
	if (!r)
		return;
	r->addr = addr;
	r->len = bytes;
	r->b = (uint8_t)dev;
}

void uhmm__tr_inval(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end, unsigned reason)
{
	struct uhmm_trace *t = ctx->trace;
	if (!t)
		return;
	struct uhmm_trace_rec *r = rec_get(t, UHMM_TR_INVAL);
	if (!r)
		return;
	r->addr = start;
	r->len = end - start;
	r->a = (uint8_t)reason;
}

void uhmm__tr_range(struct uhmm_ctx *ctx, unsigned kind, uintptr_t addr, size_t len,
		    unsigned a, unsigned b)
{
	struct uhmm_trace *t = ctx->trace;
	if (!t)
		return;
	struct uhmm_trace_rec *r = rec_get(t, (uint8_t)kind);
	if (!r)
		return;
	r->addr = addr;
	r->len = len;
	r->a = (uint8_t)a;
	r->b = (uint8_t)b;
}

void uhmm__tr_counter(struct uhmm_ctx *ctx, unsigned dev, uintptr_t addr, size_t len,
		      uint64_t count, unsigned action)
{
	struct uhmm_trace *t = ctx->trace;
	if (!t)
		return;
	struct uhmm_trace_rec *r = rec_get(t, UHMM_TR_COUNTER);
	if (!r)
		return;
	r->addr = addr;
	r->len = len;
	r->a = (uint8_t)action;
	r->b = (uint8_t)dev;
	r->span = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
}

void uhmm__tr_device(struct uhmm_ctx *ctx, unsigned id, const char *name, uint64_t mem_bytes)
{
	struct uhmm_trace *t = ctx->trace;
	if (!t || !id || id > UHMM_TRACE_MAX_DEVS)
		return;
	pthread_mutex_lock(&t->lock);
	struct uhmm_trace_dev *d = &t->hdr.dev[id - 1];
	d->id = id;
	if (name) {
		memset(d->name, 0, sizeof(d->name));
		strncpy(d->name, name, sizeof(d->name) - 1);
	}
	if (mem_bytes)
		d->mem_bytes = mem_bytes;
	if (id > t->hdr.ndev)
		t->hdr.ndev = id;
	write_hdr_locked(t);
	pthread_mutex_unlock(&t->lock);
}

void uhmm__tr_device_mem(struct uhmm_device *dev, uint64_t mem_bytes)
{
	if (dev && uhmm__handle_live(dev))
		uhmm__tr_device(dev->ctx, dev->id, NULL, mem_bytes);
}

void uhmm__trace_close(struct uhmm_ctx *ctx)
{
	struct uhmm_trace *t = ctx->trace;
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	for (struct tbuf *b = t->bufs; b; b = b->next)
		flush(t, b);
	t->hdr.nrec = atomic_load(&t->nrec);
	t->hdr.lost = atomic_load(&t->lost);
	t->hdr.closed = 1;
	write_hdr_locked(t);
	struct tbuf *b = t->bufs;
	t->bufs = NULL;
	pthread_mutex_unlock(&t->lock);
	while (b) {
		struct tbuf *n = b->next;
		uhmm__umem_free(b);
		b = n;
	}
	if (atomic_load(&t->lost))
		fprintf(stderr, "uhmm: trace: %llu records lost (write errors)\n",
			(unsigned long long)atomic_load(&t->lost));
	close(t->fd);
	pthread_mutex_destroy(&t->lock);
	ctx->trace = NULL;
	__atomic_fetch_sub(&uhmm__tracing, 1, __ATOMIC_RELAXED);
	uhmm__umem_free(t);
}
