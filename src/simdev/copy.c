/* SPDX-License-Identifier: MIT */
/*
 * copy.c - simdev's copy engine: worker threads that run submitted batches
 * of copies in FIFO order, fences to wait for them, and the transfer model.
 *
 * Locks: struct copy_engine.lock guards the queue, the fence table, the
 * batch cache and the counters.  Under it a thread only waits on
 * work_cond / done_cond; copies, sleeps of the transfer model and malloc
 * all run without it.
 *
 * Life of a batch:
 *   submit    gets a fence, enters the fence table and the queue tail
 *   claim     runners take chunks of its copies from the queue head; once
 *             every copy is claimed it leaves the queue (a batch may be
 *             split across runners, and a copy larger than CLAIM_BYTES
 *             into parts)
 *   complete  the runner finishing its last chunk wakes waiters
 *   wait      the single waiter removes it from the fence table and frees it
 * A batch is freed only by copy_wait or at stop, never by a runner, so a
 * runner may touch its claimed copies without the lock.
 *
 * Who runs the copies.  Without a transfer model the engine is just the
 * CPU, and handing a copy to another thread costs two scheduler round trips
 * (wake the worker, wake the waiter), which on a small machine dominate a
 * small batch.  So, when no transfer model is set:
 *   - a batch of at most INLINE_BYTES submitted to an empty queue is run
 *     by the submitter, inside copy_submit (FIFO order is kept: nothing is
 *     queued before it);
 *   - a waiter whose batch is at the queue head claims chunks of it too,
 *     so the caller's core copies beside the workers' instead of idling.
 * With a transfer model set, only the copy_threads workers run copies, as
 * the model's DMA engines; with more than one, a large copy is split into
 * CLAIM_BYTES parts that the engines run side by side (a real GPU's copy
 * engines split a transfer the same way), each part reserving its bytes
 * on the link, so together they run at the link's bandwidth where one
 * thread's memcpy is slower than it.
 *
 * Transfer model (include/uhmm/simdev.h, "Transfer model and link
 * presets").  Each direction of the link (to the device, from it, and peer
 * hops into it) has a time at which it is next free (simdev.link_free); a
 * copy reserves bytes / bandwidth of its direction from max(now, free,
 * the end of its engine's previous transfer) by CAS, and completes latency
 * after its reservation ends.  So one engine runs copies back to back
 * (latency + transfer each), several overlap their latencies but share the
 * bandwidth.
 *
 * Modelled time is kept by the waiter.  A chunk's memcpy is the data
 * moving; its modelled end (its deadline) is when the transfer would have
 * completed.  The runner does not sleep it out: it records the deadline in
 * the batch and takes the next chunk, as a DMA engine's descriptors queue
 * behind one another while the CPU of the emulation runs ahead; the
 * batch's waiter (copy_wait) sleeps until the batch's latest deadline
 * before it returns, and a fence (copy_fence) until the latest of every
 * batch.  A waiter therefore never sees a batch done before the model
 * says, while an engine thread never idles in a sleep when it has work
 * (measured: two engines' parts each slept ~24 us past short remainders,
 * and a 2 MiB transfer took 424 us instead of the link's 131; see
 * docs/PERFORMANCE.md).  The sleeps run with a timer slack of 1 ns (the
 * default 50 us would stretch each past the transfer it models).
 *
 * Peer hops.  A device-to-device move is two batches from one thread: the
 * old device's FROM_DEVICE copies into a bounce buffer, then the new
 * device's TO_DEVICE copies out of it (core/migrate.c).  Each thread keeps,
 * in thread-local storage, the spans that its last run of consecutive
 * FROM_DEVICE-only submissions wrote (device, span, time of submission);
 * any other submission consumes them: its TO_DEVICE copies whose source
 * lies in a span of another simdev are peer hops (counted; charged at the
 * peer model when one is set, from the first hop's submission on).  An
 * invalidation delivered in the thread forgets them too (simdev.c's hop
 * notifier): every migration starts with one, before its copies, so a move
 * device -> system followed by a move system -> device is not taken for a
 * peer hop, while the two hops of one device-to-device batch are.
 */
#define _GNU_SOURCE
#include <sys/prctl.h>

#include "simdev/simdev_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "util/dmacopy.h"

/* A runner claims about this much of a batch at once; a copy larger than
 * this is split into parts of this size (without a transfer model, or
 * with several modelled engines). */
