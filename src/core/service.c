/* SPDX-License-Identifier: MIT */
/*
 * service.c - the fault-service thread.
 *
 * One thread per context reads the userfaultfd and serves, in order:
 *   - CPU faults on managed memory (MISSING): a never-populated page gets
 *     zeros; a device-resident page comes back (with fault-around);
 *   - events: REMOVE (madvise DONTNEED/FREE/REMOVE), UNMAP (munmap), REMAP
 *     (mremap);
 *   - install requests of migrating threads (uhmm_migrate to the system,
 *     and the restore of a failed migration);
 *   - parked faults whose page was unlocked.
 *
 * Rules (docs/ARCHITECTURE.md, "Threads"):
 *   - It never touches managed memory: it moves pages in with ioctls.
 *   - It never sleeps on a page lock: it trylocks; a fault on a locked page
 *     is parked (PG_PARKED) and served when the owner unlocks and kicks.
 *   - It is the only thread that installs pages into managed memory.  So
 *     every install is ordered against the REMOVE/UNMAP/REMAP events it
 *     reads: a REMOVE read before an install marks the page ZAPPED and the
 *     install is dropped; one read after it precedes the kernel's zap,
 *     which then removes the installed page.  Either way the application
 *     sees its madvise() take effect, never stale data after it.
 *   - It may wait for a device's copy engine, and takes the leaf locks
 *     (ranges_lock, pool lock, request lock) briefly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"
#include "util/futex.h"

void uhmm__service_kick(struct uhmm_ctx *ctx)
{
	uint64_t one = 1;
	ssize_t r = write(ctx->evfd, &one, sizeof(one));
	(void)r; /* EAGAIN: the counter is already non-zero, a wake is due */
}

/* ---- following events promptly (events_busy) ---- */

#define EV_READING 1u
#define EV_WAITERS 2u

/* Service thread: about to read the userfaultfd. */
static void events_begin(struct uhmm_ctx *ctx)
{
	atomic_store_explicit(&ctx->events_busy, EV_READING, memory_order_seq_cst);
	/* SIGBUS mode: faulting threads install pages themselves.  No event
	 * is read while one is installing, so every install precedes the read
	 * of an event (and the kernel's zap, which follows the read), or is
	 * refused with EAGAIN while the event is pending, or sees the event
	 * handled (ZAPPED, dead): the order the service thread keeps by being
	 * the only installer in the default mode.  They never wait inside
	 * their bracket (uhmm__sb_enter).  Looked at in every mode (one
	 * load: outside SIGBUS mode nobody opens a bracket since the page
	 * remake's copy back is gone), so any installer from another thread
	 * keeps that order. */
	uint32_t v;
	while ((v = atomic_load_explicit(&ctx->sb_active, memory_order_seq_cst)) != 0)
		uhmm_futex_wait(&ctx->sb_active, v);
}

bool uhmm__sb_enter(struct uhmm_ctx *ctx)
{
	atomic_fetch_add_explicit(&ctx->sb_active, 1, memory_order_seq_cst);
	if (!atomic_load_explicit(&ctx->events_busy, memory_order_seq_cst))
		return true;
	uhmm__sb_leave(ctx);
	return false;
}

void uhmm__sb_leave(struct uhmm_ctx *ctx)
{
	if (atomic_fetch_sub_explicit(&ctx->sb_active, 1, memory_order_seq_cst) == 1 &&
	    atomic_load_explicit(&ctx->events_busy, memory_order_seq_cst))
		uhmm_futex_wake_all(&ctx->sb_active);
}

/* Service thread: the events read so far are handled. */
static void events_end(struct uhmm_ctx *ctx)
{
	uint32_t old = atomic_exchange_explicit(&ctx->events_busy, 0, memory_order_release);
	if (old & EV_WAITERS)
		uhmm_futex_wake_all(&ctx->events_busy);
}

void uhmm__events_wait(struct uhmm_ctx *ctx)
{
	if (pthread_equal(pthread_self(), ctx->service))
		return; /* (an invalidate callback: it is part of the handling) */
	uint32_t v = atomic_load_explicit(&ctx->events_busy, memory_order_acquire);
	while (v) {
		if (!(v & EV_WAITERS) &&
		    !atomic_compare_exchange_weak_explicit(&ctx->events_busy, &v,
							   v | EV_WAITERS,
							   memory_order_acquire,
							   memory_order_acquire))
			continue;
		uhmm_futex_wait(&ctx->events_busy, v | EV_WAITERS);
		v = atomic_load_explicit(&ctx->events_busy, memory_order_acquire);
	}
}

/* ---- installing pages (service thread only) ---- */

static size_t drain_events(struct uhmm_ctx *ctx);
static void install_publish(struct uhmm_ctx *ctx, struct install_req *req);

/*
 * A fill or move ioctl failed with EAGAIN: a change of the address space is
 * in flight (the kernel's mmap_changing), and its event must be read before
 * pages may be installed.  Read and handle the pending events; when there
 * is none left to read, the threads that posted them have not yet run to
 * finish their syscalls (on two cores they may wait for this very CPU):
 * yield.  Returns false once the wait has lasted UHMM_SETTLE_NS (*t0 holds its
 * start, 0 on the first call); the caller then gives up on the install and
 * lets the faulting thread retry.
 */
static bool settle(struct uhmm_ctx *ctx, uint64_t *t0)
{
	if (uhmm__settle_expired(t0))
		return false;
	if (!drain_events(ctx))
		sched_yield();
	return true;
}

/* Where page i of a request comes from. */
#define REQ_SRC(req, i) ((req)->srcv ? (req)->srcv[i] : (req)->src + ((i) << PAGE_SHIFT))

/*
 * Install, with one ioctl, the run of pages of req that starts at i (want
 * 1): it goes on while the next page is wanted and not ZAPPED (one page if
 * the sources are scattered).  *end gets the run's end, *upto the end of
 * what was installed (marked want 2).  Returns the ioctl's result.
 * DONTWAKE: the faulting threads resume only after the pages are
 * published, so what they see of uhmm agrees with what they see of memory.
 */
static long install_run(struct uhmm_ctx *ctx, struct install_req *req, size_t i,
			size_t *end, size_t *upto)
{
	struct uhmm_range *r = req->r;
	size_t j = i + 1;
	while (!req->srcv && j < req->n && req->want[j] == 1 &&
	       !(atomic_load_explicit(&range_page(r, req->idx + j)->word,
				      memory_order_relaxed) & PG_ZAPPED))
		j++;
	uintptr_t dst = r->start + ((req->idx + i) << PAGE_SHIFT);
	char *src = REQ_SRC(req, i);
	size_t len = (j - i) << PAGE_SHIFT, done = 0;
	long ret = req->src_is_slots
			   ? uhmm__uffd_move(ctx->uffd, dst, (uintptr_t)src, len,
					     UFFDIO_MOVE_MODE_DONTWAKE, &done)
			   : uhmm__uffd_copy(ctx->uffd, dst, src, len,
					     UFFDIO_COPY_MODE_DONTWAKE, true, &done);
	size_t k = i + (done >> PAGE_SHIFT);
	for (size_t x = i; x < k; x++)
		req->want[x] = 2;
	*end = j;
	*upto = k;
	return ret;
}

