/* SPDX-License-Identifier: MIT */
/*
 * uhmm-torture - random operations from several threads on several managed
 * ranges, every byte checked against a shadow model (issue 7, item 1).
 *
 *   uhmm-torture [--seed N] [--seconds S | --ops N] [--threads T]
 *                [--ranges R] [--dev-mib M] [--watchdog S] [--sigbus]
 *                [--no-KIND ...]
 *
 * How the shadow stays exact under concurrency (docs/RELIABILITY.md):
 *
 *  - Each range slot has a pthread rwlock.  Operations that change the
 *    range's mapping or whole contents (munmap/re-mmap, mremap, mprotect,
 *    madvise of any subrange, fork, full verify) take it for writing; every
 *    other operation takes it for reading.
 *  - Under the read lock, data bytes are partitioned: page 0 of a range is
 *    the counter page (atomics only); pages 1.. are grouped in chunks of
 *    CHUNK pages and chunk c belongs to thread c % T.  A thread writes,
 *    discards and compares only its own chunks under the read lock, so its
 *    part of the shadow changes only by its own hand; migrations, exclusive
 *    grabs and other threads' faults race with it on the same pages, which
 *    is the point.
 *  - Device kernels write deterministic values: value(seed, op id, offset).
 *    Each work item records (in unmanaged memory) how many of its stores or
 *    atomics completed, so the launching thread replays exactly those into
 *    the shadow, even when the launch fails part-way.
 *  - Counter words take atomic adds from CPU threads and device kernels at
 *    once; the shadow adds the completed increments atomically and is
 *    compared only under the write lock.
 *  - madvise(MADV_DONTNEED), a new mapping: the shadow says zero.
 *  - Device memory is a cache: devices far smaller than the ranges
 *    (--dev-mib 4) keep eviction running; another tenant takes and gives
 *    back device memory (uhmm_simdev_set_tenant) and the backend asks for
 *    memory back (uhmm_device_evict, uhmm_device_evict_frames) as random
 *    operations.  Eviction changes no byte, so they run under the read
 *    lock, and a migration may fail -ENOMEM only as may_enomem() says.
 *  - --coherent: device 1's memory is coherent (issue 19: pages migrated
 *    there are mapped in place, the CPU reads and writes them there).
 *  - --poison: under the write lock, a page moved to a device is reported
 *    lost there (uhmm_simdev_poison): it alone is excluded from the
 *    comparison while it is poisoned (every other byte of the range is
 *    compared, also after a migration over it, which must say -EHWPOISON),
 *    then discarded (madvise: zeros in the shadow) before the lock goes.
 */
#define _GNU_SOURCE
#include <uhmm/device.h>
#include <uhmm/mirror.h>
#include <uhmm/policy.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <dirent.h>
#include <errno.h>
#include <execinfo.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Debugging aid of the library (src/core/evict.c). */
void uhmm__debug_device_census(uhmm_ctx *ctx, unsigned dev, uint64_t *pages,
			       uint64_t *listed, uint64_t *frames);

#define PG ((size_t)UHMM_PAGE_SIZE)
#define HUGE_PG ((size_t)UHMM_HUGE_SIZE)
#define MiB ((size_t)1 << 20)
#define CHUNK 4u          /* pages per ownership chunk */
#define NCTR 64u          /* counter words on page 0 */
#define HIST 8u           /* op history entries kept per page */
#define MAX_ITEMS 8u      /* work items per launch */
#define MAX_THREADS 64u
#define NDEV 2
#define POLL_NS 2000000000ull
#define MAX_REPORTS 8

/* ------------------------------------------------------------------------ */
/* Operation kinds                                                           */

enum kind {
	K_CPU_WRITE, K_CPU_READ, K_CPU_ATOMIC, K_DEV_WRITE, K_DEV_READ,
	K_DEV_ATOMIC, K_MIGRATE, K_EXCLUSIVE, K_MADVISE_OWN, K_MADVISE,
	K_MUNMAP, K_MREMAP, K_MPROTECT, K_FORK, K_VERIFY, K_TENANT, K_EVICT, K_ADVISE,
	K_PREFETCH, K_POISON, K_COUNT
};

static const struct {
	const char *name;
	unsigned weight;
	bool whole; /* takes the range lock for writing */
} kinds[K_COUNT] = {
	[K_CPU_WRITE] = { "cpu-write", 20, false },
	[K_CPU_READ] = { "cpu-read", 15, false },
	[K_CPU_ATOMIC] = { "cpu-atomic", 8, false },
	[K_DEV_WRITE] = { "dev-write", 10, false },
	[K_DEV_READ] = { "dev-read", 8, false },
	[K_DEV_ATOMIC] = { "dev-atomic", 8, false },
	[K_MIGRATE] = { "migrate", 20, false },
	[K_EXCLUSIVE] = { "exclusive", 6, false },
	[K_MADVISE_OWN] = { "madvise-own", 4, false },
	[K_MADVISE] = { "madvise", 2, true },
	[K_MUNMAP] = { "munmap", 2, true },
	[K_MREMAP] = { "mremap", 2, true },
	[K_MPROTECT] = { "mprotect", 2, true },
	[K_FORK] = { "fork", 1, true },
	[K_VERIFY] = { "verify", 2, true },
	[K_TENANT] = { "tenant", 2, false },
	[K_EVICT] = { "evict", 3, false },
	[K_ADVISE] = { "advise", 2, false },
	[K_PREFETCH] = { "prefetch", 4, false },
	[K_POISON] = { "poison", 1, true }, /* only with --poison */
};

/* Per kind: completed ops, and outcomes of the library calls. */
struct kstat {
	atomic_ulong ops, ok, enomem, ebusy, eperm, other;
};
static struct kstat kst[K_COUNT];

/* ------------------------------------------------------------------------ */
/* Global state                                                              */

/* SLOT_FILE: a MAP_PRIVATE mapping of a temporary file holding a pattern,
 * adopted (uhmm_register_flags(UHMM_REGISTER_ADOPT_FILE), issue 15). */
enum slot_kind { SLOT_ALLOC, SLOT_REGISTERED, SLOT_FILE };

struct slot {
	pthread_rwlock_t lock;
	/* Changed under the write lock only. */
	uint8_t *base;
	size_t len, npages;
	enum slot_kind skind;
	uint8_t *shadow;          /* len bytes; page 0's counters: atomics */
	_Atomic uint64_t *hist;   /* npages * HIST: op id << 16 | kind << 8 | tid */
	atomic_uint *hidx;        /* npages */
	unsigned gen;             /* bumped at each re-mmap */
};

static struct {
	uint64_t seed;
	double seconds;
	uint64_t max_ops;
	unsigned threads, nranges, dev_mib, watchdog_s;
	bool disabled[K_COUNT];
	bool verbose;
	bool sigbus; /* --sigbus: UHMM_CTX_SIGBUS, faults served by the faulting threads */
	bool coherent; /* --coherent: device 1's memory is coherent */
	bool poison;   /* --poison: the poison operation runs */
	atomic_ulong poisoned, poison_skipped;
	bool readmostly; /* --readmostly: the advise op sets and unsets read-mostly too */
	uhmm_ctx *ctx;
	uhmm_device *dev[NDEV];
	pthread_mutex_t dev_lock[NDEV];
	struct slot *slots;
	atomic_ulong next_opid;
	atomic_ulong progress;     /* ops completed */
	atomic_bool stop;
	atomic_ulong checked_bytes, checked_words;
	atomic_ulong mismatches, unexpected;
	atomic_ulong kernel_partial;   /* launches that failed part-way, replayed */
	atomic_ulong fork_children;
	uint64_t deadline_ns;
	unsigned total_weight;
	pthread_mutex_t report_lock;
	/* Serialises the test's own mmap/munmap/mremap so that an address
	 * polled for (un)management is not reused meanwhile by another slot. */
	pthread_mutex_t map_lock;
	/* --serialize-events: operations that raise userfaultfd events
	 * (madvise, munmap, mremap) run alone, never while another operation
	 * may be faulting.  A workaround for the EAGAIN livelock of the fault
	 * service (tests/torture/repro/repro_eagain_livelock.c); drop it from
	 * the CI command once that is fixed. */
	bool serialize_events;
	pthread_rwlock_t event_lock;
	/* --no-ro-migrate: the mprotect operation does not migrate the
	 * read-only range. */
	bool no_ro_migrate;
	/* --no-uhmm-free: the munmap operation releases allocated ranges with
	 * munmap(2), never uhmm_free(), which leaves stale device mappings
	 * (tests/torture/repro/repro_free_stale_mirror.c). */
	bool no_uhmm_free;
	/* --thp: half of the registered ranges are THP-backed (2 MiB-aligned,
	 * MADV_HUGEPAGE, populated). */
	bool thp;
	/* Per device: the other tenant's share (uhmm_simdev_set_tenant),
	 * which decides what a migration may fail to fit in.  gen is odd
	 * while a set_tenant call runs (one at a time per device, under
	 * lock): a migration that saw gen change cannot know the capacity it
	 * met. */
	struct {
		pthread_mutex_t lock;
		atomic_uint gen;
		_Atomic uint64_t bytes;
	} tenant[NDEV];
	/* -ENOMEM of migrations toward a device, by why it was allowed
	 * (may_enomem()). */
	atomic_ulong enomem_over, enomem_blocks, enomem_resizing;
	atomic_ulong evicted_by_call; /* bytes uhmm_device_evict() returned */
} G;

struct tstate {
	unsigned id;
	pthread_t thr;
	uint64_t rng;
	/* For the watchdog. */
	_Atomic int cur_kind;      /* -1 idle */
	atomic_uint cur_slot;
	atomic_ulong cur_opid;
	atomic_ulong cur_start_ns;
	atomic_ulong done;
	atomic_long tid;
};
static struct tstate *TS;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void nap_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The value a device store writes: a function of (seed, op, offset). */
static uint64_t dev_value(uint64_t opid, uint64_t off)
{
	return mix64(G.seed * 0x100000001b3ull ^ mix64(opid) ^ (off * 0x2545f4914f6cdd1dull));
}

static uint64_t rnd(struct tstate *t)
{
	t->rng ^= t->rng << 13;
	t->rng ^= t->rng >> 7;
	t->rng ^= t->rng << 17;
	return t->rng;
}

static uint64_t rnd_below(struct tstate *t, uint64_t n)
{
	return n ? rnd(t) % n : 0;
}

/* ------------------------------------------------------------------------ */
/* Reporting                                                                 */

static void hist_add(struct slot *s, size_t page, uint64_t opid, enum kind k, unsigned tid)
{
	if (page >= s->npages)
		return;
	unsigned i = atomic_fetch_add_explicit(&s->hidx[page], 1, memory_order_relaxed);
	atomic_store_explicit(&s->hist[page * HIST + i % HIST],
			      opid << 16 | (uint64_t)k << 8 | tid, memory_order_relaxed);
}

static void hist_range(struct slot *s, size_t off, size_t len, uint64_t opid,
		       enum kind k, unsigned tid)
{
	for (size_t p = off / PG; p < s->npages && p * PG < off + len; p++)
		hist_add(s, p, opid, k, tid);
}

static void print_hist(struct slot *s, size_t page)
{
	unsigned n = atomic_load_explicit(&s->hidx[page], memory_order_relaxed);
	fprintf(stderr, "    history of page %zu (oldest first):", page);
	unsigned first = n > HIST ? n - HIST : 0;
	for (unsigned i = first; i < n; i++) {
		uint64_t e = atomic_load_explicit(&s->hist[page * HIST + i % HIST],
						  memory_order_relaxed);
		unsigned k = (unsigned)(e >> 8) & 0xff;
		fprintf(stderr, " [op %" PRIu64 " %s t%u]", e >> 16,
			k < K_COUNT ? kinds[k].name : "?", (unsigned)(e & 0xff));
	}
	fputc('\n', stderr);
}