#define CLAIM_BYTES (256u << 10)
#define CLAIM_PAGES (CLAIM_BYTES / UHMM_PAGE_SIZE)
/* Largest batch the submitter runs itself (no transfer model only). */
#define INLINE_BYTES (256u << 10)
/* Spare batch structs kept for reuse. */
#define BATCH_CACHE_MAX 32u
/* FROM_DEVICE spans a thread remembers (peer hops): one per source device
 * of a batch that moves pages from several devices at once. */
#define HOP_SPANS 4u

/* A span of system memory a simdev's FROM_DEVICE batch wrote. */
struct hop_span {
	const struct simdev *src;
	uintptr_t lo, hi;
	uint64_t t;                /* submission, CLOCK_MONOTONIC ns */
};

/* The modelled end of the last transfer this thread ran (a copy engine
 * runs one transfer at a time). */
static __thread uint64_t engine_free __attribute__((tls_model("initial-exec")));

/*
 * This thread's last run of FROM_DEVICE-only submissions (see above).
 * initial-exec, as every thread variable of uhmm's: the default model
 * reaches it through __tls_get_addr and the thread's DTV, which glibc
 * allocates with malloc, in the application's heap -- memory an
 * application may register, and a fault-service thread migrating the page
 * that holds its own DTV would wait on itself.  (132 bytes of static TLS.)
 */
static __thread struct {
	unsigned n;                /* spans[0, n) */
	struct hop_span s[HOP_SPANS];
} hops __attribute__((tls_model("initial-exec")));

struct copy_batch {
	struct uhmm_copy *copies;  /* the caller's array */
	size_t n;
	size_t claimed;            /* copies [0, claimed) belong to runners */
	uint32_t part;             /* pages of copies[claimed] given out in parts */
	size_t inflight;           /* chunks claimed and not finished */
	bool complete;             /* every copy claimed and finished */
	size_t err_idx;            /* lowest failing index, or SIZE_MAX */
	int err;                   /* its status */
	uhmm_fence_t fence;
	bool waited;               /* a copy_wait owns it */
	struct copy_batch *qnext;  /* queue link */
	struct copy_batch *hnext;  /* fence-table or cache link */
	/* Peer hops: the spans of other simdevs its TO_DEVICE copies read
	 * (only with a peer model; npeer 0 otherwise). */
	unsigned npeer;
	struct hop_span peer[HOP_SPANS];
	uint64_t deadline;         /* latest modelled end of its chunks (0: none) */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- transfer model ----------------------------------------------------- */

/* bytes / bandwidth in ns (GB/s = bytes per ns); 0 for no limit. */
static uint64_t xfer_ns(uint64_t bytes, double gbps)
{
	if (!(gbps > 0))
		return 0;
	double t = (double)bytes / gbps;
	return t >= 1.8e19 ? UINT64_MAX : (uint64_t)t;
}

/* True if the simdev has a peer model. */
static bool peer_modelled(const struct simdev *sd)
{
	return sd->peer_bandwidth_gbps > 0 || sd->peer_latency_ns > 0;
}

/*
 * The time copy @c (valid) may complete by the transfer model, from @now,
 * or 0 when it is free; reserves its direction of the link and adds what
 * it charges to the counters.  @peer: the span of the first hop when @c is
 * a peer hop (and the simdev has a peer model).  A ZERO fill happens inside
 * the device: latency only.
 */
static uint64_t link_charge(struct simdev *sd, const struct uhmm_copy *c,
			    const struct hop_span *peer, uint64_t now)
{
	uint64_t bytes = (uint64_t)c->npages * UHMM_PAGE_SIZE;
	uint64_t lat, xfer, from = now;
	_Atomic uint64_t *fr;

	if (peer) {
		lat = sd->peer_latency_ns;
		xfer = xfer_ns(bytes, sd->peer_bandwidth_gbps);
		fr = &sd->link_free[SD_LINK_PEER_IN];
		from = peer->t < now ? peer->t : now; /* the pair's start */
	} else if (c->dir == UHMM_COPY_ZERO) {
		if (!sd->latency_ns)
			return 0;
		atomic_fetch_add_explicit(&sd->link_model_ns, sd->latency_ns,
					  memory_order_relaxed);
		engine_free = sat_add(engine_free > now ? engine_free : now, sd->latency_ns);
		return engine_free;
	} else {
		lat = sd->latency_ns;
		xfer = xfer_ns(bytes, sd->bandwidth_gbps);
		fr = &sd->link_free[c->dir == UHMM_COPY_TO_DEVICE ? SD_LINK_TO_DEV
								  : SD_LINK_FROM_DEV];
	}
	if (!lat && !xfer)
		return 0;
	if (engine_free > from)
		from = engine_free;
	uint64_t start, cur = atomic_load_explicit(fr, memory_order_relaxed);
	do {
		start = cur > from ? cur : from;
	} while (!atomic_compare_exchange_weak_explicit(fr, &cur, sat_add(start, xfer),
							memory_order_relaxed,
							memory_order_relaxed));
	atomic_fetch_add_explicit(peer ? &sd->peer_model_ns : &sd->link_model_ns,
				  sat_add(lat, xfer), memory_order_relaxed);
	engine_free = sat_add(sat_add(start, xfer), lat);
	return engine_free;
}

/* Sleep until @deadline (CLOCK_MONOTONIC ns) if it is still ahead, with a
 * timer slack of 1 ns meanwhile (the caller's is restored: a waiter may be
 * an application's thread). */
static void sleep_until(uint64_t deadline)
{
	if (!deadline || deadline <= now_ns())
		return;
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / 1000000000ull),
		.tv_nsec = (long)(deadline % 1000000000ull),
	};
	int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	if (slack > 1)
		(void)prctl(PR_SET_TIMERSLACK, 1ul, 0, 0, 0);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
	if (slack > 1)
		(void)prctl(PR_SET_TIMERSLACK, (unsigned long)slack, 0, 0, 0);
}