void uhmm__install_pages(struct uhmm_ctx *ctx, struct install_req *req)
{
	struct uhmm_range *r = req->r;
	size_t i = 0;
	uint64_t t0 = 0;
	req->result = 0;
	if (!r)
		return; /* a sync request (uhmm__service_sync) */
	/*
	 * The range moved or went away (mremap or munmap, whose event this
	 * thread handled after the requester took its pages): the old
	 * address may already belong to a new mapping, so nothing is
	 * installed there.  The pages stay where they are; their state went
	 * with the range (a fault at the new address brings them back).
	 */
	if (atomic_load_explicit(&r->dead, memory_order_acquire)) {
		for (i = 0; i < req->n; i++)
			if (req->want[i] == 1)
				req->want[i] = 0;
		req->result = -ENOENT;
		/* (Pages a faulting thread installed before handing the
		 * rest over: install_self.) */
		install_publish(ctx, req);
		return;
	}
	while (i < req->n) {
		struct uhmm_page *p = range_page(r, req->idx + i);
		if (req->want[i] != 1) {
			i++;
			continue;
		}
		if (atomic_load_explicit(&p->word, memory_order_relaxed) & PG_ZAPPED) {
			/* Discarded by the application: do not bring it back. */
			req->want[i++] = 3;
			continue;
		}
		size_t j, k;
		long ret = install_run(ctx, req, i, &j, &k);
		if (ret >= 0) {
			i = j;
			continue;
		}
		if (ret == -EAGAIN && settle(ctx, &t0)) {
			/* An event is pending: handle it, then look at page k
			 * again (it may have been discarded meanwhile, or the
			 * whole range moved or went away: below). */
			if (atomic_load_explicit(&r->dead, memory_order_acquire))
				break;
			i = k;
			continue;
		}
		if (ret == -EEXIST) {
			/* Something is there already: the poison marker left
			 * by serve_device() when the device could not give the
			 * page back, or (a bug worth hearing about) a page while
			 * we recorded it on a device.  Keep the device copy
			 * (nothing is lost) and tell the caller. */
			uintptr_t at = r->start + ((req->idx + k) << PAGE_SHIFT);
			/* What the next report needs: the page's word and
			 * whether a huge page maps its block. */
			fprintf(stderr,
				"uhmm: page %#lx present while on a device (word %#x, %s, "
				"from %s)\n",
				(unsigned long)at,
				(unsigned)atomic_load_explicit(&range_page(r, req->idx + k)->word,
							       memory_order_relaxed),
				uhmm__thp_mapped(ctx->pagemap_fd, at) ? "huge page" : "4 KiB page",
				req->src_is_slots ? "slots" : "a buffer");
			req->want[k] = 0;
			if (!req->result)
				req->result = -EEXIST;
			i = k + 1;
			continue;
		}
		/*
		 * The run does not fit one mapping as it is now: it crosses
		 * VMAs (mprotect split the range), or UFFDIO_MOVE refuses a
		 * read-only destination, or the mapping changed under us
		 * (munmap or mremap whose event we have not read yet).  Go
		 * page by page, copying where moving is refused; a page that
		 * cannot be installed stays where it is (on its device: the
		 * event will say what became of it).
		 */
		for (size_t x = k; x < j; x++) {
			uintptr_t d = r->start + ((req->idx + x) << PAGE_SHIFT);
			char *sp = REQ_SRC(req, x);
			size_t one;
			/* An EAGAIN (an event pending) of this page's own move
			 * or copy is settled and the page tried again, as the
			 * runs are: a read-only destination, which refuses
			 * every move, sends every page of it here (uhmm-torture
			 * saw migrations home of read-only ranges fail -EFAULT
			 * when a copy met an event once). */
			for (;;) {
				if (ret == -EAGAIN && !settle(ctx, &t0))
					t0 = uhmm__now_ns() - UHMM_SETTLE_NS; /* no more waiting */
				if (atomic_load_explicit(&r->dead, memory_order_acquire)) {
					req->want[x] = 0;
					req->result = -ENOENT;
					break;
				}
				if (atomic_load_explicit(&range_page(r, req->idx + x)->word,
							 memory_order_relaxed) & PG_ZAPPED) {
					req->want[x] = 3; /* discarded meanwhile */
					break;
				}
				if (req->src_is_slots &&
				    uhmm__uffd_move(ctx->uffd, d, (uintptr_t)sp, PAGE_SIZE,
						    UFFDIO_MOVE_MODE_DONTWAKE, &one) >= 0) {
					req->want[x] = 2;
					break;
				}
				ret = uhmm__uffd_copy(ctx->uffd, d, sp, PAGE_SIZE,
						      UFFDIO_COPY_MODE_DONTWAKE, true, &one);
				if (ret >= 0) {
					/* Copied: a slot keeps its page. */
					req->want[x] = req->src_is_slots ? 6 : 2;
					break;
				}
				if (ret == -EAGAIN && !uhmm__settle_expired(&t0))
					continue;
				req->want[x] = 0;
				req->result = (int)ret;
				break;
			}
		}
		i = j;
	}
	if (i < req->n) {
		/* The range moved or went away while we waited (see above). */
		for (; i < req->n; i++)
			if (req->want[i] == 1)
				req->want[i] = 0;
		req->result = -ENOENT;
	}

	install_publish(ctx, req);
	/* One wake for the whole span: a thread whose page was not installed
	 * faults again and is served anew. */
	uhmm__uffd_wake(ctx->uffd, r->start + (req->idx << PAGE_SHIFT),
			req->n << PAGE_SHIFT);
}

/* Count and publish the pages of req installed (2, 6) or discarded (3). */
static void install_publish(struct uhmm_ctx *ctx, struct install_req *req)
{
	struct uhmm_range *r = req->r;
	size_t i;
	/* Count before publishing: whoever sees a page unlocked sees it counted. */
	if (req->count) {
		size_t back = 0;
		for (i = 0; i < req->n; i++)
			back += req->want[i] == 2 || req->want[i] == 6;
		STAT_ADD(ctx, migrated_to_system_pages, back);
		STAT_ADD(ctx, migrated_to_system_bytes, back << PAGE_SHIFT);
		uhmm__trace_migrate(ctx, r->start + (req->idx << PAGE_SHIFT), req->n << PAGE_SHIFT, back, uhmm__tr_install_from(req), 0, req->cause, req->t0);
	}
	/* Publish: installed and discarded pages are in system memory now. */
	for (i = 0; i < req->n; i++) {
		if (req->want[i] != 2 && req->want[i] != 3 && req->want[i] != 6)
			continue;
		/* (Lent coherent frames: coherent.c; a zapped one is freed.) */
		(void)uhmm__page_publish_unlock(ctx, range_page(r, req->idx + i), req->loc,
						req->loc ? req->dpfnv[i] : 0);
	}
}

/*
 * SIGBUS mode: the faulting thread installs the pages of req itself, as
 * uhmm__install_pages does, inside an sb_enter/sb_leave bracket (see
 * events_begin).  Returns true if every page was installed or dropped
 * (ZAPPED), counted and published.  Otherwise (events being handled, the
 * range gone, an ioctl refused: EAGAIN, a split mapping...) the pages
 * done are marked and the rest (want 1) is left for the service thread,
 * which knows every case: the caller hands req over
 * (uhmm__install_request), and it publishes all.
 */
static bool install_self(struct uhmm_ctx *ctx, struct install_req *req)
{
	struct uhmm_range *r = req->r;
	if (!uhmm__sb_enter(ctx))
		return false;
	bool all = !atomic_load_explicit(&r->dead, memory_order_acquire);
	for (size_t i = 0; all && i < req->n;) {
		if (req->want[i] != 1) {
			i++;
			continue;
		}
		if (atomic_load_explicit(&range_page(r, req->idx + i)->word,
					 memory_order_relaxed) & PG_ZAPPED) {
			req->want[i++] = 3;
			continue;
		}
		size_t j, k;
		if (install_run(ctx, req, i, &j, &k) < 0)
			all = false;
		i = j;
	}
	uhmm__sb_leave(ctx);
	if (all)
		install_publish(ctx, req);
	return all;
}

/* Install req: the service thread itself, or a faulting thread (self). */
static void install(struct uhmm_ctx *ctx, struct install_req *req, bool self)
{
	if (!self)
		uhmm__install_pages(ctx, req);
	else if (!install_self(ctx, req))
		uhmm__install_request(ctx, req);
}

void uhmm__install_request(struct uhmm_ctx *ctx, struct install_req *req)
{
	atomic_store_explicit(&req->done, 0, memory_order_relaxed);
	req->next = NULL;
	pthread_mutex_lock(&ctx->req_lock);
	*ctx->req_tail = req;
	ctx->req_tail = &req->next;
	pthread_mutex_unlock(&ctx->req_lock);
	uhmm__service_kick(ctx);
	while (!atomic_load_explicit(&req->done, memory_order_acquire))
		uhmm_futex_wait(&req->done, 0);
}

void uhmm__service_sync(struct uhmm_ctx *ctx)
{
	/* Served after the messages the service thread has read: every event
	 * read so far has been handled when this returns. */
	struct install_req req = { .r = NULL, .n = 0 };
	uhmm__install_request(ctx, &req);
}

static bool serve_or_park(struct uhmm_ctx *ctx, const struct parked_fault *f);
static struct parked_fault fault_msg(struct uhmm_ctx *ctx, uintptr_t addr,
				     uint64_t flags, struct fault_req *req);

static void serve_requests(struct uhmm_ctx *ctx)
{
	pthread_mutex_lock(&ctx->req_lock);
	struct install_req *q = ctx->req_head;
	ctx->req_head = NULL;
	ctx->req_tail = &ctx->req_head;
	struct fault_req *fq = ctx->freq_head;
	ctx->freq_head = NULL;
	ctx->freq_tail = &ctx->freq_head;
	pthread_mutex_unlock(&ctx->req_lock);
	/* Faults SIGBUS handlers handed over: served as if read now. */
	while (fq) {
		struct fault_req *next = fq->next;
		struct parked_fault f = fault_msg(ctx, fq->addr, fq->flags, fq);
		if (!serve_or_park(ctx, &f))
			STAT_INC(ctx, cpu_faults_waited);
		fq = next;
	}
	while (q) {
		struct install_req *next = q->next;
		uhmm__install_pages(ctx, q);
		atomic_store_explicit(&q->done, 1, memory_order_release);
		uhmm_futex_wake_all(&q->done);
		q = next;
	}
}

