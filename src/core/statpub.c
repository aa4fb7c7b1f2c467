/* SPDX-License-Identifier: MIT */
/*
 * statpub.c - the live view: each context publishes its counters, its
 * devices' memory and where its ranges' bytes live into a small shared
 * file that another process maps and reads without stopping this one
 * (uhmm-stat; the format is statfmt.h, documented in docs/STAT.md).
 *
 * The file: $UHMM_STAT_DIR/PID.N, or /dev/shm/uhmm-EUID/PID.N (N the
 * context's number in the process), mode 0600 in a directory of mode 0700
 * that must be the user's own.  Created at uhmm_ctx_create() (under a
 * temporary name, renamed into place once the first snapshot is in it),
 * removed at uhmm_ctx_destroy() and, for contexts still alive, at the
 * process's exit (a library destructor); a process killed leaves its files
 * behind, and readers remove those of dead processes.
 *
 * A publisher thread of the context's rewrites it every UHMM_STAT_MS
 * (default 250 ms) under the segment's seqlock: the counters are loads of
 * the atomics that already exist, the devices' figures likewise; the range
 * summary walks the page words of each range without any page lock (a
 * peek: a page in motion is counted where its word says).  It takes the
 * ranges table's read lock only to take references on a batch of ranges
 * (the fault path takes it for reading too, and glibc's rwlock lets
 * readers share it), and the registry's lock and a hold of each device
 * for the devices (as any API call does).  Nothing on the fault path
 * waits for it.  A walk that takes long (huge ranges with page state)
 * spaces the publications out: at least 20 times the walk's time apart.
 *
 * Off: UHMM_CTX_NO_STAT, or UHMM_STAT=0 in the environment (which wins:
 * UHMM_STAT=1 turns it on despite the flag).  A failure to publish (no
 * /dev/shm, a directory that is not the user's) never fails the context:
 * it says so in the decision log (UHMM_LOG=info) and goes on without.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/log.h"
#include "core/statfmt.h"

#define STAT_MS_DEFAULT 250u
#define STAT_MS_MIN 10u
#define STAT_MS_MAX 60000u
#define RANGE_BATCH 32u

struct uhmm_statpub {
	struct uhmm_ctx *ctx;
	char path[PATH_MAX];
	void *seg;           /* the shared mapping */
	void *stage;         /* a private copy where a snapshot is built */
	size_t seg_size;
	pid_t pid;
	uint32_t interval_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	struct uhmm_statpub *next; /* the process's list (for the exit) */
};

/* The fields of struct uhmm_stats by name: the segment names its counters,
 * so that readers need no copy of uhmm.h (a word this table does not name
 * is published as "field_N"; tests/unit/test_statseq.c checks none is). */
#define F(x) { #x, offsetof(struct uhmm_stats, x) }
static const struct {
	const char *name;
	size_t off;
} stat_fields[] = {
	F(migrated_to_device_pages), F(migrated_to_device_bytes),
	F(migrated_to_system_pages), F(migrated_to_system_bytes),
	F(zero_filled_pages), F(cpu_faults), F(cpu_faults_device), F(cpu_faults_waited),
	F(fault_around_pages), F(copy_ns), F(copy_batches), F(copy_errors), F(pool_hits),
	F(pool_misses), F(events_remove), F(events_unmap), F(events_remap),
	F(device_pages_freed_by_events), F(ranges_displaced), F(migrate_busy),
	F(exclusive_grabs), F(exclusive_revocations), F(exclusive_revoke_ns),
	F(invalidations), F(range_fault_calls), F(range_fault_pages), F(metadata_bytes),
	F(managed_pages), F(private_bytes), F(readahead_pages), F(service_spin_hits),
	F(metadata_dir_bytes), F(evicted_pages), F(evicted_bytes), F(evicted_blocks),
	F(evict_ns), F(evict_busy), F(evict_backoffs), F(reserve_slots),
	F(reserve_slots_used), F(policy_ejections), F(prefetched_bytes),
	F(thrash_detections), F(thrash_pins), F(poisoned_pages), F(dev_huge_units),
	F(dev_huge_splits), F(dup_made), F(dup_dropped), F(thp_available),
	F(thp_moves_out), F(thp_moves_in),
};
#undef F
#define NSTATS (sizeof(struct uhmm_stats) / sizeof(uint64_t))
#define NAME_MAX_LEN 40u

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct uhmm_statpub *pubs;
static _Atomic uint64_t ctx_count;