/* ---- one copy ----------------------------------------------------------- */

static bool copy_is_valid(const struct devmem *dm, const struct uhmm_copy *c)
{
	switch (c->dir) {
	case UHMM_COPY_TO_DEVICE:
	case UHMM_COPY_FROM_DEVICE:
		if (!c->sys)
			return false;
		break;
	case UHMM_COPY_ZERO:
		break;
	default:
		return false;
	}
	return uhmm__devmem_range_ok(dm, c->dpfn, c->npages);
}

/* Pages [off, off + np) of copy @c (valid), or only the first half of
 * them if @fail (an injected link error in the middle of the transfer). */
static void copy_move_data(struct simdev *sd, const struct uhmm_copy *c,
			   uint32_t off, uint32_t np, bool fail)
{
	size_t len = (size_t)(fail ? np / 2 : np) * UHMM_PAGE_SIZE;
	size_t at = (size_t)off * UHMM_PAGE_SIZE;
	unsigned char *dev = uhmm__devmem_ptr(&sd->mem, c->dpfn + off);

	switch (c->dir) {
	case UHMM_COPY_TO_DEVICE:
		uhmm__dma_copy(dev, (const unsigned char *)c->sys + at, len);
		break;
	case UHMM_COPY_FROM_DEVICE:
		uhmm__dma_copy((unsigned char *)c->sys + at, dev, len);
		break;
	default: /* UHMM_COPY_ZERO */
		memset(dev, 0, len);
		break;
	}
}

/* The first-hop span of batch @b that copy @c reads, if @c is a peer hop. */
static const struct hop_span *peer_span(const struct copy_batch *b,
					const struct uhmm_copy *c)
{
	if (c->dir != UHMM_COPY_TO_DEVICE)
		return NULL;
	uintptr_t a = (uintptr_t)c->sys;
	for (unsigned i = 0; i < b->npeer; i++)
		if (a >= b->peer[i].lo && a < b->peer[i].hi)
			return &b->peer[i];
	return NULL;
}

/*
 * Runs copy @c of batch @b whole and returns its status.  An injected
 * failure writes the first half of the destination, then reports -EIO, as
 * a link error in the middle of a transfer would.
 */
static int copy_run_one(struct simdev *sd, const struct copy_batch *b,
			const struct uhmm_copy *c, uint64_t *deadline)
{
	if (!copy_is_valid(&sd->mem, c))
		return -EINVAL;

	uint64_t d = link_charge(sd, c, peer_span(b, c), now_ns());
	if (d > *deadline)
		*deadline = d;
	bool fail = uhmm__simdev_should_fail(&sd->fi[UHMM_SIMDEV_FAIL_COPY]);
	copy_move_data(sd, c, 0, c->npages, fail);
	return fail ? -EIO : 0;
}