/* ---- faults ---- */

/* A fault a SIGBUS handler handed over is served (or its thread must fault
 * again): the handler waiting for it goes. */
static void fault_req_done(struct fault_req *q)
{
	atomic_store_explicit(&q->done, 1, memory_order_release);
	uhmm_futex_wake_all(&q->done);
}

static void fault_done(const struct parked_fault *f)
{
	if (f->req)
		fault_req_done(f->req);
}

static void park(struct uhmm_ctx *ctx, const struct parked_fault *f)
{
	if (ctx->nparked == ctx->cap_parked) {
		size_t cap = ctx->cap_parked ? ctx->cap_parked * 2 : 64;
		struct parked_fault *n = uhmm__umem_realloc(ctx->parked, cap * sizeof(*n));
		if (!n) {
			/* Cannot remember it: let the thread fault again. */
			uhmm__uffd_wake(ctx->uffd, f->addr, PAGE_SIZE);
			fault_done(f);
			return;
		}
		ctx->parked = n;
		ctx->cap_parked = cap;
	}
	ctx->parked[ctx->nparked++] = *f;
}

/* How a fault is being served. */
struct how {
	bool self;    /* by the faulting thread itself (SIGBUS mode) */
	uint32_t epoch; /* the pages' dev_epoch when the fault was read */
	bool again;   /* self: an install met EAGAIN; wait for the service
		       * thread to read the events, then fault again */
	bool handoff; /* self: not served (no warm page to copy into): the
		       * service thread must serve it */
	uint32_t tid; /* the faulting thread, for the trace (0: unknown) */
	bool wp;      /* a write-protect fault (message flag; self: unknown) */
};

/*
 * Fill [dst, dst + len) with zeros: the zero page for a read fault, private
 * zeroed pages for a write.  An EAGAIN with no progress means an event must
 * be read first: read it (drain_events) and try again, a few times.  An
 * event may concern these very pages: a discard just makes them zeros,
 * which we are filling; an unmap makes the next attempt fail, and the
 * thread then meets SIGSEGV as it should.
 */
static long fill_zeros(struct uhmm_ctx *ctx, struct uhmm_range *r, uintptr_t dst,
		       size_t len, bool write, size_t *done, struct how *how)
{
	uint64_t t0 = 0;
	if (how && how->self) {
		/* A faulting thread: no events to read here (the service
		 * thread's), so EAGAIN ends it (how->again).  While the
		 * service thread reads or handles events it waits for them to
		 * be handled (they only trylock the pages it holds). */
		long ret;
		*done = 0;
		while (!uhmm__sb_enter(ctx))
			uhmm__events_wait(ctx);
		if (atomic_load_explicit(&r->dead, memory_order_acquire))
			ret = -ESTALE;
		else
			ret = write ? uhmm__uffd_copy(ctx->uffd, dst, ctx->zeros, len, 0, false,
						      done)
				    : uhmm__uffd_zeropage(ctx->uffd, dst, len, done);
		uhmm__sb_leave(ctx);
		if (ret == -EAGAIN)
			how->again = true;
		return ret;
	}
	for (;;) {
		long ret = write ? uhmm__uffd_copy(ctx->uffd, dst, ctx->zeros, len, 0, false,
						   done)
				 : uhmm__uffd_zeropage(ctx->uffd, dst, len, done);
		if (ret != -EAGAIN || !settle(ctx, &t0))
			return ret;
		/*
		 * The events handled may have moved the range away or
		 * ended it (r: dead), or, for a fault we did not know,
		 * made its address known (an mremap moved a range there):
		 * the address may now hold another mapping's pages, or
		 * device-resident data.  Zeros there would be wrong: the
		 * caller wakes the thread, which faults again
		 * (-ESTALE: ours, not a code the kernel gives).
		 */
		if (r ? atomic_load_explicit(&r->dead, memory_order_acquire)
		      : uhmm__ranges_cover(ctx, dst, dst + PAGE_SIZE) == 0)
			return -ESTALE;
	}
}

/*
 * A write fault on a never-populated page of a uhmm_alloc range (which
 * asks for transparent huge pages) whose whole aligned 2 MiB block is free
 * and empty: one zeroed THP moved in as one PMD, as the kernel's own write
 * fault in a MADV_HUGEPAGE mapping would map one (a read fault gets the
 * zero page, as before: the kernel's would map the huge zero page, which
 * userfaultfd cannot install).  docs/ARCHITECTURE.md "2 MiB on the CPU
 * side".  Holds page idx.  True if served (every page unlocked,
 * the thread woken); false: nothing changed, page idx still held.
 */
static bool serve_zero_huge(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx)
{
	if (!r->owned || !ctx->move_in || !ctx->pool.thp_ok)
		return false;
	uintptr_t a = r->start + (idx << PAGE_SHIFT);
	uintptr_t ba = a & ~(uintptr_t)(UHMM_HUGE_SIZE - 1);
	if (ba < r->start || ba + UHMM_HUGE_SIZE > r->start + (r->npages << PAGE_SHIFT))
		return false;
	size_t lo = (ba - r->start) >> PAGE_SHIFT, k;
	/* Every other page of the block: free, in system memory. */
	for (k = 0; k < BATCH_PAGES; k++) {
		if (lo + k == idx)
			continue;
		struct uhmm_page *p = range_page(r, lo + k);
		if (!uhmm__page_trylock(p))
			break;
		if (pg_loc(atomic_load_explicit(&p->word, memory_order_relaxed)) != LOC_CPU) {
			uhmm__page_unlock(ctx, p);
			break;
		}
	}
	bool ok = k == BATCH_PAGES;
	/* Nothing present: no page to keep, so the block's PMD may be one
	 * THP (a page table left by 4 KiB pages that went makes the kernel
	 * split it: still zeros, just not huge). */
	unsigned char vec[BATCH_PAGES];
	if (ok && mincore((void *)ba, UHMM_HUGE_SIZE, vec) == 0) {
		for (size_t i = 0; i < BATCH_PAGES && ok; i++)
			ok = !(vec[i] & 1);
	} else {
		ok = false;
	}
	bool fresh = false;
	long s = ok ? uhmm__pool_get_huge(&ctx->pool, &fresh, true) : -1;
	size_t done = 0;
	if (s >= 0) {
		char *src = pool_slot(&ctx->pool, (size_t)s);
		if (!fresh)
			memset(src, 0, UHMM_HUGE_SIZE);
		/* An event pending (EAGAIN, nothing done): the 4 KiB path
		 * settles it. */
		(void)uhmm__uffd_move(ctx->uffd, ba, (uintptr_t)src, UHMM_HUGE_SIZE,
				      UFFDIO_MOVE_MODE_DONTWAKE, &done);
		uint8_t full[BATCH_PAGES];
		for (size_t i = 0; i < BATCH_PAGES; i++)
			full[i] = (i << PAGE_SHIFT) >= done; /* moved in: EMPTY */
		if (done == 0)
			uhmm__pool_put_huge(&ctx->pool, (size_t)s);
		else
			uhmm__pool_put_run(&ctx->pool, (size_t)s, BATCH_PAGES, full);
	}
	for (size_t i = 0; i < (ok ? BATCH_PAGES : k); i++) {
		if (lo + i == idx && !done)
			continue; /* still ours: the 4 KiB path serves it */
		struct uhmm_page *p = range_page(r, lo + i);
		/* Zeros in place: as serve_zero's fill (no DISCARD left). */
		if ((i << PAGE_SHIFT) < done)
			uhmm__page_unzap(ctx, p);
		uhmm__page_unlock(ctx, p);
	}
	if (!done)
		return false;
	/* (A faulting page not among those moved in faults again.) */
	uhmm__uffd_wake(ctx->uffd, ba, UHMM_HUGE_SIZE);
	return true;
}

/* Fill zeros into a never-populated page and up to zero_around - 1 pages
 * after it that are in system memory and free.  Holds page idx. */