static void mismatch(struct tstate *t, unsigned si, size_t off, unsigned width,
		     uint64_t expected, uint64_t got, const char *what)
{
	unsigned long n = atomic_fetch_add(&G.mismatches, 1);
	if (n >= MAX_REPORTS)
		return;
	struct slot *s = &G.slots[si];
	pthread_mutex_lock(&G.report_lock);
	fprintf(stderr,
		"MISMATCH #%lu (%s, thread %u, op %lu): range %u gen %u at %p (+%#zx, page %zu), "
		"%u bytes: expected %#" PRIx64 ", got %#" PRIx64 "\n",
		n + 1, what, t ? t->id : 0u, t ? atomic_load(&t->cur_opid) : 0ul, si, s->gen,
		(void *)(s->base + off), off, off / PG, width, expected, got);
	struct uhmm_page_info pi;
	int r = uhmm_page_query(G.ctx, s->base + off, &pi);
	if (r == 0)
		fprintf(stderr, "    page now: where %u seq %u device %s\n", pi.where, pi.seq,
			pi.device ? uhmm_device_name(pi.device) : "-");
	print_hist(s, off / PG);
	pthread_mutex_unlock(&G.report_lock);
}

/* After an -EIO (a page present in the CPU page table while uhmm records
 * it on a device: "present while on a device"), which pages of
 * [off, off + len) are in that state now, with their histories.  The
 * library keeps the device copy in that case, so the state lasts. */
static void report_split(struct slot *s, size_t off, size_t len)
{
	unsigned char vec[256];
	for (size_t p = off / PG; p < s->npages && p * PG < off + len;) {
		size_t n = s->npages - p < 256 ? s->npages - p : 256;
		if (mincore(s->base + p * PG, n * PG, vec))
			return;
		for (size_t i = 0; i < n && (p + i) * PG < off + len; i++) {
			struct uhmm_page_info pi;
			if (!(vec[i] & 1) || uhmm_page_query(G.ctx, s->base + (p + i) * PG, &pi) ||
			    pi.where != UHMM_WHERE_DEVICE)
				continue;
			fprintf(stderr, "    page %zu present and on %s (seq %u)\n", p + i,
				pi.device ? uhmm_device_name(pi.device) : "?", pi.seq);
			print_hist(s, p + i);
		}
		p += n;
	}
}