/* ---- queue, fence table, cache (all under eng->lock) -------------------- */

static struct copy_batch **fence_bucket_locked(struct copy_engine *eng,
					       uhmm_fence_t fence)
{
	return &eng->fences[fence % COPY_FENCE_BUCKETS];
}

static struct copy_batch *fence_find_locked(struct copy_engine *eng,
					    uhmm_fence_t fence)
{
	for (struct copy_batch *b = *fence_bucket_locked(eng, fence); b; b = b->hnext)
		if (b->fence == fence)
			return b;
	return NULL;
}

static void fence_del_locked(struct copy_engine *eng, struct copy_batch *b)
{
	struct copy_batch **pp = fence_bucket_locked(eng, b->fence);
	while (*pp != b)
		pp = &(*pp)->hnext;
	*pp = b->hnext;
	b->hnext = NULL;
}

/* True if copies run on the copy_threads workers only (transfer model). */
static bool engine_modelled(const struct simdev *sd)
{
	return sd->bandwidth_gbps > 0 || sd->latency_ns > 0 || peer_modelled(sd);
}

/*
 * A chunk of a batch: copies [first, first + k) whole (part == false), or
 * pages [off, off + np) of copies[first] alone (part == true).
 */
struct chunk {
	size_t first, k;
	uint32_t off, np;
	bool part;
	bool fail; /* a part chosen by fault injection to fail */
};

/*
 * Claim the next chunk of batch @b (at the queue head, with copies left):
 * about CLAIM_BYTES of whole copies, or, without a transfer model, the next
 * part of a valid copy larger than that.  A copy split into parts has its
 * status set to 0 and its injected failure drawn as its first part is
 * claimed; a copy drawn to fail is not split (it runs as one part, writing
 * half its destination, as copy_run_one would).  Takes @b off the queue
 * once every copy is claimed.
 */
static void claim_locked(struct simdev *sd, struct copy_engine *eng,
			 struct copy_batch *b, struct chunk *ch)
{
	struct uhmm_copy *c = &b->copies[b->claimed];
	/* Split large copies where another runner can take the other parts:
	 * always without a model (the waiter helps), and over several
	 * modelled engines (one 2 MiB transfer over all of them; each part
	 * reserves its share of the link). */
	bool split = !engine_modelled(sd) || eng->nthreads > 1;

	*ch = (struct chunk){ .first = b->claimed };
	bool parts = split && b->part > 0; /* a copy already being split */
	if (split && b->part == 0 && c->npages > CLAIM_PAGES &&
	    copy_is_valid(&sd->mem, c)) {
		parts = true;
		c->status = 0;
		if (uhmm__simdev_should_fail(&sd->fi[UHMM_SIMDEV_FAIL_COPY])) {
			ch->part = ch->fail = true;
			ch->np = c->npages;
			b->part = c->npages;
		}
	}
	if (ch->fail) {
		/* taken whole just above */
	} else if (parts) {
		ch->part = true;
		ch->off = b->part;
		ch->np = c->npages - b->part < CLAIM_PAGES ? c->npages - b->part
							   : CLAIM_PAGES;
		b->part += ch->np;
	} else {
		size_t left = b->n - b->claimed, k = 0;
		uint64_t bytes = 0;
		if (eng->nthreads == 1 && !split) {
			k = left; /* one modelled engine: the whole batch */
		} else {
			while (k < left && (k == 0 || bytes < CLAIM_BYTES)) {
				const struct uhmm_copy *x = &b->copies[b->claimed + k];
				/* A large copy starts a chunk of its own. */
				if (k > 0 && split && x->npages > CLAIM_PAGES)
					break;
				bytes += (uint64_t)x->npages * UHMM_PAGE_SIZE;
				k++;
			}
		}
		ch->k = k;
		b->claimed += k;
	}
	if (ch->part && b->part == c->npages) {
		b->part = 0;
		b->claimed++;
	}
	b->inflight++;
	if (b->claimed == b->n) {
		/* b is the head: every copy is claimed, off the queue. */
		eng->head = b->qnext;
		if (!eng->head)
			eng->tail = NULL;
		b->qnext = NULL;
	}
}