static void serve_zero(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		       bool write, struct how *how)
{
	if (!how->self)
		STAT_INC(ctx, cpu_faults); /* (before the wake: see serve_device) */
	if (write && !how->self && serve_zero_huge(ctx, r, idx))
		return;
	size_t n = 1, max = ctx->opts.zero_around;
	if (r->owned && ctx->pool.thp_ok) {
		/* Not into the next 2 MiB block: its first write fault may
		 * fill it with a THP (serve_zero_huge). */
		uintptr_t a = r->start + (idx << PAGE_SHIFT);
		size_t left = (UHMM_HUGE_SIZE - (a & (UHMM_HUGE_SIZE - 1))) >> PAGE_SHIFT;
		if (max > left)
			max = left;
	}
	while (n < max && idx + n < r->npages) {
		struct uhmm_page *p = range_page(r, idx + n);
		if (!uhmm__page_trylock(p))
			break;
		if (pg_loc(atomic_load_explicit(&p->word, memory_order_relaxed)) != LOC_CPU) {
			uhmm__page_unlock(ctx, p);
			break;
		}
		n++;
	}
	uintptr_t dst = r->start + (idx << PAGE_SHIFT);
	size_t done = 0;
	/* What is missing before the fill: the kernel's count of a failed
	 * fill can fall short of what it filled (uffd.c), and a window may
	 * hold pages present all along, so what this fill put in is told by
	 * the page tables, missing before and present after. */
	unsigned char before[BATCH_PAGES], after[BATCH_PAGES];
	bool snap = mincore((void *)dst, n << PAGE_SHIFT, before) == 0;
	long ret = fill_zeros(ctx, r, dst, n << PAGE_SHIFT, write, &done, how);
	if (ret < 0 && done == 0 && n > 1 && ret != -EEXIST && ret != -ESTALE &&
	    !how->again) {
		/* The window crosses into another mapping (mprotect split
		 * the range): the faulting page alone. */
		ret = fill_zeros(ctx, r, dst, PAGE_SIZE, write, &done, how);
	}
	/* A faulting thread counts its fault as the service thread counts a
	 * message it serves, once it is not to be repeated: a fill refused
	 * with EAGAIN makes the thread fault again (the service thread would
	 * have settled and filled). */
	if (how->self && !how->again)
		STAT_INC(ctx, cpu_faults);
	size_t filled = done >> PAGE_SHIFT;
	/* -ESTALE: the address may belong to another mapping now. */
	if (ret < 0 && ret != -ESTALE && snap &&
	    mincore((void *)dst, n << PAGE_SHIFT, after) == 0) {
		for (size_t i = filled; i < n; i++)
			after[i] = !(before[i] & 1) && (after[i] & 1);
	} else {
		memset(after, 0, n);
	}
	/* -EEXIST: a page is there already (this fault was a duplicate, or a
	 * neighbour is populated); -ENOENT: the mapping is gone.  Either way
	 * the faulting thread must retry to see the truth.  (A failed fill
	 * wakes nobody, even for the pages it did fill.) */
	if (ret < 0 && !how->self)
		uhmm__uffd_wake(ctx->uffd, dst, n << PAGE_SHIFT);
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p = range_page(r, idx + i);
		/* Filled: it was missing, so any pending zap is done; and
		 * zeros are what a discard leaves, so a REMOVE handled while
		 * we held it (ZAPPED, by a drain before the fill) makes it no
		 * stale page: no DISCARD either (which the unlock of a ZAPPED
		 * page would set, and the application's next write, to the
		 * zero page without a fault, would not clear). */
		if (i < filled || after[i])
			uhmm__page_unzap(ctx, p);
		uhmm__page_unlock(ctx, p);
	}
}

/*
 * Bring pages [lo, lo + n) of r home: locked by us, all on a device.  The
 * device drops its mapping of them (and fences) first; the copy engine
 * copies into a contiguous run of warm pool pages, one UFFDIO_MOVE puts
 * the run in place and wakes the faulting threads.  If fault_idx names one
 * of the pages (a CPU fault on it; else SIZE_MAX) and the device cannot
 * give that page back, it is poisoned.  Pages not installed are unlocked
 * where they are.  Returns the number of pages brought back.
 */