static void unexpected(struct tstate *t, enum kind k, const char *call, int err,
		       const char *fmt, ...)
{
	unsigned long n = atomic_fetch_add(&G.unexpected, 1);
	if (n >= MAX_REPORTS)
		return;
	va_list ap;
	pthread_mutex_lock(&G.report_lock);
	fprintf(stderr, "UNEXPECTED #%lu (thread %u, op %lu %s): %s = %d (%s): ", n + 1,
		t ? t->id : 0u, t ? atomic_load(&t->cur_opid) : 0ul, kinds[k].name, call, err,
		err < 0 ? uhmm_strerror(err) : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	pthread_mutex_unlock(&G.report_lock);
}

/* Count an outcome of a library call; returns true when it was allowed. */
static bool outcome(struct tstate *t, enum kind k, const char *call, int err,
		    bool ok_enomem, bool ok_ebusy, bool ok_eperm)
{
	switch (err) {
	case 0:
		atomic_fetch_add(&kst[k].ok, 1);
		return true;
	case -ENOMEM:
		atomic_fetch_add(&kst[k].enomem, 1);
		if (ok_enomem)
			return true;
		break;
	case -EBUSY:
		atomic_fetch_add(&kst[k].ebusy, 1);
		if (ok_ebusy)
			return true;
		break;
	case -EPERM:
		atomic_fetch_add(&kst[k].eperm, 1);
		if (ok_eperm)
			return true;
		break;
	default:
		atomic_fetch_add(&kst[k].other, 1);
		break;
	}
	unexpected(t, k, call, err, "not an allowed outcome");
	return false;
}

/* ------------------------------------------------------------------------ */
/* Device capacity: when may a migration toward a device say -ENOMEM?        */

/*
 * Device memory is a cache (src/core/evict.c): a migration toward a full
 * device evicts other pages and proceeds.  It may fail -ENOMEM only when
 * the device cannot hold what the request itself keeps there.  The
 * torture's rule, per call:
 *
 *  - the request's own pages exceed the device's capacity (mem_bytes less
 *    what the other tenant holds): allowed (include/uhmm/uhmm.h; "what
 *    fits moves", which the data check after the call covers);
 *  - a set_tenant call on that device ran during the migration: the
 *    capacity it met is unknown, allowed;
 *  - the request fits, but not the 2 MiB blocks of page state it touches:
 *    allowed, counted apart.  The evictor never takes a victim from a
 *    block the request overlaps (evict.c: a block overlapping the request
 *    is "own" whole, so that the request never trylocks pages it holds
 *    itself), so pages of those blocks outside the request stay on the
 *    device and count against it.  Blocks are 2 MiB of the range from its
 *    start (ranges are registered whole here, so page state index 0 is the
 *    range's first page);
 *  - anything else: unexpected.  This includes concurrent requests of
 *    other threads filling the device, since their pages are victims like
 *    any other (busy ones make the request back off, not fail at once).
 */
struct capsnap {
	unsigned gen;
	uint64_t cap; /* bytes the device holds for uhmm */
	uint64_t t0;  /* when the call began (for the report) */
};

static void cap_begin(unsigned d, struct capsnap *c)
{
	c->gen = atomic_load(&G.tenant[d].gen);
	c->cap = (uint64_t)G.dev_mib * MiB - atomic_load(&G.tenant[d].bytes);
	c->t0 = now_ns();
}

enum enomem_why { NOMEM_NO, NOMEM_OVER, NOMEM_BLOCKS, NOMEM_RESIZING };

static enum enomem_why may_enomem(unsigned d, const struct slot *s, size_t off, size_t len,
				  const struct capsnap *c)
{
	if ((c->gen & 1) || atomic_load(&G.tenant[d].gen) != c->gen)
		return NOMEM_RESIZING;
	if (len > c->cap)
		return NOMEM_OVER;
	size_t bp = UHMM_HUGE_SIZE / PG;
	size_t b0 = off / PG / bp, b1 = (off + len - 1) / PG / bp;
	size_t end = (b1 + 1) * bp < s->npages ? (b1 + 1) * bp : s->npages;
	if ((end - b0 * bp) * PG > c->cap)
		return NOMEM_BLOCKS;
	return NOMEM_NO;
}

/* The outcome of uhmm_migrate(@len at @off of @s) toward device @d. */
static bool migrate_outcome(struct tstate *t, enum kind k, const char *call, int r, unsigned d,
			    const struct slot *s, size_t off, size_t len,
			    const struct capsnap *c, bool ok_eperm)
{
	if (r == -ENOMEM) {
		switch (may_enomem(d, s, off, len, c)) {
		case NOMEM_OVER: atomic_fetch_add(&G.enomem_over, 1); break;
		case NOMEM_BLOCKS: atomic_fetch_add(&G.enomem_blocks, 1); break;
		case NOMEM_RESIZING: atomic_fetch_add(&G.enomem_resizing, 1); break;
		default:
			atomic_fetch_add(&kst[k].enomem, 1);
			unexpected(t, k, call, r,
				   "-ENOMEM though the request fits: %zu bytes at +%#zx of a "
				   "%zu-byte range, %s holds %" PRIu64 " bytes for uhmm "
				   "(after %.3f s)",
				   len, off, s->len, uhmm_device_name(G.dev[d]), c->cap,
				   (double)(now_ns() - c->t0) / 1e9);
			/* What the device holds, to tell a leaked frame (uhmm
			 * holds frames no listed block has) from a miss. */
			struct uhmm_device_stats ds;
			struct uhmm_simdev_meminfo mi;
			if (atomic_load(&G.unexpected) <= MAX_REPORTS &&
			    uhmm_device_stats(G.dev[d], &ds) == 0 &&
			    uhmm_simdev_meminfo(G.dev[d], &mi) == 0)
			{
				uint64_t pages, listed, frames;
				/* Device ids are given in order from 1: the
				 * context has no other devices. */
				uhmm__debug_device_census(G.ctx, 1 + (unsigned)d, &pages,
							  &listed, &frames);
				fprintf(stderr,
					"    %s: uhmm holds %" PRIu64 " bytes in %" PRIu64
					" LRU blocks; %" PRIu64 "/%" PRIu64 " pages free;"
					" census: %" PRIu64 " pages on it, %" PRIu64
					" in listed blocks, %" PRIu64 " frames held\n",
					uhmm_device_name(G.dev[d]), ds.bytes_in_use, ds.lru_blocks,
					mi.free_pages, mi.total_pages, pages, listed, frames);
			}
			return false;
		}
	}
	bool ok = outcome(t, k, call, r, true, true, ok_eperm);
	if (!ok && r == -EIO) {
		pthread_mutex_lock(&G.report_lock);
		report_split((struct slot *)s, off, len);
		pthread_mutex_unlock(&G.report_lock);
	}
	return ok;
}

/* After a migration home failed unexpectedly: where the pages of
 * [off, off + len) of @s are now (uhmm_page_query), and the areas of
 * /proc/self/maps that overlap it, so that the report tells which step
 * could have failed (a page still away, an area that changed). */
static void dump_where(const struct slot *s, size_t off, size_t len)
{
	if (atomic_load(&G.unexpected) > MAX_REPORTS)
		return;
	size_t count[8] = { 0 }, shown = 0, noq = 0;
	for (size_t o = off; o < off + len; o += PG) {
		struct uhmm_page_info pi;
		int e = uhmm_page_query(G.ctx, s->base + o, &pi);
		if (e) {
			if (noq++ < 4)
				fprintf(stderr, "    page +%#zx: uhmm_page_query %d\n", o, e);
			continue;
		}
		count[(unsigned)pi.where & 7]++;
		if (pi.where != UHMM_WHERE_CPU && shown++ < 4)
			fprintf(stderr, "    page +%#zx: where %d device %s\n", o, (int)pi.where,
				pi.device ? uhmm_device_name(pi.device) : "-");
	}
	fprintf(stderr, "    pages: cpu %zu device %zu exclusive %zu coherent %zu poisoned %zu,"
		" not managed %zu\n", count[0], count[1], count[2], count[3], count[4], noq);
	FILE *m = fopen("/proc/self/maps", "r");
	char line[256];
	uintptr_t lo = (uintptr_t)s->base + off, hi = lo + len;
	while (m && fgets(line, sizeof(line), m)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx", &a, &b) == 2 && b > lo && a < hi)
			fprintf(stderr, "    maps: %s", line);
	}
	if (m)
		fclose(m);
}

/* ------------------------------------------------------------------------ */
/* Shadow comparison                                                         */

/* Compares [off, off+len) of slot @si with the shadow; counter words of
 * page 0 are read atomically from the shadow.  Caller holds the lock in a
 * mode that makes the bytes stable. */
static void check_bytes(struct tstate *t, unsigned si, size_t off, size_t len,
			const char *what)
{
	struct slot *s = &G.slots[si];
	const uint8_t *m = s->base + off;
	const uint8_t *sh = s->shadow + off;
	atomic_fetch_add_explicit(&G.checked_bytes, len, memory_order_relaxed);
	if (off < NCTR * 8) {
		/* Counter words: compare word by word against the atomic shadow. */
		size_t end = len + off < NCTR * 8 ? len + off : NCTR * 8;
		for (size_t o = off & ~(size_t)7; o < end; o += 8) {
			uint64_t exp = __atomic_load_n((uint64_t *)(s->shadow + o), __ATOMIC_RELAXED);
			uint64_t got = __atomic_load_n((uint64_t *)(s->base + o), __ATOMIC_RELAXED);
			if (exp != got)
				mismatch(t, si, o, 8, exp, got, what);
		}
		if (end >= off + len)
			return;
		m = s->base + end;
		sh = s->shadow + end;
		len -= end - off;
		off = end;
	}
	if (memcmp(m, sh, len) == 0)
		return;
	for (size_t i = 0; i < len; i++)
		if (m[i] != sh[i]) {
			mismatch(t, si, off + i, 1, sh[i], m[i], what);
			/* One report per page is enough. */
			i = ((off + i) / PG + 1) * PG - off - 1;
		}
}

/* ------------------------------------------------------------------------ */
/* Ranges                                                                    */

static size_t pick_npages(struct tstate *t)
{
	size_t min = 1 + (size_t)CHUNK * G.threads * 2;
	if (min < 16)
		min = 16;
	size_t max = 1536; /* 6 MiB: a few of these fill a device */
	if (max < min)
		max = min;
	/* Mostly small, sometimes large. */
	if (rnd_below(t, 3) == 0)
		return min + rnd_below(t, max - min + 1);
	return min + rnd_below(t, (max - min) / 4 + 1);
}

static void advise_range(struct tstate *t, struct slot *s)
{
	for (int d = 0; d < NDEV; d++) {
		int r = uhmm_simdev_advise(G.dev[d], s->base, s->len,
					   rnd_below(t, 3) == 0 ? UHMM_SIMDEV_MAP_REMOTE
								: UHMM_SIMDEV_MIGRATE_ON_TOUCH);
		if (r)
			unexpected(t, K_MUNMAP, "uhmm_simdev_advise", r, "");
		r = uhmm_simdev_advise_atomics(G.dev[d], s->base, s->len,
					       (enum uhmm_simdev_atomic_policy)rnd_below(t, 3));
		if (r)
			unexpected(t, K_MUNMAP, "uhmm_simdev_advise_atomics", r, "");
	}
}

/* The byte every page i of a file slot holds at its start. */
static int file_byte(size_t i)
{
	return (int)(0x41 + i % 29);
}

/* Maps a new range into slot @s (zeros; a file slot's pattern).  Returns 0
 * or aborts the run. */
static int slot_map(struct tstate *t, struct slot *s, size_t npages)
{
	size_t len = npages * PG;
	int r;
	int fkind = (int)rnd_below(t, 3);
	s->skind = fkind == 0 ? SLOT_REGISTERED : fkind == 1 ? SLOT_FILE : SLOT_ALLOC;
	if (s->skind == SLOT_FILE) {
		char path[] = "/tmp/uhmm-torture-XXXXXX";
		int fd = mkstemp(path);
		if (fd < 0) {
			unexpected(t, K_MUNMAP, "mkstemp", -errno, "");
			return -ENOMEM;
		}
		unlink(path);
		static _Thread_local char pg[PG];
		for (size_t i = 0; i < npages; i++) {
			memset(pg, file_byte(i), PG);
			if (pwrite(fd, pg, PG, (off_t)(i * PG)) != (ssize_t)PG) {
				unexpected(t, K_MUNMAP, "pwrite", -errno, "");
				close(fd);
				return -ENOMEM;
			}
		}
		void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		close(fd);
		if (p == MAP_FAILED) {
			unexpected(t, K_MUNMAP, "mmap(file)", -errno, "len %zu", len);
			return -ENOMEM;
		}
		/* Some pages written before the adoption (copied on write),
		 * the rest still the file's. */
		for (size_t i = 0; i < npages; i += 2)
			((char *)p)[i * PG] = file_byte(i);
		r = uhmm_register_flags(G.ctx, p, len, UHMM_REGISTER_ADOPT_FILE);
		if (r) {
			unexpected(t, K_MUNMAP, "uhmm_register_flags(ADOPT_FILE)", r,
				   "%p len %zu", p, len);
			munmap(p, len);
			return r;
		}
		s->base = p;
	} else if (s->skind == SLOT_ALLOC) {
		void *p;
		r = uhmm_alloc(G.ctx, len, &p);
		if (r) {
			unexpected(t, K_MUNMAP, "uhmm_alloc", r, "len %zu", len);
			return r;
		}
		s->base = p;
	} else {
		/* Half of them THP-backed: whole 2 MiB blocks at aligned
		 * addresses, MADV_HUGEPAGE, populated with zeros (what the
		 * shadow says) before they are registered. */
		bool thp = G.thp && rnd_below(t, 2) == 0;
		if (thp) {
			npages = (npages + HUGE_PG / PG - 1) & ~(HUGE_PG / PG - 1);
			len = npages * PG;
		}
		void *p = mmap(NULL, len + (thp ? HUGE_PG : 0), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			unexpected(t, K_MUNMAP, "mmap", -errno, "len %zu", len);
			return -ENOMEM;
		}
		if (thp) {
			uintptr_t a = ((uintptr_t)p + HUGE_PG - 1) & ~(uintptr_t)(HUGE_PG - 1);
			if (a > (uintptr_t)p)
				munmap(p, a - (uintptr_t)p);
			if ((uintptr_t)p + HUGE_PG > a)
				munmap((void *)(a + len), (uintptr_t)p + HUGE_PG - a);
			p = (void *)a;
			(void)madvise(p, len, MADV_HUGEPAGE); /* advisory */
			for (size_t i = 0; i < len; i += HUGE_PG)
				((volatile uint8_t *)p)[i] = 0;
		}
		r = uhmm_register(G.ctx, p, len);
		if (r) {
			unexpected(t, K_MUNMAP, "uhmm_register", r, "%p len %zu", p, len);
			munmap(p, len);
			return r;
		}
		s->base = p;
	}
	s->len = len;
	s->npages = npages;
	s->shadow = calloc(1, len);
	s->hist = calloc(npages * HIST, sizeof(*s->hist));
	s->hidx = calloc(npages, sizeof(*s->hidx));
	if (!s->shadow || !s->hist || !s->hidx) {
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	if (s->skind == SLOT_FILE)
		for (size_t i = 0; i < npages; i++)
			memset(s->shadow + i * PG, file_byte(i), PG);
	s->gen++;
	advise_range(t, s);
	return 0;
}

/* Polls uhmm_page_query(@addr) until its result is or is not -EFAULT (the
 * library learns of munmap/mremap through events it reads asynchronously). */
static bool wait_managed(const void *addr, bool managed)
{
	struct uhmm_page_info pi;
	uint64_t t0 = now_ns();
	for (;;) {
		int r = uhmm_page_query(G.ctx, addr, &pi);
		if ((r == 0) == managed)
			return true;
		if (now_ns() - t0 > POLL_NS)
			return false;
		nap_ms(1);
	}
}

/* ------------------------------------------------------------------------ */
/* Device kernels                                                            */

struct witem {
	uint8_t *addr;     /* first unit */
	uint32_t nunits;
	uint32_t width;    /* 1, 2, 4, 8 */
};

struct wargs {
	uint64_t opid;
	uint8_t *base;
	struct witem items[MAX_ITEMS];
	uint32_t progress[MAX_ITEMS];
	uint64_t *out[MAX_ITEMS]; /* read kernel: where loaded words go */
};

static void k_write(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct wargs *a = arg;
	struct witem *it = &a->items[idx];
	for (uint32_t u = 0; u < it->nunits; u++) {
		uint8_t *p = it->addr + (size_t)u * it->width;
		uint64_t v = dev_value(a->opid, (uint64_t)(p - a->base));
		switch (it->width) {
		case 1: uhmm_simdev_st8(wi, p, (uint8_t)v); break;
		case 2: uhmm_simdev_st16(wi, p, (uint16_t)v); break;
		case 4: uhmm_simdev_st32(wi, p, (uint32_t)v); break;
		default: uhmm_simdev_st64(wi, p, v); break;
		}
		a->progress[idx] = u + 1;
	}
}

static void k_read(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct wargs *a = arg;
	struct witem *it = &a->items[idx];
	for (uint32_t u = 0; u < it->nunits; u++) {
		const uint8_t *p = it->addr + (size_t)u * it->width;
		uint64_t v;
		switch (it->width) {
		case 1: v = uhmm_simdev_ld8(wi, p); break;
		case 2: v = uhmm_simdev_ld16(wi, p); break;
		case 4: v = uhmm_simdev_ld32(wi, p); break;
		default: v = uhmm_simdev_ld64(wi, p); break;
		}
		a->out[idx][u] = v;
		a->progress[idx] = u + 1;
	}
}

/* Atomic kernel: item i adds inc(i, u) to counter words, then one atomic on
 * its own data word (add, xchg or cas with the shadow's value). */
enum { DA_ADD, DA_XCHG, DA_CAS };
struct aitem {
	uint32_t nctr;
	uint32_t ctr[8];
	uint64_t *data;    /* NULL: none */
	uint32_t dop;
	uint64_t dexp;     /* CAS: expected (the shadow's value) */
	uint64_t dval;     /* add: increment; xchg, cas: new value */
};
struct aargs {
	uint64_t opid;
	uint64_t *ctr;     /* the range's counter page */
	struct aitem items[MAX_ITEMS];
	uint32_t progress[MAX_ITEMS];
	uint64_t old[MAX_ITEMS];
};

static uint64_t ctr_inc(uint64_t opid, uint64_t idx, uint64_t u)
{
	return 1 + dev_value(opid, idx * 64 + u) % 7;
}

static void k_atomic(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct aargs *a = arg;
	struct aitem *it = &a->items[idx];
	uint32_t u;
	for (u = 0; u < it->nctr; u++) {
		uhmm_simdev_atomic_add64(wi, &a->ctr[it->ctr[u]], ctr_inc(a->opid, idx, u));
		a->progress[idx] = u + 1;
	}
	if (!it->data)
		return;
	switch (it->dop) {
	case DA_ADD: a->old[idx] = uhmm_simdev_atomic_add64(wi, it->data, it->dval); break;
	case DA_XCHG: a->old[idx] = uhmm_simdev_atomic_xchg64(wi, it->data, it->dval); break;
	default:
		a->old[idx] = uhmm_simdev_atomic_cas64(wi, it->data, it->dexp, it->dval);
		break;
	}
	a->progress[idx] = u + 1;
}

static int launch(unsigned d, uhmm_simdev_kernel fn, uint64_t grid, void *arg)
{
	pthread_mutex_lock(&G.dev_lock[d]);
	int r = uhmm_simdev_launch(G.dev[d], fn, grid, arg);
	pthread_mutex_unlock(&G.dev_lock[d]);
	return r;
}

/* ------------------------------------------------------------------------ */
/* Ownership                                                                 */

static size_t nchunks(const struct slot *s)
{
	return (s->npages - 1) / CHUNK;
}

/* A random chunk of thread @t in @s (its byte offset and length). */
static bool own_chunk(struct tstate *t, const struct slot *s, size_t *off, size_t *len)
{
	size_t n = nchunks(s);
	size_t mine = (n + G.threads - 1 - t->id) / G.threads; /* chunks c = id + k*T < n */
	if (!mine)
		return false;
	size_t c = t->id + rnd_below(t, mine) * G.threads;
	*off = (1 + c * CHUNK) * PG;
	*len = CHUNK * PG;
	return true;
}

/* ------------------------------------------------------------------------ */
/* Shared-lock operations                                                    */

static void op_cpu_write(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	unsigned n = 1 + (unsigned)rnd_below(t, 3);
	for (unsigned k = 0; k < n; k++) {
		size_t coff, clen;
		if (!own_chunk(t, s, &coff, &clen))
			return;
		size_t a = rnd_below(t, clen), b = rnd_below(t, clen);
		if (a > b) {
			size_t x = a; a = b; b = x;
		}
		if (rnd_below(t, 4) == 0)
			a = a & ~(PG - 1), b = a + PG; /* a whole page */
		b++;
		if (b > clen)
			b = clen;
		uint8_t *m = s->base + coff + a, *sh = s->shadow + coff + a;
		size_t len = b - a;
		switch (rnd_below(t, 4)) {
		case 0: { /* memset */
			uint8_t v = (uint8_t)rnd(t);
			memset(sh, v, len);
			memset(m, v, len);
			break;
		}
		case 1: /* random bytes, one by one */
			for (size_t i = 0; i < len && i < 256; i++) {
				uint8_t v = (uint8_t)rnd(t);
				sh[i] = v;
				m[i] = v;
			}
			len = len < 256 ? len : 256;
			break;
		default: { /* memcpy of a pattern */
			uint64_t x = rnd(t);
			for (size_t i = 0; i < len; i++)
				sh[i] = (uint8_t)(mix64(x + i / 8) >> (8 * (i % 8)));
			memcpy(m, sh, len);
			break;
		}
		}
		hist_range(s, coff + a, len, opid, K_CPU_WRITE, t->id);
	}
}

static void op_cpu_read(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	(void)opid;
	unsigned n = 1 + (unsigned)rnd_below(t, 4);
	for (unsigned k = 0; k < n; k++) {
		size_t coff, clen;
		if (!own_chunk(t, s, &coff, &clen))
			return;
		check_bytes(t, si, coff, clen, "cpu read");
	}
}

static void op_cpu_atomic(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	uint64_t *ctr = (uint64_t *)s->base, *sh = (uint64_t *)s->shadow;
	unsigned n = 1 + (unsigned)rnd_below(t, 16);
	for (unsigned k = 0; k < n; k++) {
		unsigned w = (unsigned)rnd_below(t, NCTR);
		uint64_t inc = 1 + rnd_below(t, 5);
		__atomic_fetch_add(&ctr[w], inc, __ATOMIC_SEQ_CST);
		__atomic_fetch_add(&sh[w], inc, __ATOMIC_RELAXED);
	}
	hist_add(s, 0, opid, K_CPU_ATOMIC, t->id);
}

static void op_dev_write(struct tstate *t, unsigned si, uint64_t opid, unsigned d)
{
	struct slot *s = &G.slots[si];
	struct wargs a;
	memset(&a, 0, sizeof(a));
	a.opid = opid;
	a.base = s->base;
	unsigned n = 1 + (unsigned)rnd_below(t, MAX_ITEMS);
	unsigned width = 1u << rnd_below(t, 4);
	/* Items write disjoint spans: item i in its own page of own chunks. */
	unsigned used = 0;
	for (unsigned i = 0; i < n; i++) {
		size_t coff, clen;
		if (!own_chunk(t, s, &coff, &clen))
			break;
		size_t pg = coff + rnd_below(t, CHUNK) * PG;
		bool dup = false;
		for (unsigned j = 0; j < used; j++)
			if ((size_t)(a.items[j].addr - s->base) / PG == pg / PG)
				dup = true;
		if (dup)
			continue;
		size_t units = PG / width;
		size_t first = rnd_below(t, units);
		size_t cnt = 1 + rnd_below(t, units - first);
		if (cnt > 512)
			cnt = 512;
		a.items[used].addr = s->base + pg + first * width;
		a.items[used].nunits = (uint32_t)cnt;
		a.items[used].width = width;
		used++;
	}
	if (!used)
		return;
	int r = launch(d, k_write, used, &a);
	outcome(t, K_DEV_WRITE, "uhmm_simdev_launch(write)", r, false, true, false);
	if (r)
		atomic_fetch_add(&G.kernel_partial, 1);
	/* Replay exactly the stores that completed. */
	for (unsigned i = 0; i < used; i++) {
		struct witem *it = &a.items[i];
		for (uint32_t u = 0; u < a.progress[i]; u++) {
			size_t off = (size_t)(it->addr - s->base) + (size_t)u * it->width;
			uint64_t v = dev_value(opid, off);
			memcpy(s->shadow + off, &v, it->width); /* little endian */
		}
		hist_add(s, (size_t)(it->addr - s->base) / PG, opid, K_DEV_WRITE, t->id);
	}
}

static void op_dev_read(struct tstate *t, unsigned si, uint64_t opid, unsigned d)
{
	struct slot *s = &G.slots[si];
	struct wargs a;
	static _Thread_local uint64_t outbuf[MAX_ITEMS][512];
	memset(&a, 0, sizeof(a));
	a.opid = opid;
	a.base = s->base;
	unsigned n = 1 + (unsigned)rnd_below(t, MAX_ITEMS);
	unsigned width = 1u << rnd_below(t, 4);
	unsigned used = 0;
	for (unsigned i = 0; i < n; i++) {
		size_t coff, clen;
		if (!own_chunk(t, s, &coff, &clen))
			break;
		size_t pg = coff + rnd_below(t, CHUNK) * PG;
		size_t units = PG / width;
		size_t first = rnd_below(t, units);
		size_t cnt = 1 + rnd_below(t, units - first);
		if (cnt > 512)
			cnt = 512;
		a.items[used].addr = s->base + pg + first * width;
		a.items[used].nunits = (uint32_t)cnt;
		a.items[used].width = width;
		a.out[used] = outbuf[used];
		used++;
	}
	if (!used)
		return;
	int r = launch(d, k_read, used, &a);
	outcome(t, K_DEV_READ, "uhmm_simdev_launch(read)", r, false, true, false);
	for (unsigned i = 0; i < used; i++) {
		struct witem *it = &a.items[i];
		for (uint32_t u = 0; u < a.progress[i]; u++) {
			size_t off = (size_t)(it->addr - s->base) + (size_t)u * it->width;
			uint64_t exp = 0;
			memcpy(&exp, s->shadow + off, it->width);
			atomic_fetch_add_explicit(&G.checked_bytes, it->width, memory_order_relaxed);
			if (exp != a.out[i][u])
				mismatch(t, si, off, it->width, exp, a.out[i][u], "device read");
		}
	}
}

static void op_dev_atomic(struct tstate *t, unsigned si, uint64_t opid, unsigned d)
{
	struct slot *s = &G.slots[si];
	struct aargs a;
	memset(&a, 0, sizeof(a));
	a.opid = opid;
	a.ctr = (uint64_t *)s->base;
	unsigned n = 1 + (unsigned)rnd_below(t, MAX_ITEMS);
	for (unsigned i = 0; i < n; i++) {
		struct aitem *it = &a.items[i];
		it->nctr = (uint32_t)rnd_below(t, 9);
		for (uint32_t u = 0; u < it->nctr; u++)
			it->ctr[u] = (uint32_t)rnd_below(t, NCTR);
		size_t coff, clen;
		if (rnd_below(t, 2) && own_chunk(t, s, &coff, &clen)) {
			size_t off = coff + rnd_below(t, clen / 8) * 8;
			bool dup = false;
			for (unsigned j = 0; j < i; j++)
				if (a.items[j].data == (uint64_t *)(s->base + off))
					dup = true;
			if (!dup) {
				it->data = (uint64_t *)(s->base + off);
				it->dop = (uint32_t)rnd_below(t, 3);
				memcpy(&it->dexp, s->shadow + off, 8);
				it->dval = it->dop == DA_ADD ? 1 + rnd_below(t, 1000)
							     : dev_value(opid, off);
			}
		}
	}
	struct capsnap c;
	cap_begin(d, &c);
	int r = launch(d, k_atomic, n, &a);
	/* -ENOMEM only when the other tenant left uhmm nothing of the device
	 * (or changed its share meanwhile): an atomic on a page that cannot
	 * be taken exclusively (-EBUSY: a duplicated or shared page) migrates
	 * instead, and there is no room (src/simdev/atomic.c: the lanes get
	 * the second attempt's error). */
	bool nomem_ok = r == -ENOMEM &&
			(c.cap == 0 || may_enomem(d, s, 0, PG, &c) == NOMEM_RESIZING);
	outcome(t, K_DEV_ATOMIC, "uhmm_simdev_launch(atomic)", r, nomem_ok, true, false);
	if (r)
		atomic_fetch_add(&G.kernel_partial, 1);
	uint64_t *sh = (uint64_t *)s->shadow;
	for (unsigned i = 0; i < n; i++) {
		struct aitem *it = &a.items[i];
		for (uint32_t u = 0; u < a.progress[i] && u < it->nctr; u++)
			__atomic_fetch_add(&sh[it->ctr[u]], ctr_inc(opid, i, u), __ATOMIC_RELAXED);
		if (!it->data || a.progress[i] <= it->nctr)
			continue;
		size_t off = (size_t)((uint8_t *)it->data - s->base);
		uint64_t cur;
		memcpy(&cur, s->shadow + off, 8);
		atomic_fetch_add_explicit(&G.checked_words, 1, memory_order_relaxed);
		if (a.old[i] != cur)
			mismatch(t, si, off, 8, cur, a.old[i], "device atomic's old value");
		switch (it->dop) {
		case DA_ADD: cur += it->dval; break;
		case DA_XCHG: cur = it->dval; break;
		default:
			if (a.old[i] == it->dexp)
				cur = it->dval;
			break;
		}
		memcpy(s->shadow + off, &cur, 8);
		hist_add(s, off / PG, opid, K_DEV_ATOMIC, t->id);
	}
	hist_add(s, 0, opid, K_DEV_ATOMIC, t->id);
}

/* A random page-aligned subrange: whole range half of the time. */
static void pick_sub(struct tstate *t, const struct slot *s, size_t *off, size_t *len)
{
	/* Sometimes one whole 2 MiB-aligned block of the range: moved to a
	 * device, it becomes one 2 MiB device page (a unit, issue 18), which
	 * the other operations (on part of it) then split. */
	uintptr_t b0 = ((uintptr_t)s->base + HUGE_PG - 1) & ~(uintptr_t)(HUGE_PG - 1);
	uintptr_t end = (uintptr_t)s->base + s->len;
	if (b0 + HUGE_PG <= end && rnd_below(t, 4) == 0) {
		size_t nb = (end - b0) / HUGE_PG;
		*off = b0 - (uintptr_t)s->base + rnd_below(t, nb) * HUGE_PG;
		*len = HUGE_PG;
		return;
	}
	if (rnd_below(t, 2)) {
		*off = 0;
		*len = s->len;
		return;
	}
	size_t a = rnd_below(t, s->npages), b = rnd_below(t, s->npages);
	if (a > b) {
		size_t x = a; a = b; b = x;
	}
	*off = a * PG;
	*len = (b - a + 1) * PG;
}

/* Checks this thread's chunks that intersect [off, off+len). */
static void check_own_in(struct tstate *t, unsigned si, size_t off, size_t len,
			 const char *what)
{
	struct slot *s = &G.slots[si];
	for (size_t c = t->id; c < nchunks(s); c += G.threads) {
		size_t co = (1 + c * CHUNK) * PG, ce = co + CHUNK * PG;
		size_t a = co > off ? co : off, b = ce < off + len ? ce : off + len;
		if (a < b)
			check_bytes(t, si, a, b - a, what);
	}
}

static void op_migrate(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	size_t off, len;
	pick_sub(t, s, &off, &len);
	unsigned d = (unsigned)rnd_below(t, NDEV + 1);
	uhmm_device *dst = d < NDEV ? G.dev[d] : NULL;
	struct capsnap c = { 0, 0, 0 };
	if (dst)
		cap_begin(d, &c);
	int r = uhmm_migrate(G.ctx, s->base + off, len, dst, 0);
	hist_range(s, off, len, opid, K_MIGRATE, t->id);
	bool ok = dst ? migrate_outcome(t, K_MIGRATE, "uhmm_migrate", r, d, s, off, len, &c, false)
		      : outcome(t, K_MIGRATE, "uhmm_migrate", r, false, true, false);
	if (!ok) {
		fprintf(stderr, "    range %u +%#zx len %#zx to %s\n", si, off, len,
			dst ? uhmm_device_name(dst) : "system");
		if (!dst)
			dump_where(s, off, len);
	}
	/* Data stays whatever happened (a request larger than the device:
	 * -ENOMEM, what fit moved). */
	if (r || rnd_below(t, 4) == 0)
		check_own_in(t, si, off, len, r ? "after failed migration" : "after migration");
}

/* Advice (preferred location, read-mostly, or a device's accessed-by: it
 * maps the sub-range wherever its pages move) over a sub-range, then the
 * attribute query: every byte of it accounted for somewhere.  Changes no
 * byte. */
static void op_advise(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	size_t off, len;
	pick_sub(t, s, &off, &len);
	/* Devices, then the CPU, unset, read-mostly and its unset
	 * (--readmostly: not by default yet, see docs/ARCHITECTURE.md
	 * "Read-mostly duplicates": a device may read stale data after a
	 * discard of a duplicated page someone held). */
	unsigned d = (unsigned)rnd_below(t, NDEV + (G.readmostly ? 4 : 2));
	int adv = d == NDEV + 1 ? UHMM_ADVISE_UNSET_PREFERRED_LOCATION
		: d == NDEV + 2 ? UHMM_ADVISE_READ_MOSTLY
		: d == NDEV + 3 ? UHMM_ADVISE_UNSET_READ_MOSTLY
				: UHMM_ADVISE_PREFERRED_LOCATION;
	uhmm_device *dev = d < NDEV ? G.dev[d] : NULL;
	if (dev && rnd_below(t, 2) == 0)
		adv = rnd_below(t, 3) ? UHMM_ADVISE_ACCESSED_BY : UHMM_ADVISE_UNSET_ACCESSED_BY;
	int r = uhmm_advise(G.ctx, s->base + off, len, adv, dev);
	if (r != -EOPNOTSUPP || adv != UHMM_ADVISE_READ_MOSTLY)
		outcome(t, K_ADVISE, "uhmm_advise", r, false, false, false);
	struct uhmm_range_attrs at;
	r = uhmm_range_attrs(G.ctx, s->base + off, len, &at);
	if (outcome(t, K_ADVISE, "uhmm_range_attrs", r, false, false, false)) {
		uint64_t sum = at.bytes_cpu + at.bytes_exclusive;
		for (unsigned i = 0; i < UHMM_MAX_LOCATIONS; i++)
			sum += at.bytes_on[i];
		if (sum != len)
			unexpected(t, K_ADVISE, "uhmm_range_attrs", 0,
				   "%" PRIu64 " bytes accounted for of %zu", sum, len);
		/* Duplicates are of pages at home. */
		if (at.bytes_duplicated > at.bytes_cpu)
			unexpected(t, K_ADVISE, "uhmm_range_attrs", 0,
				   "%" PRIu64 " bytes duplicated of %" PRIu64 " at home",
				   at.bytes_duplicated, at.bytes_cpu);
	}
	hist_range(s, off, len, opid, K_ADVISE, t->id);
	if (rnd_below(t, 4) == 0)
		check_own_in(t, si, off, len, "after advice");
}

/* An asynchronous migration: waited for under the range's lock (then its
 * result is a migration's), or let go at once (it may then run after an
 * munmap or mremap of the range: whatever it finds, nothing is lost). */
static void op_prefetch(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	size_t off, len;
	pick_sub(t, s, &off, &len);
	unsigned d = (unsigned)rnd_below(t, NDEV + 1);
	uhmm_device *dst = d < NDEV ? G.dev[d] : NULL;
	struct capsnap c = { 0, 0, 0 };
	if (dst)
		cap_begin(d, &c);
	uhmm_prefetch_req *pf;
	int r = uhmm_prefetch(G.ctx, s->base + off, len, dst, 0, &pf);
	if (!outcome(t, K_PREFETCH, "uhmm_prefetch", r, false, false, false))
		return;
	hist_range(s, off, len, opid, K_PREFETCH, t->id);
	if (rnd_below(t, 2)) {
		r = uhmm_prefetch_wait(pf, -1);
		bool ok = dst ? migrate_outcome(t, K_PREFETCH, "uhmm_prefetch_wait", r, d, s, off,
						len, &c, false)
			      : outcome(t, K_PREFETCH, "uhmm_prefetch_wait", r, false, true, false);
		if (!ok)
			fprintf(stderr, "    range %u +%#zx len %#zx to %s\n", si, off, len,
				dst ? uhmm_device_name(dst) : "system");
		if (rnd_below(t, 4) == 0)
			check_own_in(t, si, off, len, "after prefetch");
	}
	uhmm_prefetch_release(pf);
}

static void op_exclusive(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	size_t off, len;
	pick_sub(t, s, &off, &len);
	if (len > 256 * PG)
		len = 256 * PG;
	unsigned d = (unsigned)rnd_below(t, NDEV);
	int r = uhmm_make_exclusive(G.dev[d], s->base + off, len / PG, NULL);
	hist_range(s, off, len, opid, K_EXCLUSIVE, t->id);
	/* -ENOMEM stays allowed here: exclusive pages' data lives in the
	 * context's reserve of slots, which is still of fixed size on this
	 * branch (issue 14, "the reserve grows on demand", is not in yet);
	 * a grab of up to 256 pages by each of 4 threads does not fill it,
	 * but pages held exclusively stay there until revoked.  Not device
	 * memory: a grab takes no device frame. */
	if (!outcome(t, K_EXCLUSIVE, "uhmm_make_exclusive", r, true, true, false) && r == -EIO) {
		pthread_mutex_lock(&G.report_lock);
		report_split(s, off, len);
		pthread_mutex_unlock(&G.report_lock);
	}
	if (rnd_below(t, 2))
		check_own_in(t, si, off, len, "after exclusive grab (revokes)");
}

static void op_madvise_own(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	size_t coff, clen;
	if (!own_chunk(t, s, &coff, &clen))
		return;
	size_t p = rnd_below(t, CHUNK), n = 1 + rnd_below(t, CHUNK - p);
	size_t off = coff + p * PG, len = n * PG;
	if (madvise(s->base + off, len, MADV_DONTNEED)) {
		unexpected(t, K_MADVISE_OWN, "madvise", -errno, "");
		return;
	}
	memset(s->shadow + off, 0, len);
	hist_range(s, off, len, opid, K_MADVISE_OWN, t->id);
	atomic_fetch_add(&kst[K_MADVISE_OWN].ok, 1);
	if (rnd_below(t, 2))
		check_bytes(t, si, off, len, "after madvise");
}

/* ------------------------------------------------------------------------ */
/* Whole-range operations (write lock)                                       */

static void op_verify(struct tstate *t, unsigned si, const char *what)
{
	struct slot *s = &G.slots[si];
	check_bytes(t, si, 0, s->len, what);
}

static void op_madvise(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	size_t off, len;
	pick_sub(t, s, &off, &len);
	if (madvise(s->base + off, len, MADV_DONTNEED)) {
		unexpected(t, K_MADVISE, "madvise", -errno, "");
		return;
	}
	memset(s->shadow + off, 0, len);
	hist_range(s, off, len, opid, K_MADVISE, t->id);
	atomic_fetch_add(&kst[K_MADVISE].ok, 1);
	check_bytes(t, si, off, len, "after madvise");
}

static void slot_free_model(struct slot *s)
{
	free(s->shadow);
	free(s->hist);
	free(s->hidx);
	s->shadow = NULL;
	s->hist = NULL;
	s->hidx = NULL;
}

static void op_munmap(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	bool raw = rnd_below(t, 2); /* plain munmap(2): uhmm learns by event */
	if (G.no_uhmm_free && s->skind == SLOT_ALLOC)
		raw = true;
	int r = 0;
	if (rnd_below(t, 2))
		op_verify(t, si, "before munmap");
	pthread_mutex_lock(&G.map_lock);
	if (raw) {
		if (munmap(s->base, s->len))
			unexpected(t, K_MUNMAP, "munmap", -errno, "");
		else if (!wait_managed(s->base, false) ||
			 !wait_managed(s->base + s->len - PG, false))
			unexpected(t, K_MUNMAP, "uhmm_page_query", -EEXIST,
				   "range %p still managed 2 s after munmap", (void *)s->base);
	} else if (s->skind == SLOT_ALLOC) {
		r = uhmm_free(G.ctx, s->base);
		outcome(t, K_MUNMAP, "uhmm_free", r, false, false, false);
	} else {
		r = uhmm_unregister(G.ctx, s->base, s->len);
		outcome(t, K_MUNMAP, "uhmm_unregister", r, false, false, false);
		if (r == 0) {
			/* Registered memory keeps its contents after unregister. */
			check_bytes(t, si, 0, s->len, "after unregister");
			munmap(s->base, s->len);
		}
	}
	if (raw)
		atomic_fetch_add(&kst[K_MUNMAP].ok, 1);
	slot_free_model(s);
	r = slot_map(t, s, pick_npages(t));
	pthread_mutex_unlock(&G.map_lock);
	if (r)
		exit(2);
	hist_range(s, 0, s->len, opid, K_MUNMAP, t->id);
	check_bytes(t, si, 0, s->len, "new mapping");
}

static void op_mremap(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	/* A placeholder at a new address, 2 MiB aligned half of the time. */
	size_t extra = rnd_below(t, 2) ? UHMM_HUGE_SIZE : 0;
	pthread_mutex_lock(&G.map_lock);
	uint8_t *raw = mmap(NULL, s->len + extra, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED) {
		unexpected(t, K_MREMAP, "mmap", -errno, "");
		pthread_mutex_unlock(&G.map_lock);
		return;
	}
	uint8_t *dst = raw;
	if (extra) {
		dst = (uint8_t *)(((uintptr_t)raw + UHMM_HUGE_SIZE - 1) &
				  ~(uintptr_t)(UHMM_HUGE_SIZE - 1));
		if (dst > raw)
			munmap(raw, (size_t)(dst - raw));
		if (raw + s->len + extra > dst + s->len)
			munmap(dst + s->len, (size_t)(raw + s->len + extra - (dst + s->len)));
	}
	uint8_t *old = s->base;
	void *p = mremap(old, s->len, s->len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	if (p == MAP_FAILED) {
		unexpected(t, K_MREMAP, "mremap", -errno, "");
		munmap(dst, s->len);
		pthread_mutex_unlock(&G.map_lock);
		return;
	}
	s->base = dst;
	if (!wait_managed(dst, true) || !wait_managed(dst + s->len - PG, true) ||
	    !wait_managed(old, false))
		unexpected(t, K_MREMAP, "uhmm_page_query", -EFAULT,
			   "range %u: uhmm did not follow mremap %p -> %p within 2 s", si,
			   (void *)old, (void *)dst);
	pthread_mutex_unlock(&G.map_lock);
	atomic_fetch_add(&kst[K_MREMAP].ok, 1);
	hist_range(s, 0, s->len, opid, K_MREMAP, t->id);
	/* Advice is by address: give the new place some. */
	advise_range(t, s);
	if (rnd_below(t, 2))
		op_verify(t, si, "after mremap");
}

static void op_mprotect(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	/* uhmm_mprotect, or a plain mprotect (uhmm is not told: read-only
	 * pages are found at migration and fault time). */
	bool plain = rnd_below(t, 2);
	int r = plain ? (mprotect(s->base, s->len, PROT_READ) ? -errno : 0)
		      : uhmm_mprotect(G.ctx, s->base, s->len, PROT_READ);
	if (!outcome(t, K_MPROTECT, plain ? "mprotect(PROT_READ)" : "uhmm_mprotect(PROT_READ)",
		     r, false, false, false))
		return;
	hist_range(s, 0, s->len, opid, K_MPROTECT, t->id);
	unsigned d = (unsigned)rnd_below(t, NDEV);
	size_t data_off = (1 + rnd_below(t, s->npages - 1)) * PG;
	/* A device store and an exclusive grab must fail only after
	 * uhmm_mprotect: a plain mprotect is not told to the mirrors, which
	 * keep the rights they had (documented), so those cases are for
	 * uhmm_mprotect alone. */
	unsigned what = plain ? 2 + (unsigned)rnd_below(t, G.no_ro_migrate ? 1 : 2)
			   : (unsigned)rnd_below(t, G.no_ro_migrate ? 3 : 4);
	switch (what) {
	case 0: { /* a device store must fail with -EPERM and change nothing */
		struct wargs a;
		memset(&a, 0, sizeof(a));
		a.opid = opid;
		a.base = s->base;
		a.items[0].addr = s->base + data_off;
		a.items[0].nunits = 8;
		a.items[0].width = 8;
		r = launch(d, k_write, 1, &a);
		if (r != -EPERM || a.progress[0] != 0)
			unexpected(t, K_MPROTECT, "device store to read-only memory", r,
				   "%u stores completed (expected -EPERM, 0)", a.progress[0]);
		break;
	}
	case 1: /* exclusive needs a writable area */
		r = uhmm_make_exclusive(G.dev[d], s->base + data_off, 1, NULL);
		if (r != -EPERM)
			unexpected(t, K_MPROTECT, "uhmm_make_exclusive(read-only)", r,
				   "expected -EPERM");
		break;
	case 2: { /* reads still work, from the device */
		struct wargs a;
		static _Thread_local uint64_t out[512];
		memset(&a, 0, sizeof(a));
		a.base = s->base;
		a.items[0].addr = s->base + data_off;
		a.items[0].nunits = 512;
		a.items[0].width = 8;
		a.out[0] = out;
		r = launch(d, k_read, 1, &a);
		if (r)
			unexpected(t, K_MPROTECT, "device read of read-only memory", r, "");
		for (uint32_t u = 0; u < a.progress[0]; u++) {
			uint64_t exp;
			memcpy(&exp, s->shadow + data_off + u * 8, 8);
			atomic_fetch_add_explicit(&G.checked_bytes, 8, memory_order_relaxed);
			if (exp != out[u])
				mismatch(t, si, data_off + u * 8, 8, exp, out[u],
					 "device read, read-only");
		}
		break;
	}
	default: /* migrate the read-only range around; data stays */
		/* To a device by the no-move path (issue 15: read-only pages
		 * migrate; -EBUSY for pages a fork child shares); home by
		 * copy, or by the CPU reads of check_bytes below. */
		struct capsnap c;
		cap_begin(d, &c);
		r = uhmm_migrate(G.ctx, s->base, s->len, G.dev[d], 0);
		migrate_outcome(t, K_MPROTECT, "uhmm_migrate(read-only)", r, d, s, 0, s->len, &c,
				false);
		if (rnd_below(t, 2)) {
			r = uhmm_migrate(G.ctx, s->base, s->len, NULL, 0);
			if (!outcome(t, K_MPROTECT, "uhmm_migrate(read-only, home)", r, false, false,
				     false))
				dump_where(s, 0, s->len);
		}
		break;
	}
	check_bytes(t, si, 0, s->len, "read-only");
	plain = rnd_below(t, 2);
	r = plain ? (mprotect(s->base, s->len, PROT_READ | PROT_WRITE) ? -errno : 0)
		  : uhmm_mprotect(G.ctx, s->base, s->len, PROT_READ | PROT_WRITE);
	if (!outcome(t, K_MPROTECT, plain ? "mprotect(RW)" : "uhmm_mprotect(RW)", r, false,
		     false, false)) {
		fprintf(stderr, "cannot make range %u writable again: stopping\n", si);
		exit(2);
	}
}

struct fork_report {
	uint64_t off, exp, got;
};

static void op_fork(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	int pfd[2];
	if (pipe(pfd)) {
		unexpected(t, K_FORK, "pipe", -errno, "");
		return;
	}
	hist_range(s, 0, s->len, opid, K_FORK, t->id);
	pid_t pid = fork();
	if (pid < 0) {
		unexpected(t, K_FORK, "fork", -errno, "");
		close(pfd[0]);
		close(pfd[1]);
		return;
	}
	if (pid == 0) {
		/* The child: only async-signal-safe work.  Compare, scribble, exit. */
		close(pfd[0]);
		int bad = 0;
		for (size_t i = 0; i < s->len; i++)
			if (s->base[i] != s->shadow[i]) {
				struct fork_report fr = { i, s->shadow[i], s->base[i] };
				if (write(pfd[1], &fr, sizeof(fr)) != (ssize_t)sizeof(fr))
					_exit(3);
				bad = 1;
				break;
			}
		/* The child's writes must not reach the parent. */
		for (size_t i = 0; i < s->len; i += PG / 2)
			s->base[i] ^= 0x5a;
		_exit(bad);
	}
	close(pfd[1]);
	atomic_fetch_add(&G.fork_children, 1);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			unexpected(t, K_FORK, "waitpid", -errno, "");
			close(pfd[0]);
			return;
		}
	struct fork_report fr;
	ssize_t got = read(pfd[0], &fr, sizeof(fr));
	close(pfd[0]);
	atomic_fetch_add_explicit(&G.checked_bytes, s->len, memory_order_relaxed);
	if (!WIFEXITED(status) || WEXITSTATUS(status) > 1) {
		unexpected(t, K_FORK, "child", status, "died or failed (status %#x)", status);
	} else if (WEXITSTATUS(status) == 1) {
		if (got == (ssize_t)sizeof(fr))
			mismatch(t, si, fr.off, 1, fr.exp, fr.got, "fork child's view");
		else
			mismatch(t, si, 0, 1, 0, 0, "fork child's view (no report)");
	} else {
		atomic_fetch_add(&kst[K_FORK].ok, 1);
	}
	if (rnd_below(t, 2))
		op_verify(t, si, "parent after fork");
}

/* ------------------------------------------------------------------------ */
/* The device asks for its memory back (shared lock: data must not change)   */

/* Checks that uhmm holds no more of device @d than the tenant left it,
 * when no set_tenant call ran meanwhile. */
static void check_device_use(struct tstate *t, enum kind k, unsigned d)
{
	unsigned g = atomic_load(&G.tenant[d].gen);
	uint64_t cap = (uint64_t)G.dev_mib * MiB - atomic_load(&G.tenant[d].bytes);
	struct uhmm_device_stats ds;
	int r = uhmm_device_stats(G.dev[d], &ds);
	if (r) {
		unexpected(t, k, "uhmm_device_stats", r, "");
		return;
	}
	if (!(g & 1) && atomic_load(&G.tenant[d].gen) == g && ds.bytes_in_use > cap)
		unexpected(t, k, "uhmm_device_stats", 0,
			   "%s: uhmm holds %" PRIu64 " bytes, the tenant left it %" PRIu64,
			   uhmm_device_name(G.dev[d]), ds.bytes_in_use, cap);
}

/* Another tenant takes (or gives back) part of a device, while everything
 * else runs: the device's pages in the chunks it takes go home. */
static void op_tenant(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	unsigned d = (unsigned)rnd_below(t, NDEV);
	/* 0 .. the whole device, in 2 MiB chunks; mostly leaving uhmm some. */
	uint64_t chunks = G.dev_mib / 2;
	uint64_t bytes = rnd_below(t, rnd_below(t, 4) ? chunks : chunks + 1) * 2 * MiB;
	pthread_mutex_lock(&G.tenant[d].lock);
	atomic_fetch_add(&G.tenant[d].gen, 1); /* odd: changing */
	int r = uhmm_simdev_set_tenant(G.dev[d], bytes);
	if (r == 0)
		atomic_store(&G.tenant[d].bytes, bytes);
	atomic_fetch_add(&G.tenant[d].gen, 1);
	if (r == 0) {
		/* The tenant's chunks are not free for uhmm. */
		struct uhmm_simdev_meminfo mi;
		int e = uhmm_simdev_meminfo(G.dev[d], &mi);
		if (e)
			unexpected(t, K_TENANT, "uhmm_simdev_meminfo", e, "");
		else if (mi.free_pages > mi.total_pages - bytes / PG)
			unexpected(t, K_TENANT, "uhmm_simdev_meminfo", 0,
				   "%" PRIu64 " pages free with a tenant of %" PRIu64 " bytes "
				   "out of %" PRIu64 " pages", mi.free_pages, bytes, mi.total_pages);
	}
	pthread_mutex_unlock(&G.tenant[d].lock);
	/* -EBUSY: pages of the chunks were held for 2 s by migrations or
	 * faults in flight (documented; what the call took is given back). */
	outcome(t, K_TENANT, "uhmm_simdev_set_tenant", r, false, true, false);
	check_device_use(t, K_TENANT, d);
	hist_add(s, 0, opid, K_TENANT, t->id);
	if (rnd_below(t, 2))
		check_own_in(t, si, 0, s->len, "after set_tenant");
}

/* The backend asks for memory back: some bytes (LRU blocks) or a range of
 * frames. */
static void op_evict(struct tstate *t, unsigned si, uint64_t opid)
{
	struct slot *s = &G.slots[si];
	unsigned d = (unsigned)rnd_below(t, NDEV);
	uint64_t mem = (uint64_t)G.dev_mib * MiB;
	if (rnd_below(t, 2)) {
		size_t bytes = (size_t)rnd_below(t, mem + 1);
		long r = uhmm_device_evict(G.dev[d], bytes);
		if (r < 0 || r % (long)PG) {
			outcome(t, K_EVICT, "uhmm_device_evict", r < 0 ? (int)r : -EINVAL, false,
				false, false);
		} else {
			atomic_fetch_add(&kst[K_EVICT].ok, 1);
			atomic_fetch_add(&G.evicted_by_call, (unsigned long)r);
		}
	} else {
		uint64_t total = mem / PG;
		uint64_t first = rnd_below(t, total), n = 1 + rnd_below(t, total - first);
		int r = uhmm_device_evict_frames(G.dev[d], first, n);
		/* -EBUSY: pages of the range held for 2 s (documented). */
		outcome(t, K_EVICT, "uhmm_device_evict_frames", r, false, true, false);
	}
	check_device_use(t, K_EVICT, d);
	hist_add(s, 0, opid, K_EVICT, t->id);
	if (rnd_below(t, 2))
		check_own_in(t, si, 0, s->len, "after eviction");
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */

/* A page lost on a device (issue 19), under the write lock: the page is
 * moved to a device and poisoned there; every other byte of the range is
 * compared (also after a migration over it, which must report
 * -EHWPOISON); then it is discarded, which clears it (zeros).  Pages of a
 * file slot are skipped (a discard there reads the file again). */
static void op_poison(struct tstate *t, unsigned si, uint64_t opid, unsigned d)
{
	struct slot *s = &G.slots[si];
	if (s->skind == SLOT_FILE || s->npages < 2) {
		atomic_fetch_add(&G.poison_skipped, 1);
		return;
	}
	size_t pg = 1 + rnd_below(t, s->npages - 1);
	uint8_t *a = s->base + pg * PG;
	hist_add(s, pg, opid, K_POISON, t->id);
	int r = uhmm_migrate(G.ctx, a, PG, G.dev[d], 0);
	if (r == 0)
		r = uhmm_simdev_poison(G.dev[d], a);
	/* Not there to lose (refused: a full or resizing device, a busy page;
	 * or moved off meanwhile: evicted by another range's migration). */
	if (r == -ENOMEM || r == -EBUSY || r == -EINVAL || r == -ENOENT || r == -EFAULT) {
		atomic_fetch_add(&G.poison_skipped, 1);
		atomic_fetch_add(&kst[K_POISON].ok, 1);
		return;
	}
	if (!outcome(t, K_POISON, "uhmm_simdev_poison", r, false, false, false))
		return;
	atomic_fetch_add(&G.poisoned, 1);
	struct uhmm_page_info pi;
	r = uhmm_page_query(G.ctx, a, &pi);
	if (r || pi.where != UHMM_WHERE_POISONED)
		unexpected(t, K_POISON, "uhmm_page_query", r, "the lost page is not poisoned "
			   "(where %d)", r ? -1 : (int)pi.where);
	/* Every other byte, where it is, then after a migration over it. */
	check_bytes(t, si, 0, pg * PG, "beside a poisoned page");
	check_bytes(t, si, (pg + 1) * PG, s->len - (pg + 1) * PG, "beside a poisoned page");
	unsigned d2 = (unsigned)rnd_below(t, NDEV + 1);
	r = uhmm_migrate(G.ctx, s->base, s->len, d2 < NDEV ? G.dev[d2] : NULL, 0);
	if (r != -EHWPOISON && r != -ENOMEM && r != -EBUSY)
		unexpected(t, K_POISON, "uhmm_migrate", r, "over a poisoned page: not -EHWPOISON");
	check_bytes(t, si, 0, pg * PG, "beside a poisoned page, after migration");
	check_bytes(t, si, (pg + 1) * PG, s->len - (pg + 1) * PG,
		    "beside a poisoned page, after migration");
	/* Discarded: cleared, zeros. */
	if (madvise(a, PG, MADV_DONTNEED)) {
		unexpected(t, K_POISON, "madvise", -errno, "");
		return;
	}
	r = uhmm_sync(G.ctx);
	if (r)
		unexpected(t, K_POISON, "uhmm_sync", r, "");
	memset(s->shadow + pg * PG, 0, PG);
	r = uhmm_page_query(G.ctx, a, &pi);
	if (r || pi.where == UHMM_WHERE_POISONED) {
		nap_ms(100);
		struct uhmm_page_info pj;
		int r2 = uhmm_page_query(G.ctx, a, &pj);
		unexpected(t, K_POISON, "uhmm_page_query", r,
			   "still poisoned after a discard (range %u page %zu, kind %d; "
			   "100 ms later: %d where %d)", si, pg, (int)s->skind, r2, (int)pj.where);
	}
	check_bytes(t, si, pg * PG, PG, "a poisoned page discarded");
}

static enum kind pick_kind(struct tstate *t)
{
	unsigned x = (unsigned)rnd_below(t, G.total_weight);
	for (int k = 0; k < K_COUNT; k++) {
		if (G.disabled[k])
			continue;
		if (x < kinds[k].weight)
			return (enum kind)k;
		x -= kinds[k].weight;
	}
	return K_CPU_READ;
}

static void *worker(void *arg)
{
	struct tstate *t = arg;
	atomic_store(&t->tid, (long)syscall(SYS_gettid));
	for (;;) {
		if (atomic_load(&G.stop))
			break;
		uint64_t opid = atomic_fetch_add(&G.next_opid, 1) + 1;
		if (G.max_ops && opid > G.max_ops)
			break;
		if (!G.max_ops && now_ns() >= G.deadline_ns)
			break;
		enum kind k = pick_kind(t);
		unsigned si = (unsigned)rnd_below(t, G.nranges);
		struct slot *s = &G.slots[si];
		atomic_store(&t->cur_opid, opid);
		atomic_store(&t->cur_slot, si);
		atomic_store(&t->cur_start_ns, now_ns());
		atomic_store(&t->cur_kind, (int)k);
		bool ev = k == K_MADVISE_OWN || k == K_MADVISE || k == K_MUNMAP || k == K_MREMAP;
		if (G.serialize_events) {
			if (ev) {
				pthread_rwlock_wrlock(&G.event_lock);
				/* The service thread may still hold fault messages
				 * read in a batch whose threads were already woken
				 * by another install: let it drain them. */
				nap_ms(10);
			} else
				pthread_rwlock_rdlock(&G.event_lock);
		}
		if (kinds[k].whole)
			pthread_rwlock_wrlock(&s->lock);
		else
			pthread_rwlock_rdlock(&s->lock);
		unsigned d = (unsigned)rnd_below(t, NDEV);
		switch (k) {
		case K_CPU_WRITE: op_cpu_write(t, si, opid); break;
		case K_CPU_READ: op_cpu_read(t, si, opid); break;
		case K_CPU_ATOMIC: op_cpu_atomic(t, si, opid); break;
		case K_DEV_WRITE: op_dev_write(t, si, opid, d); break;
		case K_DEV_READ: op_dev_read(t, si, opid, d); break;
		case K_DEV_ATOMIC: op_dev_atomic(t, si, opid, d); break;
		case K_MIGRATE: op_migrate(t, si, opid); break;
		case K_EXCLUSIVE: op_exclusive(t, si, opid); break;
		case K_MADVISE_OWN: op_madvise_own(t, si, opid); break;
		case K_MADVISE: op_madvise(t, si, opid); break;
		case K_MUNMAP: op_munmap(t, si, opid); break;
		case K_MREMAP: op_mremap(t, si, opid); break;
		case K_MPROTECT: op_mprotect(t, si, opid); break;
		case K_FORK: op_fork(t, si, opid); break;
		case K_VERIFY: op_verify(t, si, "verify"); break;
		case K_TENANT: op_tenant(t, si, opid); break;
		case K_EVICT: op_evict(t, si, opid); break;
		case K_ADVISE: op_advise(t, si, opid); break;
		case K_PREFETCH: op_prefetch(t, si, opid); break;
		case K_POISON: op_poison(t, si, opid, d); break;
		default: break;
		}
		pthread_rwlock_unlock(&s->lock);
		if (G.serialize_events)
			pthread_rwlock_unlock(&G.event_lock);
		atomic_store(&t->cur_kind, -1);
		atomic_fetch_add(&kst[k].ops, 1);
		atomic_fetch_add(&t->done, 1);
		atomic_fetch_add(&G.progress, 1);
	}
	atomic_store(&t->cur_kind, -1);
	return NULL;
}

static void dump_device(unsigned d)
{
	struct uhmm_simdev_stats ds;
	struct uhmm_simdev_meminfo mi;
	if (uhmm_simdev_stats(G.dev[d], &ds) == 0)
		fprintf(stderr,
			"  %s: launches %" PRIu64 " items %" PRIu64 " faults %" PRIu64
			" passes %" PRIu64 " migrations %" PRIu64 " remote_maps %" PRIu64
			" invalidations %" PRIu64 " kernel_errors %" PRIu64
			" exclusive_pages %" PRIu64 "\n",
			uhmm_device_name(G.dev[d]), ds.launches, ds.work_items, ds.faults,
			ds.fault_batches, ds.migrations, ds.remote_maps, ds.invalidations,
			ds.kernel_errors, ds.exclusive_pages);
	if (uhmm_simdev_meminfo(G.dev[d], &mi) == 0)
		fprintf(stderr, "  %s: memory %" PRIu64 "/%" PRIu64 " pages free, copies %" PRIu64 "\n",
			uhmm_device_name(G.dev[d]), mi.free_pages, mi.total_pages, mi.copies);
}

/* Deadlock dump: each thread that can take a signal prints its stack
 * (resolve the +offsets with addr2line -e uhmm-torture). */
static atomic_int bt_done;

static void bt_handler(int sig)
{
	(void)sig;
	void *pcs[32];
	char head[64];
	int n = backtrace(pcs, 32);
	int len = snprintf(head, sizeof(head), "--- thread %ld:\n", (long)syscall(SYS_gettid));
	if (write(2, head, (size_t)len) < 0)
		return;
	backtrace_symbols_fd(pcs, n, 2);
	atomic_fetch_add(&bt_done, 1);
}

static void dump_stacks(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = bt_handler;
	sigaction(SIGUSR2, &sa, NULL);
	void *warm[1];
	backtrace(warm, 1); /* loads libgcc before any handler needs it */
	long self = (long)syscall(SYS_gettid);
	struct dirent *e;
	while ((e = readdir(d))) {
		long tid = atol(e->d_name);
		if (tid <= 0 || tid == self)
			continue;
		char path[64], state = '?';
		snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", tid);
		FILE *f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
				state = '?';
			fclose(f);
		}
		char wchan[64] = "?", sc[64] = "?";
		snprintf(path, sizeof(path), "/proc/self/task/%ld/wchan", tid);
		if ((f = fopen(path, "r"))) {
			if (!fgets(wchan, sizeof(wchan), f))
				strcpy(wchan, "?");
			fclose(f);
		}
		snprintf(path, sizeof(path), "/proc/self/task/%ld/syscall", tid);
		if ((f = fopen(path, "r"))) {
			if (!fgets(sc, sizeof(sc), f))
				strcpy(sc, "?");
			sc[strcspn(sc, "\n")] = 0;
			fclose(f);
		}
		fprintf(stderr, "--- thread %ld state %c wchan %s syscall %s\n", tid, state, wchan,
			sc);
		int before = atomic_load(&bt_done);
		syscall(SYS_tgkill, (long)getpid(), tid, SIGUSR2);
		for (int i = 0; i < 100 && atomic_load(&bt_done) == before; i++)
			nap_ms(10);
	}
	closedir(d);
}

/* In the library, not in its headers (src/core/stats.c). */
void uhmm__debug_dump_parked(uhmm_ctx *ctx, FILE *f);

static void *watchdog(void *arg)
{
	(void)arg;
	unsigned long last = atomic_load(&G.progress);
	uint64_t since = now_ns();
	while (!atomic_load(&G.stop)) {
		nap_ms(200);
		unsigned long p = atomic_load(&G.progress);
		if (p != last) {
			last = p;
			since = now_ns();
			continue;
		}
		if (now_ns() - since < (uint64_t)G.watchdog_s * 1000000000ull)
			continue;
		bool busy = false;
		for (unsigned i = 0; i < G.threads; i++)
			if (atomic_load(&TS[i].cur_kind) >= 0)
				busy = true;
		if (!busy) /* everybody finished: not a deadlock */
			continue;
		fprintf(stderr, "\nDEADLOCK? no operation completed for %u s (seed %" PRIu64 ")\n",
			G.watchdog_s, G.seed);
		for (unsigned i = 0; i < G.threads; i++) {
			int k = atomic_load(&TS[i].cur_kind);
			unsigned long st = atomic_load(&TS[i].cur_start_ns);
			fprintf(stderr, "  thread %u (tid %ld): %s op %lu on range %u for %.1f s (%lu ops done)\n", i,
				atomic_load(&TS[i].tid),
				k >= 0 ? kinds[k].name : "idle", atomic_load(&TS[i].cur_opid),
				atomic_load(&TS[i].cur_slot), k >= 0 ? (double)(now_ns() - st) / 1e9 : 0.0,
				atomic_load(&TS[i].done));
		}
		uhmm_stats_print(G.ctx, stderr);
		uhmm__debug_dump_parked(G.ctx, stderr);
		for (unsigned d = 0; d < NDEV; d++)
			dump_device(d);
		/* UHMM_TORTURE_GDB=1: full backtraces of every thread, with
		 * the library's frames, from gdb (when installed). */
		const char *g = getenv("UHMM_TORTURE_GDB");
		if (g && *g == '1') {
			char cmd[800];
			snprintf(cmd, sizeof(cmd),
				 "gdb -p %d -batch -ex 'thread apply all bt 12' "
				 "1>&2 2>/dev/null",
				 (int)getpid());
			fflush(stderr);
			if (system(cmd) != 0)
				dump_stacks();
		} else {
			dump_stacks();
		}
		fflush(stderr);
		abort();
	}
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm-torture [--seed N] [--seconds S | --ops N] [--threads T]\n"
		"                    [--ranges R] [--dev-mib M] [--watchdog S] [--verbose]\n"
		"                    [--readmostly]\n"
		"                    [--serialize-events | --no-events] [--no-ro-migrate]\n"
		"                    [--no-uhmm-free] [--sigbus] [--coherent] [--poison] [--thp]\n"
		"                    [--no-KIND ...]\n"
		"  --serialize-events: madvise, munmap and mremap run alone (works around\n"
		"    the fault service's EAGAIN livelock, see tests/torture/repro/; it makes\n"
		"    the livelock rarer, not impossible).\n"
		"  --no-events: no madvise, madvise-own, munmap, mremap (no events at all).\n"
		"  --no-ro-migrate: do not migrate read-only ranges (uhmm_migrate says\n"
		"    -EFAULT there, see tests/torture/repro/).\n"
		"  --no-uhmm-free: release allocated ranges with munmap(2) only (uhmm_free\n"
		"    leaves stale device mappings, see tests/torture/repro/).\n"
		"  --thp: half of the registered ranges are THP-backed (2 MiB-aligned,\n"
		"    MADV_HUGEPAGE, populated before registration).\n"
		"  --sigbus: the context is in SIGBUS mode (UHMM_CTX_SIGBUS): CPU faults\n"
		"    are served by the faulting threads, not the service thread.\n"
		"  --coherent: the second simdev's memory is coherent (CPU-addressable).\n"
		"  --poison: the poison operation runs (a page lost on a device).\n"
		"  --dev-mib M: each simdev's memory (default 8); 4 or less against ranges\n"
		"    of up to 6 MiB keeps eviction running all the time.\n"
		"  --seconds defaults to 30; UHMM_TORTURE_SECONDS in the environment overrides it.\n"
		"  KIND:");
	for (int k = 0; k < K_COUNT; k++)
		fprintf(f, " %s", kinds[k].name);
	fprintf(f, "\n");
}

static unsigned long long num_arg(const char *opt, const char *v)
{
	char *end;
	errno = 0;
	unsigned long long x = v ? strtoull(v, &end, 0) : 0;
	if (!v || errno || *end) {
		fprintf(stderr, "uhmm-torture: %s needs a number\n", opt);
		usage(stderr);
		exit(2);
	}
	return x;
}

static void parse(int argc, char **argv)
{
	G.seed = 1;
	G.seconds = 30;
	G.threads = 4;
	G.nranges = 8;
	G.dev_mib = 8;
	G.watchdog_s = 10;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--seed"))
			G.seed = num_arg(a, v), i++;
		else if (!strcmp(a, "--seconds"))
			G.seconds = (double)num_arg(a, v), i++, G.max_ops = 0;
		else if (!strcmp(a, "--ops"))
			G.max_ops = num_arg(a, v), i++;
		else if (!strcmp(a, "--threads"))
			G.threads = (unsigned)num_arg(a, v), i++;
		else if (!strcmp(a, "--ranges"))
			G.nranges = (unsigned)num_arg(a, v), i++;
		else if (!strcmp(a, "--dev-mib"))
			G.dev_mib = (unsigned)num_arg(a, v), i++;
		else if (!strcmp(a, "--watchdog"))
			G.watchdog_s = (unsigned)num_arg(a, v), i++;
		else if (!strcmp(a, "--serialize-events"))
			G.serialize_events = true;
		else if (!strcmp(a, "--no-events")) {
			/* No userfaultfd events at all (EAGAIN livelock). */
			G.disabled[K_MADVISE] = G.disabled[K_MADVISE_OWN] = true;
			G.disabled[K_MUNMAP] = G.disabled[K_MREMAP] = true;
		}
		else if (!strcmp(a, "--no-ro-migrate"))
			G.no_ro_migrate = true;
		else if (!strcmp(a, "--no-uhmm-free"))
			G.no_uhmm_free = true;
		else if (!strcmp(a, "--sigbus"))
			G.sigbus = true;
		else if (!strcmp(a, "--coherent"))
			G.coherent = true;
		else if (!strcmp(a, "--poison"))
			G.poison = true;
		else if (!strcmp(a, "--thp"))
			G.thp = true;
		else if (!strcmp(a, "--readmostly"))
			G.readmostly = true;
		else if (!strcmp(a, "--verbose"))
			G.verbose = true;
		else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		} else if (!strncmp(a, "--no-", 5)) {
			int k;
			for (k = 0; k < K_COUNT; k++)
				if (!strcmp(a + 5, kinds[k].name))
					break;
			if (k == K_COUNT) {
				fprintf(stderr, "uhmm-torture: unknown kind in %s\n", a);
				usage(stderr);
				exit(2);
			}
			G.disabled[k] = true;
		} else {
			fprintf(stderr, "uhmm-torture: unknown argument %s\n", a);
			usage(stderr);
			exit(2);
		}
	}
	if (!G.poison)
		G.disabled[K_POISON] = true;
	/* The environment wins, so that CI can shorten a registered run. */
	const char *env = getenv("UHMM_TORTURE_SECONDS");
	if (env && *env) {
		G.seconds = strtod(env, NULL);
		G.max_ops = 0;
	}
	if (G.threads < 1 || G.threads > MAX_THREADS || G.nranges < 1 || G.dev_mib < 2 ||
	    G.dev_mib % 2 || G.watchdog_s < 1) {
		fprintf(stderr, "uhmm-torture: threads 1..%u, ranges >= 1, dev-mib even >= 2, "
				"watchdog >= 1\n", MAX_THREADS);
		exit(2);
	}
	for (int k = 0; k < K_COUNT; k++)
		if (!G.disabled[k])
			G.total_weight += kinds[k].weight;
	if (!G.total_weight) {
		fprintf(stderr, "uhmm-torture: every kind is disabled\n");
		exit(2);
	}
}