/* Runs chunk @ch of @b without the lock; returns its status. */
static int chunk_run(struct simdev *sd, struct copy_batch *b, const struct chunk *ch,
		     size_t *err_idx, uint64_t *deadline)
{
	*err_idx = SIZE_MAX;
	*deadline = 0;
	if (ch->part) {
		const struct uhmm_copy *c = &b->copies[ch->first];
		/* Modelled: the part takes its bytes' share of the link. */
		struct uhmm_copy pc = *c;
		pc.npages = ch->np;
		*deadline = engine_modelled(sd) ? link_charge(sd, &pc, peer_span(b, c), now_ns())
						: 0;
		copy_move_data(sd, c, ch->off, ch->np, ch->fail);
		if (ch->fail)
			*err_idx = ch->first;
		return ch->fail ? -EIO : 0;
	}
	int err = 0;
	for (size_t i = ch->first; i < ch->first + ch->k; i++) {
		int st = copy_run_one(sd, b, &b->copies[i], deadline);
		b->copies[i].status = (int16_t)st;
		if (st && *err_idx == SIZE_MAX) {
			*err_idx = i;
			err = st;
		}
	}
	return err;
}

/*
 * Record a finished chunk.  The runner finishing the batch's last chunk
 * counts its successful copies and wakes the waiters.
 */
static void chunk_done_locked(struct simdev *sd, struct copy_engine *eng,
			      struct copy_batch *b, const struct chunk *ch,
			      int err, size_t err_idx, uint64_t deadline)
{
	if (deadline > b->deadline)
		b->deadline = deadline;
	if (ch->part && err)
		b->copies[ch->first].status = (int16_t)err;
	if (err_idx < b->err_idx) {
		b->err_idx = err_idx;
		b->err = err;
	}
	if (--b->inflight || b->claimed < b->n)
		return;
	uint64_t copies = 0, bytes = 0;
	for (size_t i = 0; i < b->n; i++) {
		if (b->copies[i].status)
			continue;
		copies++;
		bytes += (uint64_t)b->copies[i].npages * UHMM_PAGE_SIZE;
	}
	atomic_fetch_add_explicit(&sd->copies, copies, memory_order_relaxed);
	atomic_fetch_add_explicit(&sd->bytes_copied, bytes, memory_order_relaxed);
	b->complete = true;
	if (b->deadline > eng->deadline)
		eng->deadline = b->deadline;
	eng->busy--;
	pthread_cond_broadcast(&eng->done_cond);
}

/* Claim, run and record one chunk of @b (at the queue head); @caller: run
 * by a submitter or waiter.  Called and returns with the lock held. */
static void run_chunk_locked(struct simdev *sd, struct copy_engine *eng,
			     struct copy_batch *b, bool caller)
{
	struct chunk ch;
	claim_locked(sd, eng, b, &ch);
	eng->chunks++;
	eng->chunks_by_caller += caller;
	/* Work is left: hand it to an idle sibling. */
	if (eng->head && eng->nthreads > 1)
		pthread_cond_signal(&eng->work_cond);
	pthread_mutex_unlock(&eng->lock);
	/* b stays allocated until it is complete, which needs this chunk. */
	size_t err_idx;
	uint64_t deadline;
	int err = chunk_run(sd, b, &ch, &err_idx, &deadline);
	pthread_mutex_lock(&eng->lock);
	chunk_done_locked(sd, eng, b, &ch, err, err_idx, deadline);
}

/* ---- workers ------------------------------------------------------------ */

static void *copy_worker(void *arg)
{
	struct simdev *sd = arg;
	struct copy_engine *eng = &sd->eng;

	pthread_mutex_lock(&eng->lock);
	for (;;) {
		while (!eng->head && !eng->stop)
			pthread_cond_wait(&eng->work_cond, &eng->lock);
		struct copy_batch *b = eng->head;
		if (!b)
			break; /* stop, and nothing left to run */
		run_chunk_locked(sd, eng, b, false);
	}
	pthread_mutex_unlock(&eng->lock);
	return NULL;
}

static void engine_free_batches(struct copy_engine *eng)
{
	for (unsigned i = 0; i < COPY_FENCE_BUCKETS; i++) {
		while (eng->fences[i]) {
			struct copy_batch *b = eng->fences[i];
			eng->fences[i] = b->hnext;
			uhmm__umem_free(b);
		}
	}
	while (eng->cache) {
		struct copy_batch *b = eng->cache;
		eng->cache = b->hnext;
		uhmm__umem_free(b);
	}
	eng->ncache = 0;
}