static size_t bring_home(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t lo,
			 size_t n, size_t fault_idx, unsigned dev, uint64_t fault_addr,
			 long slot, bool self)
{
	uintptr_t va = r->start + (lo << PAGE_SHIFT), vend = va + (n << PAGE_SHIFT);
	bool inv = uhmm__invalidate_start(ctx, va, vend, UHMM_INV_MIGRATE, NULL, 0);
	uint8_t want[BATCH_PAGES];
	memset(want, 1, n);
	struct install_req req = { .r = r, .idx = lo, .n = n, .want = want,
				   .count = true };
	req.cause = fault_idx == SIZE_MAX ? UHMM_TR_CAUSE_READAHEAD : UHMM_TR_CAUSE_CPU_FAULT;
	req.t0 = uhmm__trace_t0(ctx);
	UHMM_PROBE(migrate_start, va, n << PAGE_SHIFT, dev, 0, req.cause);
	/* A single page goes through the bounce buffer and UFFDIO_COPY: moving
	 * a warm slot in needs a TLB flush of the slot's mapping (an IPI to
	 * the other CPUs running the process), which costs more than the page
	 * allocation UFFDIO_COPY makes (6.5 vs 4.6 us a fault, uhmm-bench
	 * cpufault).  Runs, which amortise the flush, are moved.
	 * A faulting thread (self) has no bounce buffer of its own: it
	 * brings a run of FULL slots (@slot), copies into them and moves
	 * them in, or copies from them with NO_MOVE (they stay FULL). */
	/* A whole aligned 2 MiB block (the policy brings the block): into a
	 * warm THP, moved in as one PMD, so the range is THP-backed again
	 * (docs/ARCHITECTURE.md "2 MiB on the CPU side"). */
	bool whole = ctx->move_in && n == BATCH_PAGES && !(va & (UHMM_HUGE_SIZE - 1)) &&
		     block_wants_thp(r, lo);
	if (whole && !self)
		slot = uhmm__pool_get_huge(&ctx->pool, NULL, false);
	if (!self && slot < 0)
		slot = ctx->move_in && n > 1 ? uhmm__pool_get(&ctx->pool, n, true) : -1;
	bool moving = slot >= 0 && ctx->move_in && n > 1;
	if (slot >= 0) {
		req.src = pool_slot(&ctx->pool, (size_t)slot);
		req.src_is_slots = moving;
	} else {
		req.src = ctx->bounce;
	}
	if (fault_idx != SIZE_MAX) {
		if (moving)
			STAT_INC(ctx, pool_hits);
		else
			STAT_INC(ctx, pool_misses);
	}

	int err = uhmm__fetch_pages(ctx, r, lo, n, req.src, want);
	if (err && fault_idx != SIZE_MAX && want[fault_idx - lo] != 1 && ctx->has_poison) {
		/* The device cannot give the faulting page back.  Its data is
		 * lost to us; tell the faulting thread (SIGBUS) rather than
		 * hand it a wrong page.  The device copy is kept. */
		fprintf(stderr, "uhmm: device %u lost page %#lx (%s)\n", dev,
			(unsigned long)fault_addr, strerror(-err));
		uhmm__uffd_poison(ctx->uffd, r->start + (fault_idx << PAGE_SHIFT), PAGE_SIZE);
	}
	/* Accessed-by devices are asked to map the pages where they go now,
	 * while the invalidation is open: their snapshot (read_begin) waits
	 * for its end, after the install, and the request is queued before
	 * the install wakes the faulting thread (which may launch next). */
	uhmm__pol_map_accessors(ctx, va, vend - va);
	install(ctx, &req, self);
	size_t back = 0;
	uint8_t full[BATCH_PAGES];
	if (whole && moving) {
		bool all = true;
		for (size_t i = 0; i < n && all; i++)
			all = want[i] == 2;
		if (all && uhmm__thp_mapped(ctx->pagemap_fd, va)) {
			STAT_INC(ctx, thp_moves_in);
			UHMM_PROBE(thp_move, va, true);
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (want[i] == 2 || want[i] == 6)
			back++;
		else if (want[i] == 0)
			uhmm__page_unlock(ctx, range_page(r, lo + i));
		/* a slot moved in is EMPTY now */
		full[i] = !(moving && want[i] == 2);
	}
	if (slot >= 0)
		uhmm__pool_put_run(&ctx->pool, (size_t)slot, n, full);
	uhmm__invalidate_end(ctx, va, vend, inv);
	uhmm__pol_migrated_runs(ctx, va, want, n, dev, 0);
	return back;
}

/* ---- read-ahead (service thread only) ---- */

/*
 * Speculation decided at @epoch may still move pages of r home: no
 * migration toward a device of them began since.  Called with the pages to
 * move locked (see fault_msg(): the fence pairs with migrate_collect's
 * bump, made before it locks).
 */
static bool epoch_holds(const struct uhmm_range *r, uint32_t epoch)
{
	atomic_thread_fence(memory_order_seq_cst);
	return atomic_load_explicit(&r->arr->dev_epoch, memory_order_relaxed) == epoch;
}

/*
 * The policy asked for window [lo, hi) of stream k, decided at @epoch (a
 * CPU fault's; see fault_msg()).  It replaces the stream's window; what the
 * stream already brought home inside it is not brought again.
 */
static void readahead_set(struct uhmm_ctx *ctx, const struct uhmm_range *r, unsigned k,
			  uintptr_t lo, uintptr_t hi, uint32_t epoch)
{
	struct readahead *s = &ctx->ra[k];
	if (s->arr != r->arr || s->next < lo || s->next > hi)
		s->next = lo;
	s->end = hi;
	s->arr = r->arr;
	s->epoch = epoch;
}

static bool readahead_pending(const struct uhmm_ctx *ctx)
{
	for (size_t i = 0; i < sizeof(ctx->ra) / sizeof(ctx->ra[0]); i++)
		if (ctx->ra[i].next < ctx->ra[i].end)
			return true;
	return false;
}

/*
 * Bring back the next block of one scan (in turn), as a fault on it would:
 * its pages that live on a device and are free, locked with trylock (a
 * page someone holds is skipped: its owner decides where it goes), in
 * runs of one device each.  Like a fault's batch, the pages are installed
 * by this thread and only here, so a REMOVE or UNMAP read before the
 * install drops it (install_pages: ZAPPED, dead).
 */
static void readahead_step(struct uhmm_ctx *ctx)
{
	const size_t ns = sizeof(ctx->ra) / sizeof(ctx->ra[0]);
	struct readahead *s = NULL;
	for (size_t k = 0; k < ns && !s; k++) {
		struct readahead *x = &ctx->ra[(ctx->ra_turn + k) % ns];
		if (x->next < x->end)
			s = x;
	}
	if (!s)
		return;
	ctx->ra_turn = (unsigned)((size_t)(s - ctx->ra) + 1) % ns;
	struct uhmm_range *r = uhmm__range_get(ctx, s->next);
	if (!r) {
		s->next = s->end; /* the scan ran off its range */
		return;
	}
	/* What is left of a 2 MiB block a step: one copy and one move (a
	 * PMD where the block comes home whole), as the scan's own faults
	 * bring (policy.c).  A fault that arrives meanwhile waits for one
	 * step at most. */
	size_t bs = (s->next - r->start) >> PAGE_SHIFT;
	uintptr_t bend = (s->next & ~(uintptr_t)(UHMM_HUGE_SIZE - 1)) + UHMM_HUGE_SIZE;
	size_t step = (bend - s->next) >> PAGE_SHIFT;
	size_t be = bs + step < r->npages ? bs + step : r->npages;
	if (r->start + (be << PAGE_SHIFT) > s->end)
		be = (s->end - r->start) >> PAGE_SHIFT;
	s->next = r->start + (be << PAGE_SHIFT);
	size_t moved = 0;
	for (size_t i = bs; i < be;) {
		if (!range_blk_present(r, i)) {
			i += range_blk_left(r, i); /* nothing of it on a device */
			continue;
		}
		struct uhmm_page *p = range_page(r, i);
		unsigned dev;
		if (!uhmm__page_trylock(p)) {
			i++;
			continue;
		}
		dev = pg_devpriv(atomic_load_explicit(&p->word, memory_order_relaxed));
		if (!dev) {
			uhmm__page_unlock(ctx, p);
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < be) {
			struct uhmm_page *q = range_page(r, j);
			if (!uhmm__page_trylock(q))
				break;
			if (pg_loc(atomic_load_explicit(&q->word, memory_order_relaxed)) !=
			    LOC_DEV(dev)) {
				uhmm__page_unlock(ctx, q);
				break;
			}
			j++;
		}
		if (r->arr != s->arr || !epoch_holds(r, s->epoch)) {
			/* Migrated toward a device since the scan was last
			 * continued (or another range's): the scan ends. */
			for (size_t k = i; k < j; k++)
				uhmm__page_unlock(ctx, range_page(r, k));
			s->next = s->end;
			break;
		}
		moved += bring_home(ctx, r, i, j - i, SIZE_MAX, dev, 0, -1, false);
		i = j;
	}
	STAT_ADD(ctx, readahead_pages, moved);
	uhmm__range_put(r);
}

/*
 * Bring a device-resident page back, with what the policy says comes with
 * it: of its window, the neighbours that live on the same device and are
 * free.  Holds page idx.
 */
static void serve_device(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
			 unsigned dev, uint64_t fault_addr, bool write, struct how *how)
{
	uintptr_t pa = r->start + (idx << PAGE_SHIFT);
	struct uhmm_pol_cpu_fault pf = {
		.addr = fault_addr ? fault_addr : pa,
		.range_start = r->start, .range_end = range_end(r),
		.time_ns = uhmm__now_ns(), .where = dev, .write = write,
	};
	if ((pf.addr & ~(uint64_t)(PAGE_SIZE - 1)) != pa)
		pf.addr = pa;
	struct uhmm_pol_cpu_act act;
	/* (The scans read ahead are the service thread's.) */
	uhmm__pol_cpu_fault(ctx, &pf, !how->self, &act);
	size_t bs = (act.lo - r->start) >> PAGE_SHIFT, be = (act.hi - r->start) >> PAGE_SHIFT;
	size_t lo = idx, hi = idx + 1;
	while (lo > bs) {
		struct uhmm_page *p = range_page(r, lo - 1);
		if (!uhmm__page_trylock(p))
			break;
		if (pg_loc(atomic_load_explicit(&p->word, memory_order_relaxed)) != LOC_DEV(dev)) {
			uhmm__page_unlock(ctx, p);
			break;
		}
		lo--;
	}
	while (hi < be) {
		struct uhmm_page *p = range_page(r, hi);
		if (!uhmm__page_trylock(p))
			break;
		if (pg_loc(atomic_load_explicit(&p->word, memory_order_relaxed)) != LOC_DEV(dev)) {
			uhmm__page_unlock(ctx, p);
			break;
		}
		hi++;
	}
	if (hi - lo > 1 && !epoch_holds(r, how->epoch)) {
		/* A migration toward a device since the fault was read: only
		 * the faulting page comes home. */
		for (size_t i = lo; i < hi; i++)
			if (i != idx)
				uhmm__page_unlock(ctx, range_page(r, i));
		lo = idx;
		hi = idx + 1;
	}
	long slot = -1;
	if (how->self) {
		/* Warm pages to copy into: the whole window, else the faulting
		 * page alone, else the service thread (its bounce buffer). */
		uintptr_t lva = r->start + (lo << PAGE_SHIFT);
		if (ctx->move_in && hi - lo == BATCH_PAGES && !(lva & (UHMM_HUGE_SIZE - 1)) &&
		    block_wants_thp(r, lo))
			slot = uhmm__pool_get_huge(&ctx->pool, NULL, false); /* a whole block: a THP */
		if (slot < 0)
			slot = uhmm__pool_get(&ctx->pool, hi - lo, true);
		if (slot < 0 && hi - lo > 1) {
			for (size_t i = lo; i < hi; i++)
				if (i != idx)
					uhmm__page_unlock(ctx, range_page(r, i));
			lo = idx;
			hi = idx + 1;
			slot = uhmm__pool_get(&ctx->pool, 1, true);
		}
		if (slot < 0) {
			uhmm__page_unlock(ctx, range_page(r, idx));
			how->handoff = true;
			return;
		}
	}
	/* Counted before the faulting thread is woken: what it reads of the
	 * counters then includes its own fault. */
	STAT_INC(ctx, cpu_faults);
	STAT_INC(ctx, cpu_faults_device);
	size_t back = bring_home(ctx, r, lo, hi - lo, idx, dev, fault_addr, slot, how->self);
	if (back > 1)
		STAT_ADD(ctx, fault_around_pages, back - 1);
	if (!how->self && act.ahead_lo < act.ahead_hi)
		readahead_set(ctx, r, act.ahead_stream, act.ahead_lo, act.ahead_hi, how->epoch);
}

/*
 * What a fault message is checked against when it is served: the page's
 * sequence number, and its pages' dev_epoch, when the message was read.
 *
 * The sequence number.  A message is only read while its thread sleeps in the kernel, but the thread can be
 * woken after that (another fault on the page was served, and UFFDIO_MOVE
 * wakes every thread waiting on it), leaving us holding a stale message.
 * Acting on it later, after the page went back to a device, would migrate
 * the page for nobody.  So a fault is served only if the page has not moved
 * since its message was read; otherwise its thread (if it still waits) is
 * woken to fault again and tell us the truth.
 *
 * The epoch: uhmm_migrate's promise.  A migration toward a device bumps its
 * pages' dev_epoch before it locks any of them (migrate_collect).  What a
 * fault brings home besides its own page (fault-around) and what the scans
 * read ahead is speculative: it moves only if the epoch, read after the
 * pages are locked, is still the one of when the fault was read.  So once
 * uhmm_migrate() toward a device returned, nothing speculative decided
 * before it moves its pages home: either the speculation held the pages
 * (and read the old epoch) before the migration locked them, which then
 * moved them after it, or it sees the new epoch and lets them be.  Only a
 * touch after the migration brings a page back.
 */
static struct parked_fault fault_msg(struct uhmm_ctx *ctx, uintptr_t addr,
				     uint64_t flags, struct fault_req *req)
{
	struct parked_fault f = { .addr = addr, .flags = flags, .req = req };
	struct uhmm_range *r = uhmm__range_get(ctx, addr & ~(PAGE_SIZE - 1));
	if (!r)
		return f;
	f.seq = atomic_load_explicit(
		&range_page_peek(r, ((addr & ~(PAGE_SIZE - 1)) - r->start) >> PAGE_SHIFT)->seq,
		memory_order_relaxed);
	f.epoch = atomic_load_explicit(&r->arr->dev_epoch, memory_order_seq_cst);
	uhmm__range_put(r);
	return f;
}

/*
 * A CPU touch of a page a device holds exclusively: the holder drops it and
 * fences its atomics in flight (UHMM_INV_REVOKE), then the page, which never
 * left system memory, is moved back into place from its reserve slot.
 * Holds page idx.
 */
static void serve_revoke(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
			 unsigned holder, struct how *how)
{
	STAT_INC(ctx, cpu_faults); /* (before the wake: see serve_device) */
	uint64_t t0 = uhmm__now_ns();
	uintptr_t va = r->start + (idx << PAGE_SHIFT);
	UHMM_PROBE(exclusive_revoke, holder, va);
	bool inv = uhmm__invalidate_start(ctx, va, va + PAGE_SIZE, UHMM_INV_REVOKE,
					  uhmm__dev_get(ctx, holder), 0);
	uint8_t want = 1;
	struct install_req req = {
		.r = r, .idx = idx, .n = 1, .want = &want,
		.src = pool_slot(&ctx->pool,
				 atomic_load_explicit(&range_page(r, idx)->dpfn,
						      memory_order_relaxed)),
		.src_is_slots = true,
	};
	install(ctx, &req, how->self);
	if (want == 0)
		uhmm__page_unlock(ctx, range_page(r, idx)); /* mapping gone */
	uhmm__invalidate_end(ctx, va, va + PAGE_SIZE, inv);
	STAT_INC(ctx, exclusive_revocations);
	STAT_ADD(ctx, exclusive_revoke_ns, uhmm__now_ns() - t0);
}

/*
 * Serve the CPU fault at fault_addr on page idx of r, which the caller
 * holds, by where the page is.  Shared by the service thread (serve_fault)
 * and the faulting thread in SIGBUS mode (uhmm__serve_self); what differs
 * is in how.  The page is unlocked (published) when it returns.
 */
static void serve_locked(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
			 bool write, uint64_t fault_addr, struct how *how)
{
	uint64_t t0 = uhmm__trace_t0(ctx);
	uint32_t w = atomic_load_explicit(&range_page(r, idx)->word, memory_order_relaxed);
	uintptr_t va = r->start + (idx << PAGE_SHIFT);
	UHMM_PROBE(cpu_fault_start, fault_addr, write, how->self);
	/* A write-protect fault (ctx->wp: a no-move migration protected the
	 * page while it copied it, and kept it): the page is present, so the
	 * fill below finds it there (EEXIST) and wakes the thread, which
	 * writes.  A SIGBUS handler cannot tell the two faults apart: a
	 * write to a page at home clears the protection either way. */
	/* Read-mostly duplicates (dup.c): any CPU fault on the page collapses
	 * them (a write-protect fault, or one a SIGBUS handler cannot tell
	 * from it); the protection goes with them.  A write-protect fault on
	 * a page at home without them (a protection carried by a page that
	 * went and came back) is only unprotected. */
	if (unlikely(w & PG_DUP)) {
		uhmm__dup_collapse_locked(ctx, r, idx);
		w &= ~PG_DUP;
	} else if (ctx->wp && write && pg_loc(w) == LOC_CPU) {
		/* (First the duplicates above: this wakes the writer.) */
		(void)uhmm__uffd_writeprotect(ctx->uffd, va, PAGE_SIZE, false);
	} else if (unlikely(write && (how->wp || how->self) && !ctx->wp &&
			    pg_loc(w) == LOC_CPU &&
			    atomic_load_explicit(&ctx->rm_any, memory_order_relaxed))) {
		(void)uhmm__uffd_writeprotect(ctx->uffd, va, PAGE_SIZE, false);
	}
	if (pg_loc(w) == LOC_CPU) {
		serve_zero(ctx, r, idx, write, how);
	} else if (pg_loc(w) == LOC_POISON) {
		/* Lost on a device (coherent.c): the thread gets SIGBUS
		 * with BUS_MCEERR_AR, as for a hardware-poisoned page. */
		uhmm__page_unlock(ctx, range_page(r, idx));
		if (how->self)
			uhmm__sb_poisoned = true; /* sigbus.c passes it on */
		else
			uhmm__poison_fault(ctx, fault_addr);
	} else if (pg_coh(w)) {
		/* In place on a coherent device, yet missing: the kernel
		 * zapped it (a discard whose event is on its way).  Its frame
		 * goes; the thread faults again on an empty system page. */
		(void)uhmm__page_publish_unlock(ctx, range_page(r, idx), LOC_CPU, 0);
		if (!how->self)
			uhmm__uffd_wake(ctx->uffd, va, PAGE_SIZE);
	} else if (pg_excl(w))
		serve_revoke(ctx, r, idx, pg_dev(w), how);
	else
		serve_device(ctx, r, idx, pg_dev(w), fault_addr, write, how);
	if (!how->handoff && !how->again)
		UHMM_PROBE(cpu_fault_done, fault_addr, write, w, t0, how->self);
	uhmm__trace_cpu_fault(ctx, fault_addr, write, w, how->tid, t0, how->handoff || how->again);
}

/*
 * Serve one CPU fault.  Returns false if it had to be parked.  @hint: the
 * range found at the fault's address when its message was read (a
 * reference the caller holds), or NULL; it is used when it still is the
 * range there (not dead), saving a second lookup, else the table is asked.
 */
static bool serve_fault(struct uhmm_ctx *ctx, const struct parked_fault *f,
			bool *unknown, struct uhmm_range *hint)
{
	uintptr_t pa = f->addr & ~(PAGE_SIZE - 1);
	struct uhmm_range *r = hint;
	if (!r || atomic_load_explicit(&r->dead, memory_order_acquire) || pa < r->start ||
	    pa >= range_end(r)) {
		hint = NULL;
		r = uhmm__range_get(ctx, pa);
	}
	if (!r) {
		*unknown = true;
		return true;
	}
	size_t idx = (pa - r->start) >> PAGE_SHIFT;
	struct uhmm_page *p = range_page(r, idx);
	while (!uhmm__page_trylock(p)) {
		/* Held by a coherent reclaim writing it in place, which may
		 * wait for this very fault (coherent.c): zeros, not a park. */
		if (unlikely(atomic_load_explicit(&p->word, memory_order_acquire) & PG_POPULATE) &&
		    uhmm__coh_serve_populate(ctx, p, pa, f->flags)) {
			if (!hint)
				uhmm__range_put(r);
			return true;
		}
		if (uhmm__page_park(p)) {
			if (!hint)
				uhmm__range_put(r);
			return false;
		}
	}
	if (atomic_load_explicit(&p->seq, memory_order_relaxed) != f->seq) {
		uhmm__page_unlock(ctx, p); /* stale: see page_seq() */
		uhmm__uffd_wake(ctx->uffd, pa, PAGE_SIZE);
	} else {
		struct how how = { .self = false, .epoch = f->epoch };
		how.tid = f->tid;
		how.wp = (f->flags & UFFD_PAGEFAULT_FLAG_WP) != 0;
		serve_locked(ctx, r, idx, f->flags & UFFD_PAGEFAULT_FLAG_WRITE, f->addr, &how);
	}
	if (!hint)
		uhmm__range_put(r);
	return true;
}

/* ---- SIGBUS mode: the faulting thread serves itself ---- */

bool uhmm__fault_request(struct uhmm_ctx *ctx, uintptr_t addr, bool write)
{
	struct fault_req q = { .addr = addr,
			       .flags = write ? UFFD_PAGEFAULT_FLAG_WRITE : 0 };
	pthread_mutex_lock(&ctx->req_lock);
	*ctx->freq_tail = &q;
	ctx->freq_tail = &q.next;
	pthread_mutex_unlock(&ctx->req_lock);
	uhmm__service_kick(ctx);
	while (!atomic_load_explicit(&q.done, memory_order_acquire))
		uhmm_futex_wait(&q.done, 0);
	return !q.unknown;
}

/*
 * The SIGBUS handler's service of a fault (sigbus.c), on the faulting
 * thread: the same code as the service thread's (serve_locked), with what
 * is the service thread's own left out: it sleeps on a busy page's lock
 * instead of parking the fault, installs pages itself between
 * uhmm__sb_enter and uhmm__sb_leave (events_begin), and hands to the
 * service thread what it cannot do: an install refused while the address
 * space changes (uhmm__install_request, which reads the events), a fault
 * with no warm page to copy into (uhmm__fault_request).  A zero-fill
 * refused with EAGAIN is left to a new fault once the service thread has
 * read the pending events (uhmm__service_sync).
 */
void uhmm__serve_self(struct uhmm_ctx *ctx, struct uhmm_range *r, uintptr_t addr,
		      bool write)
{
	uintptr_t pa = addr & ~(PAGE_SIZE - 1);
	size_t idx = (pa - r->start) >> PAGE_SHIFT;
	struct uhmm_page *p = range_page(r, idx);
	uint32_t seq = atomic_load_explicit(&p->seq, memory_order_relaxed);
	uint32_t epoch = atomic_load_explicit(&r->arr->dev_epoch, memory_order_seq_cst);
	if (!uhmm__page_trylock(p)) {
		/* Busy: wait for the owner, once (hard point 1). */
		STAT_INC(ctx, cpu_faults_waited);
		uhmm__page_lock(p);
		if (atomic_load_explicit(&p->seq, memory_order_relaxed) != seq) {
			/* It moved meanwhile (home, most likely, by the
			 * fault we waited for): fault again if it still is
			 * missing. */
			uhmm__page_unlock(ctx, p);
			return;
		}
	}
	struct how how = { .self = true, .epoch = epoch };
	how.tid = uhmm__trace_tid();
	serve_locked(ctx, r, idx, write, addr, &how);
	if (how.handoff)
		uhmm__fault_request(ctx, addr, write);
	else if (how.again)
		uhmm__service_sync(ctx);
}

/*
 * Serve f, or park it if its page is busy (returns false then).  A fault
 * outside every managed range is memory we registered but no longer know
 * (the grown tail of an mremap, or a range being released): serve zeros
 * like the kernel would, or let the thread retry and meet the truth.  A
 * SIGBUS handler waiting for f goes once it is not parked.
 */
static bool serve_or_park(struct uhmm_ctx *ctx, const struct parked_fault *f)
{
	uintptr_t pa = f->addr & ~(PAGE_SIZE - 1);
	uint64_t flags = f->flags;
	bool unknown = false;
	if (!serve_fault(ctx, f, &unknown, NULL)) {
		park(ctx, f);
		return false;
	}
	/* The grown tail of a range (mremap): managed from now on. */
	if (unknown && uhmm__ranges_grow(ctx, pa) == 0) {
		unknown = false;
		if (!serve_fault(ctx, f, &unknown, NULL)) {
			park(ctx, f);
			return false;
		}
	}
	if (unknown && f->req)
		f->req->unknown = true;
	if (unknown && !f->req) {
		/* (A SIGBUS handler's fault is known to be on a range: it
		 * went away, and the thread faults again to meet the truth.
		 * Only a message says the address is ours.) */
		size_t done;
		long ret = fill_zeros(ctx, NULL, pa, PAGE_SIZE,
				      flags & UFFD_PAGEFAULT_FLAG_WRITE, &done, NULL);
		if (ret < 0)
			uhmm__uffd_wake(ctx->uffd, pa, PAGE_SIZE);
	}
	fault_done(f);
	return true;
}

static void redispatch_parked(struct uhmm_ctx *ctx)
{
	size_t n = ctx->nparked;
	if (!n)
		return;
	struct parked_fault *list = ctx->parked;
	ctx->parked = NULL;
	ctx->nparked = ctx->cap_parked = 0;
	for (size_t i = 0; i < n; i++)
		(void)serve_or_park(ctx, &list[i]);
	uhmm__umem_free(list);
}

/* ---- the loop ---- */

#define MSG_BATCH 64
#define IDLE_TRIM_NS 1000000000ull

_Atomic(uhmm__event_hook_fn) uhmm__event_hook;

static void event_hook(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	uhmm__event_hook_fn hook = atomic_load_explicit(&uhmm__event_hook,
							memory_order_acquire);
	if (unlikely(hook))
		hook(ctx, start, end);
}

/*
 * An mremap with MREMAP_DONTUNMAP leaves its source mapped: empty (its
 * pages moved), and still registered with our userfaultfd.  Its data went
 * with the range (uhmm__ranges_remap); the source is ordinary memory now,
 * which reads as zeros: unregister it so the kernel serves it, as it would
 * without uhmm (in SIGBUS mode a touch of it would otherwise raise a
 * SIGBUS that no range claims, and kill).  Done before the range moves in
 * uhmm's table: until then a registration over the source waits (it
 * overlaps a live range), so what is unregistered here is not someone's
 * new managed memory.  A moved-away source is unmapped by the time the
 * event is read: mincore says so (ENOMEM) and nothing is done.
 */
static void remap_source_release(struct uhmm_ctx *ctx, uintptr_t from, size_t len)
{
	unsigned char v;
	if (mincore((void *)from, PAGE_SIZE, &v) == 0)
		(void)uhmm__uffd_unregister(ctx->uffd, from, len);
}

/*
 * REMOVE, UNMAP, REMAP: the CPU page table changed (or is about to).
 *
 * The notifiers' sequences stay odd from before the callbacks until uhmm's
 * own state has changed (the kernel's invalidate_range_start/end): a range
 * fault that began after the callbacks but read the page states before the
 * change would otherwise return, as final, device pages the change is
 * about to free (seen: after an madvise(DONTNEED) racing a device kernel,
 * the device kept reading the freed pages' old data).  Nothing between
 * start and end waits for a page lock: the handlers only trylock.
 */
static void handle_event(struct uhmm_ctx *ctx, const struct uffd_msg *m)
{
	ctx->events_seen++;
	uintptr_t start, end;
	bool inv;
	switch (m->event) {
	case UFFD_EVENT_REMOVE:
		/* Read before the kernel zaps: mirrors drop the pages
		 * now, racing only the zap itself. */
		start = m->arg.remove.start;
		end = m->arg.remove.end;
		/* uhmm's own discard (a no-move migration dropping the CPU
		 * copy of pages it holds, migrate.c): nothing to tell, and
		 * not the application's madvise to count. */
		if (uhmm__ranges_own_discard(ctx, start, end))
			break;
		STAT_INC(ctx, events_remove);
		inv = uhmm__invalidate_start(ctx, start, end, UHMM_INV_ZAP, NULL, 0);
		event_hook(ctx, start, end);
		uhmm__ranges_zap(ctx, start, end);
		uhmm__invalidate_end(ctx, start, end, inv);
		break;
	case UFFD_EVENT_UNMAP:
		STAT_INC(ctx, events_unmap);
		start = m->arg.remove.start;
		end = m->arg.remove.end;
		inv = uhmm__invalidate_start(ctx, start, end, UHMM_INV_UNMAP, NULL, 0);
		event_hook(ctx, start, end);
		uhmm__ranges_unmap(ctx, start, end);
		uhmm__invalidate_end(ctx, start, end, inv);
		break;
	case UFFD_EVENT_REMAP:
		STAT_INC(ctx, events_remap);
		start = m->arg.remap.from;
		end = start + m->arg.remap.len;
		inv = uhmm__invalidate_start(ctx, start, end, UHMM_INV_REMAP, NULL,
					     m->arg.remap.to);
		event_hook(ctx, start, end);
		remap_source_release(ctx, start, m->arg.remap.len);
		uhmm__ranges_remap(ctx, m->arg.remap.from, m->arg.remap.to,
				   m->arg.remap.len);
		uhmm__invalidate_end(ctx, start, end, inv);
		break;
	default:
		break;
	}
}

/*
 * An install or zero-fill was refused with EAGAIN and no progress: the
 * kernel will not fill pages while an event is pending (mmap_changing),
 * and this thread is the one that reads events.  Read them now and handle
 * the events; faults read meanwhile are parked with their sequence
 * snapshot and served by the main loop.  Callers hold page locks: the
 * event handlers only trylock, and mark pages they cannot take ZAPPED,
 * which the caller checks again before retrying.
 */
static size_t drain_events(struct uhmm_ctx *ctx)
{
	struct uffd_msg m[16];
	ssize_t got;
	size_t total = 0, faults = 0;
	for (;;) {
		events_begin(ctx);
		got = read(ctx->uffd, m, sizeof(m));
		if (got <= 0) {
			events_end(ctx);
			break;
		}
		total += (size_t)got / sizeof(m[0]);
		for (size_t i = 0; i < (size_t)got / sizeof(m[0]); i++) {
			if (m[i].event == UFFD_EVENT_PAGEFAULT) {
				uintptr_t a = m[i].arg.pagefault.address;
				struct parked_fault f =
					fault_msg(ctx, a, m[i].arg.pagefault.flags, NULL);
				park(ctx, &f);
				faults++;
			} else {
				handle_event(ctx, &m[i]);
			}
		}
		events_end(ctx);
	}
	/* These faults wait on no page lock, so no unlock will kick us for
	 * them; and we may be redispatching the parked list right now (an
	 * install of redispatch_parked met EAGAIN), past which the loop
	 * would sleep in poll.  Kick ourselves: the loop comes round. */
	if (faults)
		uhmm__service_kick(ctx);
	return total;
}


static void handle_msgs(struct uhmm_ctx *ctx, struct uffd_msg *m, size_t n,
			struct parked_fault *unknown, size_t *nunknown)
{
	/* Sequence snapshots first, before serving anything moves pages.
	 * The ranges found are kept for serving (one lookup a fault) as long
	 * as no event has been handled since: only events change a range
	 * under this thread's feet without ending it (dead). */
	uint32_t seq[MSG_BATCH], epoch[MSG_BATCH];
	struct uhmm_range *rr[MSG_BATCH];
	for (size_t i = 0; i < n; i++) {
		rr[i] = NULL;
		if (m[i].event != UFFD_EVENT_PAGEFAULT)
			continue;
		uintptr_t pa = m[i].arg.pagefault.address & ~(PAGE_SIZE - 1);
		rr[i] = uhmm__range_get(ctx, pa);
		seq[i] = rr[i] ? atomic_load_explicit(
					 &range_page_peek(rr[i], (pa - rr[i]->start) >> PAGE_SHIFT)->seq,
					 memory_order_relaxed)
			       : 0;
		epoch[i] = rr[i] ? atomic_load_explicit(&rr[i]->arr->dev_epoch,
							memory_order_seq_cst)
				 : 0;
	}
	uint64_t ev0 = ctx->events_seen;
	/*
	 * Then every event of the batch, in order, before any fault is
	 * served.  Serving a fault can meet EAGAIN and read further events
	 * (drain_events), which it handles at once: had an earlier event of
	 * this batch not been handled yet, the two would be applied out of
	 * order.  (Seen: munmap(B) returns once its UNMAP is read; another
	 * thread then mremaps a range onto B; its REMAP, read by a fault's
	 * drain, was applied first and the late UNMAP(B) cut the range just
	 * moved in.)  A fault read before an event and served after it sees
	 * the page as the event left it, as if it had been read after it: it
	 * was not yet served, so nothing depended on the order.
	 */
	for (size_t i = 0; i < n; i++)
		if (m[i].event != UFFD_EVENT_PAGEFAULT)
			handle_event(ctx, &m[i]);
	events_end(ctx);
	for (size_t i = 0; i < n; i++) {
		if (m[i].event != UFFD_EVENT_PAGEFAULT)
			continue;
		struct parked_fault f = { .addr = m[i].arg.pagefault.address,
					  .flags = m[i].arg.pagefault.flags,
					  .seq = seq[i], .epoch = epoch[i] };
		f.tid = m[i].arg.pagefault.feat.ptid;
		bool unk = false;
		if (!serve_fault(ctx, &f, &unk, ctx->events_seen == ev0 ? rr[i] : NULL)) {
			STAT_INC(ctx, cpu_faults_waited);
			park(ctx, &f);
		} else if (unk) {
			unknown[(*nunknown)++] = f;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (rr[i])
			uhmm__range_put(rr[i]);
}

/*
 * Look for the next message (or a kick) for up to spin_us before sleeping:
 * what poll() would say, or 0 if nothing came.  A fault that arrives
 * meanwhile is read without this thread having slept, so without the
 * wake-up that a sleeping one costs (uhmm.h, spin_us).
 */
static int service_spin(struct uhmm_ctx *ctx, struct pollfd *fds)
{
	uint64_t t0 = uhmm__now_ns(), budget = (uint64_t)ctx->opts.spin_us * 1000u;
	do {
		int ready = poll(fds, 2, 0);
		if (ready != 0) {
			if (ready > 0)
				STAT_INC(ctx, service_spin_hits);
			return ready;
		}
		if (atomic_load_explicit(&ctx->stop, memory_order_acquire))
			return 0;
		/* The thread we woke may be queued behind us on this CPU
		 * (the scheduler puts a wakee near its waker): let it run. */
		sched_yield();
	} while (uhmm__now_ns() - t0 < budget);
	return 0;
}

static void *service_main(void *arg)
{
	struct uhmm_ctx *ctx = arg;
	struct pollfd fds[2] = { { .fd = ctx->uffd, .events = POLLIN },
				 { .fd = ctx->evfd, .events = POLLIN } };
	struct uffd_msg msgs[MSG_BATCH];
	struct parked_fault unknown[MSG_BATCH];
	/* Spin before the next sleep (spin_us): armed by a round that read
	 * messages.  Not in SIGBUS mode, where the faults are not ours. */
	const bool can_spin = !ctx->sigbus && ctx->opts.spin_us;
	bool spin = false;

	while (!atomic_load_explicit(&ctx->stop, memory_order_acquire)) {
		/* Pages lingering in the pool above its idle target, the
		 * reserve's extent above its initial size and the warm
		 * bounce buffers are released once nobody has taken slots
		 * for IDLE_TRIM_NS (pool_max_pages).  No event comes of it:
		 * the reserve is not registered with ctx->uffd. */
		int timeout = uhmm__pool_idle_wait_ms(&ctx->pool, IDLE_TRIM_NS);
		if (timeout == 0) {
			uhmm__pool_release_idle(&ctx->pool);
			continue;
		}
		/* Read-ahead to do: only look for messages, then do a block
		 * of it if there are none (faults and events come first). */
		bool ra = readahead_pending(ctx);
		int ready = 0;
		if (spin && !ra)
			ready = service_spin(ctx, fds);
		spin = false;
		if (ready == 0)
			ready = poll(fds, 2, ra ? 0 : timeout);
		if (ready < 0 && errno != EINTR)
			break;
		if (ready == 0) {
			if (ra)
				readahead_step(ctx);
			continue;
		}
		if (fds[1].revents & POLLIN) {
			uint64_t v;
			ssize_t rr = read(ctx->evfd, &v, sizeof(v));
			(void)rr;
		}
		/* Faults and events first: they block application threads. */
		for (;;) {
			events_begin(ctx);
			ssize_t got = read(ctx->uffd, msgs, sizeof(msgs));
			if (got <= 0) {
				events_end(ctx);
				break;
			}
			size_t nunknown = 0;
			spin = can_spin;
			handle_msgs(ctx, msgs, (size_t)got / sizeof(msgs[0]), unknown,
				    &nunknown);
			/* Unknown addresses: an event read in the same batch
			 * (mremap) may have made them known. */
			for (size_t i = 0; i < nunknown; i++)
				(void)serve_or_park(ctx, &unknown[i]);
		}
		serve_requests(ctx);
		redispatch_parked(ctx);
	}
	return NULL;
}

int uhmm__service_start(struct uhmm_ctx *ctx)
{
	ctx->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx->evfd < 0)
		return -errno;
	ctx->req_head = NULL;
	ctx->req_tail = &ctx->req_head;
	ctx->freq_head = NULL;
	ctx->freq_tail = &ctx->freq_head;
	int err = uhmm__umem_thread_create(&ctx->service, service_main, ctx);
	if (err) {
		close(ctx->evfd);
		ctx->evfd = -1;
		return -EAGAIN;
	}
	return 0;
}

void uhmm__service_stop(struct uhmm_ctx *ctx)
{
	atomic_store_explicit(&ctx->stop, true, memory_order_release);
	uhmm__service_kick(ctx);
	uhmm__umem_thread_join(ctx->service, NULL);
	close(ctx->evfd);
	ctx->evfd = -1;
	/* SIGBUS handlers still waiting (none should: every page is home):
	 * let them fault again. */
	for (struct fault_req *q = ctx->freq_head, *next; q; q = next) {
		next = q->next;
		fault_req_done(q);
	}
	ctx->freq_head = NULL;
	ctx->freq_tail = &ctx->freq_head;
	for (size_t i = 0; i < ctx->nparked; i++)
		fault_done(&ctx->parked[i]);
	uhmm__umem_free(ctx->parked);
	ctx->parked = NULL;
	ctx->nparked = ctx->cap_parked = 0;
}