/* After the threads stopped: every range to each device and back, checked
 * at every step, then teardown, then the memory checked once more. */
static void final_checks(struct tstate *t)
{
	for (unsigned si = 0; si < G.nranges; si++)
		op_verify(t, si, "final");
	/* The other tenant leaves: each device whole again.  Alone now, so
	 * -EBUSY would be a page held by nobody. */
	for (unsigned d = 0; d < NDEV; d++) {
		int r = uhmm_simdev_set_tenant(G.dev[d], 0);
		if (outcome(t, K_TENANT, "final uhmm_simdev_set_tenant(0)", r, false, false, false))
			atomic_store(&G.tenant[d].bytes, 0);
	}
	for (unsigned si = 0; si < G.nranges; si++) {
		struct slot *s = &G.slots[si];
		for (unsigned d = 0; d < NDEV; d++) {
			struct capsnap c;
			cap_begin(d, &c);
			int r = uhmm_migrate(G.ctx, s->base, s->len, G.dev[d], 0);
			migrate_outcome(t, K_MIGRATE, "final uhmm_migrate", r, d, s, 0, s->len, &c,
					false);
			op_verify(t, si, "final, on device");
		}
		int r = uhmm_migrate(G.ctx, s->base, s->len, NULL, 0);
		if (!outcome(t, K_MIGRATE, "final uhmm_migrate(home)", r, false, true, false))
			dump_where(s, 0, s->len);
		op_verify(t, si, "final, home");
		/* Leave some on the devices for the teardown to bring home. */
		(void)uhmm_migrate(G.ctx, s->base, s->len, G.dev[si % NDEV], 0);
	}
}