int uhmm__copy_start(struct simdev *sd, unsigned nthreads)
{
	struct copy_engine *eng = &sd->eng;

	memset(eng, 0, sizeof(*eng));
	if (nthreads == 0 || nthreads > SIMDEV_MAX_THREADS)
		return -EINVAL;
	eng->nthreads = nthreads;
	eng->next_fence = 1;
	pthread_mutex_init(&eng->lock, NULL);
	pthread_cond_init(&eng->work_cond, NULL);
	pthread_cond_init(&eng->done_cond, NULL);

	/* Library threads take no signals meant for the application. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = 0;
	for (unsigned i = 0; i < nthreads; i++) {
		if (uhmm__umem_thread_create(&eng->threads[i], copy_worker, sd) != 0) {
			err = -EAGAIN;
			break;
		}
		char name[16];
		snprintf(name, sizeof(name), "uhmm-copy%u", i);
		pthread_setname_np(eng->threads[i], name);
		eng->started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	if (err)
		uhmm__copy_stop(sd);
	return err;
}

void uhmm__copy_stop(struct simdev *sd)
{
	struct copy_engine *eng = &sd->eng;

	pthread_mutex_lock(&eng->lock);
	eng->stop = true;
	pthread_cond_broadcast(&eng->work_cond);
	pthread_mutex_unlock(&eng->lock);
	for (unsigned i = 0; i < eng->started; i++)
		uhmm__umem_thread_join(eng->threads[i], NULL);
	eng->started = 0;

	/* No thread left: batches nobody waited for are simply released. */
	engine_free_batches(eng);
	pthread_cond_destroy(&eng->done_cond);
	pthread_cond_destroy(&eng->work_cond);
	pthread_mutex_destroy(&eng->lock);
}

/* ---- submit / wait / fence ---------------------------------------------- */

/* Bytes a batch moves (its ZERO fills included). */
static uint64_t batch_bytes(const struct uhmm_copy *c, size_t n)
{
	uint64_t bytes = 0;
	for (size_t i = 0; i < n; i++)
		bytes += (uint64_t)c[i].npages * UHMM_PAGE_SIZE;
	return bytes;
}

void uhmm__copy_hops_forget(void)
{
	hops.n = 0;
}

/*
 * Peer hops of a submission of @copies[0, n) to @sd (see the top of the
 * file): a FROM_DEVICE-only batch adds its span to this thread's run; any
 * other consumes the run, counting its TO_DEVICE copies that read a span of
 * another simdev, and, with a peer model, leaves those spans in @peer
 * (HOP_SPANS of them) for the copies' charge.  Returns how many it left.
 */
static unsigned hops_note(struct simdev *sd, const struct uhmm_copy *copies, size_t n,
			  struct hop_span *peer)
{
	bool from_only = n > 0;
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	for (size_t i = 0; i < n && from_only; i++) {
		if (copies[i].dir != UHMM_COPY_FROM_DEVICE || !copies[i].sys) {
			from_only = false;
			break;
		}
		uintptr_t a = (uintptr_t)copies[i].sys;
		uintptr_t e = a + (uintptr_t)copies[i].npages * UHMM_PAGE_SIZE;
		lo = a < lo ? a : lo;
		hi = e > hi ? e : hi;
	}
	if (from_only) {
		if (hops.n == HOP_SPANS) { /* the oldest goes */
			memmove(&hops.s[0], &hops.s[1], (HOP_SPANS - 1) * sizeof(hops.s[0]));
			hops.n--;
		}
		hops.s[hops.n++] = (struct hop_span){ .src = sd, .lo = lo, .hi = hi,
						      .t = now_ns() };
		return 0;
	}
	if (!hops.n)
		return 0;
	/* Spans of other simdevs only: a device reading back what it wrote
	 * itself is no peer hop. */
	unsigned ns = 0;
	for (unsigned j = 0; j < hops.n; j++)
		if (hops.s[j].src != sd)
			peer[ns++] = hops.s[j];
	hops.n = 0;
	uint64_t nhop = 0, bytes = 0;
	bool used[HOP_SPANS] = { false };
	for (size_t i = 0; i < n && ns; i++) {
		if (copies[i].dir != UHMM_COPY_TO_DEVICE)
			continue;
		uintptr_t a = (uintptr_t)copies[i].sys;
		for (unsigned j = 0; j < ns; j++) {
			if (a >= peer[j].lo && a < peer[j].hi) {
				nhop++;
				bytes += (uint64_t)copies[i].npages * UHMM_PAGE_SIZE;
				used[j] = true;
				break;
			}
		}
	}
	if (nhop) {
		atomic_fetch_add_explicit(&sd->peer_copies, nhop, memory_order_relaxed);
		atomic_fetch_add_explicit(&sd->peer_bytes, bytes, memory_order_relaxed);
	}
	if (!peer_modelled(sd))
		return 0;
	unsigned k = 0;
	for (unsigned j = 0; j < ns; j++)
		if (used[j])
			peer[k++] = peer[j];
	return k;
}

