/* SPDX-License-Identifier: MIT */
/*
 * statfmt.h - the layout of a context's live-view segment (docs/STAT.md).
 *
 * Each context publishes its counters, its devices' memory and a summary
 * of where each managed range's bytes live into one small file, mapped
 * shared (statpub.c), which another process (uhmm-stat, tools/stat) reads
 * without stopping it, in the manner of the JVM's hsperfdata.  This header
 * is the format: the library writes it, the tool and the tests read it.
 * It is stable: version 1 is what docs/STAT.md describes; a change of a
 * field's meaning or place is a new version; new fields go at the ends of
 * the structs (a reader uses hdr_size, dev_size and range_size, not
 * sizeof, to step through them).
 *
 * Everything is little-endian host order, naturally aligned, and every
 * struct a multiple of 8 bytes, so that the writer can store and a reader
 * copy the segment one 64-bit word at a time (below).
 *
 * Consistency: a seqlock.  hdr.seq is even while the segment is stable
 * and odd while the writer rewrites it.  A reader copies the segment,
 * then checks that seq was even before the copy and unchanged after it;
 * otherwise it copies again (uhmm_stat_seq_read, bounded).  The words
 * before seq (magic, version, hdr_size, seg_size) are written once,
 * before the file appears under its name (it is created under another
 * name and renamed), and never change.
 */
#ifndef UHMM_CORE_STATFMT_H
#define UHMM_CORE_STATFMT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define UHMM_STAT_MAGIC "UHMMSTAT" /* 8 bytes, no NUL */
#define UHMM_STAT_VERSION 1u
/* Devices and ranges the segment describes one by one; past these, they
 * are summed (ndevs_total, nranges_total, the rest entry). */
#define UHMM_STAT_MAX_DEVS 16u
#define UHMM_STAT_MAX_RANGES 256u

/* hdr.flags */
#define UHMM_STAT_F_SIGBUS 0x1u        /* UHMM_CTX_SIGBUS context */
#define UHMM_STAT_F_USER_MODE_ONLY 0x2u /* kernel accesses are not served */
#define UHMM_STAT_F_NO_MOVE 0x4u       /* no UFFDIO_MOVE (the no-move path) */
#define UHMM_STAT_F_RANGES_CUT 0x8u    /* more ranges than entries: the rest summed */
#define UHMM_STAT_F_DEVS_CUT 0x10u     /* more devices than entries */
#define UHMM_STAT_F_CLOSED 0x20u       /* the context is being destroyed */

/* uhmm_stat_dev.flags */
#define UHMM_STAT_DEV_COHERENT 0x1u /* its memory is coherent (in place) */

/* One device (in id order; the first UHMM_STAT_MAX_DEVS live ones). */
struct uhmm_stat_dev {
	uint32_t id;              /* uhmm's device id, 1..255 */
	uint32_t flags;           /* UHMM_STAT_DEV_* */
	char name[32];            /* NUL-terminated */
	uint64_t mem_bytes;       /* the device's memory (ops->describe); 0 unknown */
	uint64_t bytes_in_use;    /* frames uhmm holds of it, in bytes */
	uint64_t coherent_bytes;  /* of which mapped in place (coherent memory) */
	uint64_t evicted_pages;   /* pages evicted from it so far */
};

/* Where one range's bytes are (a sum of its pages' locations; the rest
 * entry sums every range past the table). */
struct uhmm_stat_range {
	uint64_t start;           /* address (0 in the rest entry) */
	uint64_t bytes;           /* length */
	uint64_t cpu_bytes;       /* system memory (or never populated) */
	uint64_t dup_bytes;       /* of cpu_bytes: read-mostly, with duplicates on devices */
	uint64_t coherent_bytes;  /* in a device's coherent memory, in place */
	uint64_t excl_bytes;      /* held exclusively by a device */
	uint64_t poisoned_bytes;  /* lost on a device */
	uint64_t other_dev_bytes; /* private memory of devices past the device table */
	/* Private memory of the device of devs[i]. */
	uint64_t dev_bytes[UHMM_STAT_MAX_DEVS];
};