int main(int argc, char **argv)
{
	parse(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_mutex_init(&G.report_lock, NULL);
	pthread_mutex_init(&G.map_lock, NULL);
	struct uhmm_ctx_opts co;
	uhmm_ctx_opts_init(&co);
	if (G.sigbus)
		co.flags |= UHMM_CTX_SIGBUS;
	int r = uhmm_ctx_create(&co, &G.ctx);
	if (r) {
		fprintf(stderr, "uhmm_ctx_create: %s\n", uhmm_strerror(r));
		return r == -EPERM || r == -ENOSYS || r == -EOPNOTSUPP ? 77 : 2;
	}
	for (int d = 0; d < NDEV; d++) {
		struct uhmm_simdev_opts o;
		uhmm_simdev_opts_init(&o);
		o.mem_bytes = (uint64_t)G.dev_mib * MiB;
		o.compute_units = 2;
		o.lanes_per_cu = 4;
		o.coherent = G.coherent && d == 1;
		r = uhmm_simdev_create(G.ctx, &o, &G.dev[d]);
		if (r == -EOPNOTSUPP && o.coherent) {
			fprintf(stderr, "uhmm-torture: no coherent memory here (%s)\n",
				uhmm_strerror(r));
			return 77;
		}
		if (r) {
			fprintf(stderr, "uhmm_simdev_create: %s\n", uhmm_strerror(r));
			return 2;
		}
		pthread_mutex_init(&G.dev_lock[d], NULL);
		pthread_mutex_init(&G.tenant[d].lock, NULL);
	}
	printf("uhmm-torture: seed %" PRIu64 ", %s %.0f, %u threads, %u ranges, "
	       "2 simdevs of %u MiB, watchdog %u s\n", G.seed,
	       G.max_ops ? "ops" : "seconds", G.max_ops ? (double)G.max_ops : G.seconds,
	       G.threads, G.nranges, G.dev_mib, G.watchdog_s);
	for (int k = 0; k < K_COUNT; k++)
		if (G.disabled[k])
			printf("  disabled: %s\n", kinds[k].name);
	if (G.serialize_events)
		printf("  madvise, munmap, mremap serialised (--serialize-events)\n");
	if (G.no_ro_migrate)
		printf("  read-only ranges are not migrated (--no-ro-migrate)\n");
	if (G.no_uhmm_free)
		printf("  allocated ranges are released with munmap(2) (--no-uhmm-free)\n");
	if (G.sigbus)
		printf("  faulting threads serve their own faults (--sigbus: UHMM_CTX_SIGBUS)\n");
	if (G.coherent)
		printf("  simdev 1's memory is coherent (--coherent)\n");
	if (G.poison)
		printf("  pages are lost on devices (--poison)\n");
	if (G.thp)
		printf("  half of the registered ranges are THP-backed (--thp)\n");
	struct uhmm_policy_info pol;
	if (uhmm_policy_get(G.ctx, &pol) == 0 && strcmp(pol.name, "default"))
		printf("  policy: %s (UHMM_POLICY)\n", pol.name);

	TS = calloc(G.threads, sizeof(*TS));
	G.slots = calloc(G.nranges, sizeof(*G.slots));
	if (!TS || !G.slots)
		return 2;
	struct tstate main_t = { .id = 0, .rng = mix64(G.seed ^ 0xfeed) | 1 };
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&G.event_lock, &ra);
	for (unsigned si = 0; si < G.nranges; si++) {
		pthread_rwlock_init(&G.slots[si].lock, &ra);
		if (slot_map(&main_t, &G.slots[si], pick_npages(&main_t)))
			return 2;
	}
	G.deadline_ns = now_ns() + (uint64_t)(G.seconds * 1e9);
	uint64_t t0 = now_ns();
	pthread_t wd;
	for (unsigned i = 0; i < G.threads; i++) {
		TS[i].id = i;
		TS[i].rng = mix64(G.seed * 1000003u + i) | 1;
		atomic_store(&TS[i].cur_kind, -1);
		if (pthread_create(&TS[i].thr, NULL, worker, &TS[i])) {
			fprintf(stderr, "pthread_create failed\n");
			return 2;
		}
	}
	pthread_create(&wd, NULL, watchdog, NULL);
	for (unsigned i = 0; i < G.threads; i++)
		pthread_join(TS[i].thr, NULL);
	double secs = (double)(now_ns() - t0) / 1e9;
	atomic_store(&G.stop, true);
	pthread_join(wd, NULL);

	final_checks(&main_t);

	struct uhmm_stats st;
	uhmm_stats_get(G.ctx, &st);
	/* A plug-in policy must not have been ejected: its answers are
	 * valid and it runs within its budget. */
	if (uhmm_policy_get(G.ctx, &pol) == 0 && pol.ejections) {
		fprintf(stderr, "policy ejected: %s\n", pol.ejected);
		atomic_fetch_add(&G.unexpected, 1);
	}
	if (G.verbose) {
		uhmm_stats_print(G.ctx, stdout);
		fflush(stdout);
		for (unsigned d = 0; d < NDEV; d++)
			dump_device(d);
	}
	r = uhmm_ctx_destroy(G.ctx);
	if (r)
		unexpected(NULL, K_VERIFY, "uhmm_ctx_destroy", r, "");
	/* The memory stays the caller's, with its contents. */
	for (unsigned si = 0; si < G.nranges; si++)
		op_verify(&main_t, si, "after uhmm_ctx_destroy");

	unsigned long total = 0;
	printf("\n%-12s %10s %10s %8s %8s %8s %8s\n", "kind", "ops", "calls ok", "ENOMEM",
	       "EBUSY", "EPERM", "other");
	for (int k = 0; k < K_COUNT; k++) {
		unsigned long ops = atomic_load(&kst[k].ops);
		total += ops;
		printf("%-12s %10lu %10lu %8lu %8lu %8lu %8lu\n", kinds[k].name, ops,
		       atomic_load(&kst[k].ok), atomic_load(&kst[k].enomem),
		       atomic_load(&kst[k].ebusy), atomic_load(&kst[k].eperm),
		       atomic_load(&kst[k].other));
	}
	printf("\nops %lu in %.1f s (%.0f/s); bytes checked %lu, words checked %lu; "
	       "fork children %lu; kernels replayed after a partial failure %lu\n",
	       total, secs, (double)total / secs, atomic_load(&G.checked_bytes),
	       atomic_load(&G.checked_words), atomic_load(&G.fork_children),
	       atomic_load(&G.kernel_partial));
	printf("library: migrated to device %" PRIu64 " pages, to system %" PRIu64
	       ", cpu faults %" PRIu64 " (device %" PRIu64 "), exclusive grabs %" PRIu64
	       ", revocations %" PRIu64 ", events remove/unmap/remap %" PRIu64 "/%" PRIu64
	       "/%" PRIu64 ", invalidations %" PRIu64 "\n",
	       st.migrated_to_device_pages, st.migrated_to_system_pages, st.cpu_faults,
	       st.cpu_faults_device, st.exclusive_grabs, st.exclusive_revocations,
	       st.events_remove, st.events_unmap, st.events_remap, st.invalidations);
	printf("eviction: %" PRIu64 " pages (%" PRIu64 " blocks) evicted, %" PRIu64
	       " ms evicting, %" PRIu64 " busy victims skipped, %" PRIu64 " back-offs; "
	       "uhmm_device_evict moved %lu bytes\n",
	       st.evicted_pages, st.evicted_blocks, st.evict_ns / 1000000, st.evict_busy,
	       st.evict_backoffs, atomic_load(&G.evicted_by_call));
	printf("device huge pages: %" PRIu64 " 2 MiB blocks moved as one unit, %" PRIu64
	       " units split by partial operations\n",
	       st.dev_huge_units, st.dev_huge_splits);
	printf("migrations toward a device refused -ENOMEM: %lu larger than the device, "
	       "%lu fitting but not their 2 MiB blocks, %lu while the tenant changed\n",
	       atomic_load(&G.enomem_over), atomic_load(&G.enomem_blocks),
	       atomic_load(&G.enomem_resizing));
	printf("policy %s; %" PRIu64 " bytes prefetched; %" PRIu64 " thrashing regions pinned\n",
	       pol.name, st.prefetched_bytes, st.thrash_pins);
	if (G.poison)
		printf("poison: %lu pages lost on a device and cleared, %lu tries skipped "
		       "(the page not on the device)\n",
		       atomic_load(&G.poisoned), atomic_load(&G.poison_skipped));
	unsigned long mm = atomic_load(&G.mismatches), ue = atomic_load(&G.unexpected);
	printf("mismatches %lu, unexpected results %lu (seed %" PRIu64 "): %s\n", mm, ue, G.seed,
	       mm || ue ? "FAIL" : "PASS");
	for (unsigned si = 0; si < G.nranges; si++) {
		munmap(G.slots[si].base, G.slots[si].len);
		slot_free_model(&G.slots[si]);
		pthread_rwlock_destroy(&G.slots[si].lock);
	}
	free(G.slots);
	free(TS);
	return mm || ue ? 1 : 0;
}