int uhmm__copy_submit(struct simdev *sd, struct uhmm_copy *copies, size_t n,
		      uhmm_fence_t *fence)
{
	struct copy_engine *eng = &sd->eng;

	if (!fence || (n && !copies))
		return -EINVAL;
	struct hop_span peer[HOP_SPANS];
	unsigned npeer = hops_note(sd, copies, n, peer);
	bool small = n > 0 && !engine_modelled(sd) && batch_bytes(copies, n) <= INLINE_BYTES;

	pthread_mutex_lock(&eng->lock);
	struct copy_batch *b = eng->cache;
	if (b) {
		eng->cache = b->hnext;
		eng->ncache--;
	} else {
		pthread_mutex_unlock(&eng->lock);
		b = uhmm__umem_malloc(sizeof(*b));
		if (!b)
			return -ENOMEM;
		pthread_mutex_lock(&eng->lock);
	}
	if (eng->stop) {
		pthread_mutex_unlock(&eng->lock);
		uhmm__umem_free(b);
		return -ESHUTDOWN;
	}

	*b = (struct copy_batch){
		.copies = copies,
		.n = n,
		.complete = n == 0, /* an empty batch is complete at once */
		.err_idx = SIZE_MAX,
		.fence = eng->next_fence++,
		.npeer = npeer,
	};
	memcpy(b->peer, peer, npeer * sizeof(peer[0]));
	struct copy_batch **bucket = fence_bucket_locked(eng, b->fence);
	b->hnext = *bucket;
	*bucket = b;
	*fence = b->fence;
	if (n > 0) {
		/* Run by the submitter: small, and nothing queued before it. */
		bool inline_run = small && !eng->head;
		if (eng->tail)
			eng->tail->qnext = b;
		else
			eng->head = b;
		eng->tail = b;
		eng->busy++;
		if (!inline_run)
			pthread_cond_signal(&eng->work_cond);
		/* Our chunks are claimed from the head on; a worker woken for
		 * another batch may take some of them, which is fine. */
		while (inline_run && eng->head == b)
			run_chunk_locked(sd, eng, b, true);
	}
	pthread_mutex_unlock(&eng->lock);
	return 0;
}

int uhmm__copy_wait(struct simdev *sd, uhmm_fence_t fence)
{
	struct copy_engine *eng = &sd->eng;

	pthread_mutex_lock(&eng->lock);
	struct copy_batch *b = fence_find_locked(eng, fence);
	if (!b || b->waited) {
		pthread_mutex_unlock(&eng->lock);
		return -EINVAL;
	}
	b->waited = true;
	/* Help: run chunks of our batch once it reaches the queue head. */
	bool help = !engine_modelled(sd);
	while (!b->complete) {
		if (help && eng->head == b)
			run_chunk_locked(sd, eng, b, true);
		else
			pthread_cond_wait(&eng->done_cond, &eng->lock);
	}
	/* Every status of the batch is final (written before it completed). */
	fence_del_locked(eng, b);
	int ret = b->err;
	uint64_t deadline = b->deadline;
	if (eng->ncache < BATCH_CACHE_MAX) {
		b->hnext = eng->cache;
		eng->cache = b;
		eng->ncache++;
		b = NULL;
	}
	pthread_mutex_unlock(&eng->lock);
	uhmm__umem_free(b);
	sleep_until(deadline); /* the transfer model's end of the batch */
	return ret;
}

int uhmm__copy_fence(struct simdev *sd)
{
	struct copy_engine *eng = &sd->eng;

	pthread_mutex_lock(&eng->lock);
	while (eng->busy > 0)
		pthread_cond_wait(&eng->done_cond, &eng->lock);
	uint64_t deadline = eng->deadline;
	pthread_mutex_unlock(&eng->lock);
	sleep_until(deadline);
	return 0;
}