size_t uhmm__stat_names_unknown(void);
/* Tests: the words of struct uhmm_stats the table above does not name. */
size_t uhmm__stat_names_unknown(void)
{
	size_t unknown = 0;
	for (size_t w = 0; w < NSTATS; w++) {
		bool named = false;
		for (size_t i = 0; i < sizeof(stat_fields) / sizeof(stat_fields[0]); i++)
			named |= stat_fields[i].off == w * sizeof(uint64_t);
		unknown += !named;
	}
	return unknown;
}

static uint64_t clock_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Field 22 of /proc/self/stat (after the command's closing parenthesis). */
static uint64_t self_starttime(void)
{
	struct uhmm_lines l;
	char line[1024];
	uint64_t t = 0;
	if (uhmm__lines_open(&l, "/proc/self/stat"))
		return 0;
	if (uhmm__lines_next(&l, line, sizeof(line))) {
		char *p = strrchr(line, ')');
		/* Fields from the state (3) on: the start time is the 20th. */
		for (int f = 3; p && f <= 22; f++) {
			p = strchr(p + 1, ' ');
			if (p && f == 22)
				t = strtoull(p + 1, NULL, 10);
		}
	}
	uhmm__lines_close(&l);
	return t;
}

/* The directory, created if missing; -errno if it is not the user's own
 * (a directory of someone else's in /dev/shm must not receive our files). */
static int stat_dir(char *buf, size_t n)
{
	const char *d = getenv("UHMM_STAT_DIR");
	int len = d && *d ? snprintf(buf, n, "%s", d)
			  : snprintf(buf, n, "/dev/shm/uhmm-%u", (unsigned)geteuid());
	if (len < 0 || (size_t)len >= n)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	struct stat st;
	if (lstat(buf, &st))
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
		return -EPERM;
	return 0;
}

static bool stat_enabled(const struct uhmm_ctx *ctx)
{
	const char *e = getenv("UHMM_STAT");
	if (e && *e)
		return strcmp(e, "0") != 0;
	return !(ctx->opts.flags & UHMM_CTX_NO_STAT);
}

static uint32_t stat_interval(void)
{
	const char *e = getenv("UHMM_STAT_MS");
	if (e && *e) {
		char *end;
		unsigned long v = strtoul(e, &end, 0);
		if (!*end && v >= STAT_MS_MIN && v <= STAT_MS_MAX)
			return (uint32_t)v;
	}
	return STAT_MS_DEFAULT;
}

static size_t round8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

/* Lay the segment's constant part out in buf (the stage). */
static size_t layout(void *buf, size_t size)
{
	struct uhmm_stat_hdr *h = buf;
	size_t off = sizeof(*h);
	if (buf) {
		memcpy(h->magic, UHMM_STAT_MAGIC, 8);
		h->version = UHMM_STAT_VERSION;
		h->hdr_size = sizeof(*h);
		h->seg_size = size;
		h->nstats = NSTATS;
		h->stats_off = (uint32_t)off;
	}
	off += NSTATS * sizeof(uint64_t);
	size_t names_off = off, nl = 0;
	for (size_t w = 0; w < NSTATS; w++) {
		char name[NAME_MAX_LEN];
		snprintf(name, sizeof(name), "field_%zu", w);
		for (size_t i = 0; i < sizeof(stat_fields) / sizeof(stat_fields[0]); i++)
			if (stat_fields[i].off == w * sizeof(uint64_t))
				snprintf(name, sizeof(name), "%s", stat_fields[i].name);
		size_t l = strlen(name) + 1;
		if (buf)
			memcpy((char *)buf + names_off + nl, name, l);
		nl += l;
	}
	off = round8(names_off + nl);
	size_t devs_off = off;
	off += UHMM_STAT_MAX_DEVS * sizeof(struct uhmm_stat_dev);
	size_t ranges_off = off;
	off += UHMM_STAT_MAX_RANGES * sizeof(struct uhmm_stat_range);
	size_t rest_off = off;
	off += sizeof(struct uhmm_stat_range);
	if (buf) {
		h->names_off = (uint32_t)names_off;
		h->names_len = (uint32_t)nl;
		h->max_devs = UHMM_STAT_MAX_DEVS;
		h->devs_off = (uint32_t)devs_off;
		h->dev_size = sizeof(struct uhmm_stat_dev);
		h->max_ranges = UHMM_STAT_MAX_RANGES;
		h->ranges_off = (uint32_t)ranges_off;
		h->range_size = sizeof(struct uhmm_stat_range);
		h->rest_off = (uint32_t)rest_off;
	}
	return off;
}

/* Add the locations of r's pages to e; slot maps a device id to its entry
 * in the device table (0xff: past it). */
static void range_walk(const struct uhmm_range *r, struct uhmm_stat_range *e,
		       const uint8_t *slot)
{
	for (size_t idx = 0; idx < r->npages;) {
		size_t n = range_blk_left(r, idx);
		if (n > r->npages - idx)
			n = r->npages - idx;
		if (!range_blk_present(r, idx)) { /* never touched: at home */
			e->cpu_bytes += n * PAGE_SIZE;
			idx += n;
			continue;
		}
		for (size_t i = idx; i < idx + n; i++) {
			uint32_t w = atomic_load_explicit(&range_page_peek(r, i)->word,
							  memory_order_relaxed);
			if (w & PG_POISON) {
				e->poisoned_bytes += PAGE_SIZE;
			} else if (!pg_dev(w)) {
				e->cpu_bytes += PAGE_SIZE;
				if (w & PG_DUP)
					e->dup_bytes += PAGE_SIZE;
			} else if (pg_excl(w)) {
				e->excl_bytes += PAGE_SIZE;
			} else if (pg_coh(w)) {
				e->coherent_bytes += PAGE_SIZE;
			} else if (slot[pg_dev(w)] < UHMM_STAT_MAX_DEVS) {
				e->dev_bytes[slot[pg_dev(w)]] += PAGE_SIZE;
			} else {
				e->other_dev_bytes += PAGE_SIZE;
			}
		}
		idx += n;
	}
}

static void range_add(struct uhmm_stat_range *sum, const struct uhmm_stat_range *e)
{
	const uint64_t *s = (const uint64_t *)e;
	uint64_t *d = (uint64_t *)sum;
	for (size_t i = 0; i < sizeof(*e) / sizeof(uint64_t); i++)
		d[i] += s[i];
	sum->start = 0;
}

/* The devices into the stage; slot[id] their entries. */
static void snap_devices(struct uhmm_ctx *ctx, struct uhmm_stat_hdr *h, uint8_t *slot)
{
	struct uhmm_stat_dev *devs = (void *)((char *)h + h->devs_off);
	uint32_t n = 0;
	uint64_t total = 0;
	memset(slot, 0xff, MAX_DEVICES);
	for (unsigned id = 1; id < MAX_DEVICES; id++) {
		struct uhmm_device *d = atomic_load(&ctx->devs[id]);
		if (!d)
			continue;
		total++;
		if (n >= UHMM_STAT_MAX_DEVS || uhmm__dev_hold(ctx, d))
			continue;
		struct uhmm_stat_dev *e = &devs[n];
		memset(e, 0, sizeof(*e));
		e->id = id;
		snprintf(e->name, sizeof(e->name), "%s", d->name);
		e->bytes_in_use = atomic_load_explicit(&d->frames_used, memory_order_relaxed) *
				  PAGE_SIZE;
		e->evicted_pages = atomic_load_explicit(&d->evicted_pages, memory_order_relaxed);
		if (d->coh_base) {
			e->flags |= UHMM_STAT_DEV_COHERENT;
			e->coherent_bytes = atomic_load_explicit(&d->coh_pages,
								 memory_order_relaxed) * PAGE_SIZE;
		}
		if (d->ops->describe) {
			struct uhmm_device_desc desc;
			memset(&desc, 0, sizeof(desc));
			desc.size = sizeof(desc);
			if (d->ops->describe(d->priv, &desc) == 0)
				e->mem_bytes = desc.mem_bytes;
		}
		uhmm__dev_release(d);
		slot[id] = (uint8_t)n++;
	}
	h->ndevs = n;
	h->ndevs_total = total;
	if (total > n)
		h->flags |= UHMM_STAT_F_DEVS_CUT;
}

/* The ranges into the stage, by address, a batch of references at a time
 * (the table's lock is held only to take them). */
static void snap_ranges(struct uhmm_ctx *ctx, struct uhmm_stat_hdr *h, const uint8_t *slot)
{
	struct uhmm_stat_range *ranges = (void *)((char *)h + h->ranges_off);
	struct uhmm_stat_range *rest = (void *)((char *)h + h->rest_off);
	uint32_t n = 0;
	uint64_t total = 0;
	uintptr_t next = 0;
	memset(rest, 0, sizeof(*rest));
	for (;;) {
		struct uhmm_range *batch[RANGE_BATCH];
		size_t nb = 0;
		pthread_rwlock_rdlock(&ctx->ranges_lock);
		size_t lo = 0, hi = ctx->nranges;
		while (lo < hi) { /* the first range starting at or after next */
			size_t mid = (lo + hi) / 2;
			if (ctx->ranges[mid]->start < next)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (size_t i = lo; i < ctx->nranges && nb < RANGE_BATCH; i++) {
			atomic_fetch_add_explicit(&ctx->ranges[i]->refs, 1, memory_order_relaxed);
			batch[nb++] = ctx->ranges[i];
		}
		pthread_rwlock_unlock(&ctx->ranges_lock);
		if (!nb)
			break;
		for (size_t i = 0; i < nb; i++) {
			struct uhmm_range *r = batch[i];
			struct uhmm_stat_range e;
			memset(&e, 0, sizeof(e));
			e.start = r->start;
			e.bytes = r->npages * PAGE_SIZE;
			range_walk(r, &e, slot);
			if (n < UHMM_STAT_MAX_RANGES)
				ranges[n++] = e;
			else
				range_add(rest, &e);
			total++;
			next = range_end(r);
			uhmm__range_put(r);
		}
	}
	h->nranges = n;
	h->nranges_total = total;
	if (total > n)
		h->flags |= UHMM_STAT_F_RANGES_CUT;
}

/* Build a snapshot in the stage and copy it into the segment. */
static void publish(struct uhmm_statpub *sp)
{
	struct uhmm_ctx *ctx = sp->ctx;
	struct uhmm_stat_hdr *h = sp->stage;
	uint8_t slot[MAX_DEVICES];
	if (uhmm__ctx_enter(ctx))
		return; /* being destroyed: the file goes next */
	h->pid = sp->pid;
	h->flags = (ctx->sigbus ? UHMM_STAT_F_SIGBUS : 0) |
		   (ctx->user_mode_only ? UHMM_STAT_F_USER_MODE_ONLY : 0) |
		   (!ctx->move_out ? UHMM_STAT_F_NO_MOVE : 0);
	h->interval_ms = sp->interval_ms;
	uint64_t *stats = (uint64_t *)((char *)h + h->stats_off);
	const uint64_t *src = (const uint64_t *)&ctx->stats;
	for (size_t i = 0; i < NSTATS; i++)
		stats[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	stats[offsetof(struct uhmm_stats, private_bytes) / sizeof(uint64_t)] = uhmm__umem_bytes();
	snap_devices(ctx, h, slot);
	snap_ranges(ctx, h, slot);
	uhmm__ctx_exit(ctx);
	h->generation++;
	h->update_ns = clock_ns(CLOCK_MONOTONIC);

	struct uhmm_stat_hdr *seg = sp->seg;
	size_t first = UHMM_STAT_SEQ_FIRST_WORD * sizeof(uint64_t);
	size_t used = h->ranges_off + (size_t)h->nranges * sizeof(struct uhmm_stat_range);
	uhmm_stat_seq_write_begin(seg);
	uhmm_stat_words_store((char *)seg + first, (char *)h + first, (used - first) / 8);
	uhmm_stat_words_store((char *)seg + h->rest_off, (char *)h + h->rest_off,
			      sizeof(struct uhmm_stat_range) / 8);
	uhmm_stat_seq_write_end(seg);
}

static void *pub_main(void *arg)
{
	struct uhmm_statpub *sp = arg;
	pthread_setname_np(pthread_self(), "uhmm-stat");
	pthread_mutex_lock(&sp->lock);
	while (!sp->stop) {
		pthread_mutex_unlock(&sp->lock);
		uint64_t t0 = uhmm__now_ns();
		publish(sp);
		uint64_t wait = (uint64_t)sp->interval_ms * 1000000ull, cost = uhmm__now_ns() - t0;
		((struct uhmm_stat_hdr *)sp->stage)->publish_ns = cost; /* shown next time */
		if (cost * 20 > wait)
			wait = cost * 20;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t until = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + wait;
		ts.tv_sec = (time_t)(until / 1000000000ull);
		ts.tv_nsec = (long)(until % 1000000000ull);
		pthread_mutex_lock(&sp->lock);
		while (!sp->stop && pthread_cond_timedwait(&sp->cond, &sp->lock, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&sp->lock);
	return NULL;
}

static void pub_free(struct uhmm_statpub *sp)
{
	if (sp->seg)
		uhmm__umem_unmap(sp->seg, sp->seg_size);
	if (sp->stage)
		uhmm__umem_unmap(sp->stage, sp->seg_size);
	pthread_mutex_destroy(&sp->lock);
	pthread_cond_destroy(&sp->cond);
	uhmm__umem_free(sp);
}

void uhmm__statpub_start(struct uhmm_ctx *ctx)
{
	if (!stat_enabled(ctx))
		return;
	uint64_t id = atomic_fetch_add(&ctx_count, 1) + 1;
	struct uhmm_statpub *sp = uhmm__umem_calloc(1, sizeof(*sp));
	if (!sp)
		return;
	sp->ctx = ctx;
	sp->pid = getpid();
	sp->interval_ms = stat_interval();
	pthread_mutex_init(&sp->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sp->cond, &ca);
	pthread_condattr_destroy(&ca);

	char dir[PATH_MAX - 64], tmp[PATH_MAX];
	int err = stat_dir(dir, sizeof(dir));
	int fd = -1;
	if (err)
		goto fail;
	snprintf(sp->path, sizeof(sp->path), "%s/%d.%llu", dir, (int)sp->pid,
		 (unsigned long long)id);
	snprintf(tmp, sizeof(tmp), "%s/.%d.%llu.tmp", dir, (int)sp->pid,
		 (unsigned long long)id);
	sp->seg_size = (layout(NULL, 0) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	sp->stage = uhmm__umem_map(sp->seg_size, 0, 0);
	if (!sp->stage) {
		err = -ENOMEM;
		goto fail;
	}
	layout(sp->stage, sp->seg_size);
	struct uhmm_stat_hdr *h = sp->stage;
	h->pid = sp->pid;
	h->starttime = self_starttime();
	h->ctx_id = id;
	h->created_ns = clock_ns(CLOCK_REALTIME);
	unlink(tmp); /* a leftover of a process with our pid */
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		err = -errno;
		goto fail;
	}
	/* Its blocks allocated now: a store into a hole of a full tmpfs
	 * would be a SIGBUS in the publisher, later. */
	err = -posix_fallocate(fd, 0, (off_t)sp->seg_size);
	if (err)
		goto fail;
	/* In uhmm's own address space, not where mmap(NULL) would put it: an
	 * application's hole (holes_stay_unmapped). */
	sp->seg = uhmm__umem_map_file(sp->seg_size, fd);
	if (!sp->seg) {
		err = -errno;
		goto fail;
	}
	close(fd);
	fd = -1;
	memcpy(sp->seg, sp->stage, sp->seg_size); /* nobody reads it yet */
	publish(sp); /* a first snapshot before it appears */
	if (rename(tmp, sp->path)) {
		err = -errno;
		goto fail;
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -uhmm__umem_thread_create(&sp->thread, pub_main, sp);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		unlink(sp->path);
		goto fail;
	}
	pthread_mutex_lock(&list_lock);
	sp->next = pubs;
	pubs = sp;
	pthread_mutex_unlock(&list_lock);
	ctx->statpub = sp;
	UHMM_LOG(UHMM_LOG_INFO, "context %p: live view in %s every %u ms", (void *)ctx, sp->path,
		 sp->interval_ms);
	return;
fail:
	if (fd >= 0) {
		close(fd);
		unlink(tmp);
	} else if (sp->seg) {
		unlink(tmp);
	}
	UHMM_LOG(UHMM_LOG_INFO, "context %p: no live view (uhmm-stat): %s", (void *)ctx,
		 strerror(-err));
	pub_free(sp);
}

void uhmm__statpub_stop(struct uhmm_ctx *ctx)
{
	struct uhmm_statpub *sp = ctx->statpub;
	if (!sp)
		return;
	pthread_mutex_lock(&list_lock);
	for (struct uhmm_statpub **pp = &pubs; *pp; pp = &(*pp)->next)
		if (*pp == sp) {
			*pp = sp->next;
			break;
		}
	pthread_mutex_unlock(&list_lock);
	unlink(sp->path);
	pthread_mutex_lock(&sp->lock);
	sp->stop = true;
	pthread_cond_signal(&sp->cond);
	pthread_mutex_unlock(&sp->lock);
	uhmm__umem_thread_join(sp->thread, NULL);
	ctx->statpub = NULL;
	pub_free(sp);
}

/* At the exit, the files of the contexts nobody destroyed go too (not a
 * fork child's: they are its parent's). */
__attribute__((destructor)) static void statpub_exit(void)
{
	pid_t me = getpid();
	pthread_mutex_lock(&list_lock);
	for (struct uhmm_statpub *sp = pubs; sp; sp = sp->next)
		if (sp->pid == me)
			unlink(sp->path);
	pthread_mutex_unlock(&list_lock);
}