struct uhmm_stat_hdr {
	/* Written once, before the file is renamed into place. */
	char magic[8];            /* UHMM_STAT_MAGIC */
	uint32_t version;         /* UHMM_STAT_VERSION */
	uint32_t hdr_size;        /* sizeof(struct uhmm_stat_hdr) of the writer */
	uint64_t seg_size;        /* bytes of the segment (the file's size) */
	/* The seqlock (above). */
	_Atomic uint64_t seq;
	/* Under the seqlock from here on. */
	int64_t pid;
	uint64_t starttime;       /* the process's start (/proc/PID/stat field 22,
				   * clock ticks after boot): tells a reused pid */
	uint64_t ctx_id;          /* the context's number in its process (1, 2, ...) */
	uint64_t created_ns;      /* CLOCK_REALTIME at creation */
	uint64_t update_ns;       /* CLOCK_MONOTONIC at the last publication */
	uint64_t generation;      /* publications so far */
	uint32_t interval_ms;     /* the publisher's period */
	uint32_t flags;           /* UHMM_STAT_F_* */
	/* The counters: nstats 64-bit words at stats_off, named by the
	 * nstats NUL-terminated strings at names_off (names_len bytes): the
	 * fields of struct uhmm_stats (uhmm.h), by name. */
	uint32_t nstats, stats_off;
	uint32_t names_off, names_len;
	/* Devices: ndevs entries of dev_size bytes at devs_off (room for
	 * max_devs); ndevs_total devices are attached. */
	uint32_t max_devs, devs_off, dev_size, ndevs;
	uint64_t ndevs_total;
	/* Ranges: nranges entries of range_size bytes at ranges_off (room
	 * for max_ranges), by address; nranges_total ranges are managed, and
	 * the ranges past the table are summed in the entry at rest_off. */
	uint32_t max_ranges, ranges_off, range_size, nranges;
	uint64_t nranges_total;
	uint32_t rest_off, reserved0;
	uint64_t publish_ns;      /* what the previous publication took (its walk) */
	uint64_t reserved[6];
};

_Static_assert(sizeof(struct uhmm_stat_dev) % 8 == 0, "word-sized");
_Static_assert(sizeof(struct uhmm_stat_range) % 8 == 0, "word-sized");
_Static_assert(sizeof(struct uhmm_stat_hdr) % 8 == 0, "word-sized");
_Static_assert(offsetof(struct uhmm_stat_hdr, seq) == 24, "seq is word 3");

/* Words of the segment under the seqlock: from the one after seq. */
#define UHMM_STAT_SEQ_FIRST_WORD 4u

/*
 * The seqlock, both sides.  The segment is shared memory another process
 * maps: every access to a word that can change is a relaxed atomic one,
 * ordered by the fences, so that neither side races in the C11 sense
 * (and a sanitizer sees none when both sides are threads of one process,
 * as in the unit test).
 */
static inline void uhmm_stat_seq_write_begin(struct uhmm_stat_hdr *h)
{
	uint64_t s = atomic_load_explicit(&h->seq, memory_order_relaxed);
	atomic_store_explicit(&h->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static inline void uhmm_stat_seq_write_end(struct uhmm_stat_hdr *h)
{
	uint64_t s = atomic_load_explicit(&h->seq, memory_order_relaxed);
	atomic_store_explicit(&h->seq, s + 1, memory_order_release);
}

/* Store nwords words of src into dst (the segment), between begin and end. */
static inline void uhmm_stat_words_store(void *dst, const void *src, size_t nwords)
{
	uint64_t *d = dst;
	const uint64_t *s = src;
	for (size_t i = 0; i < nwords; i++)
		__atomic_store_n(&d[i], s[i], __ATOMIC_RELAXED);
}

/* Load nwords words of src (the segment) into dst. */
static inline void uhmm_stat_words_load(void *dst, const void *src, size_t nwords)
{
	uint64_t *d = dst;
	const uint64_t *s = src;
	for (size_t i = 0; i < nwords; i++)
		d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

/*
 * One attempt at a consistent copy of the segment's first nwords words
 * (seg, mapped) into out: true if the copy is a snapshot (seq even and
 * unchanged across it).  A reader retries a failed attempt, a bounded
 * number of times (a writer that died in the middle leaves seq odd).
 * @between: called between the copy and the check (tests; NULL: none).
 */
static inline int uhmm_stat_seq_read(const void *seg, void *out, size_t nwords,
				     void (*between)(void *), void *arg)
{
	const struct uhmm_stat_hdr *h = seg;
	uint64_t s1 = atomic_load_explicit((_Atomic uint64_t *)&h->seq, memory_order_acquire);
	if (s1 & 1)
		return 0;
	uhmm_stat_words_load(out, seg, nwords);
	if (between)
		between(arg);
	atomic_thread_fence(memory_order_acquire);
	uint64_t s2 = atomic_load_explicit((_Atomic uint64_t *)&h->seq, memory_order_relaxed);
	if (s1 != s2)
		return 0;
	((struct uhmm_stat_hdr *)out)->seq = s1;
	return 1;
}

#endif /* UHMM_CORE_STATFMT_H */
