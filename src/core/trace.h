/* SPDX-License-Identifier: MIT */
/*
 * trace.h - recording a context's events into a trace file (trace.c), and
 * the file's format, shared with the tools (tools/trace: uhmm-trace,
 * uhmm-replay).  docs/TRACING.md describes the format and the tools.
 *
 * Hooks.  Each uhmm__trace_*() below is a macro that costs one predictable
 * branch (a load of uhmm__tracing, the number of contexts recording in the
 * process) when no context records; only then does it call into trace.c,
 * which looks at the context's own trace.  The mechanism calls them at its
 * event points, one line each.  Recording takes no lock on the fault path:
 * each thread fills a buffer of its own (uhmm's memory), and a full buffer
 * reserves its place in the file with an atomic fetch_add and pwrite()s
 * there.  The trace's lock is taken when a thread first records into a
 * context (registering its buffer), at device attach and at destroy.
 */
#ifndef UHMM_CORE_TRACE_H
#define UHMM_CORE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uhmm/uhmm.h>

#include "core/probes.h"

/* ---- the file format (little-endian, as the machine writes it) --------- */

#define UHMM_TRACE_MAGIC "uhmmTRC\0"
#define UHMM_TRACE_VERSION 1u
#define UHMM_TRACE_MAX_DEVS 255u
/* The header's size: the fixed part and a slot for each possible device. */
#define UHMM_TRACE_HDR_BYTES 16384u
#define UHMM_TRACE_CHUNK_MAGIC 0x6b6e6863u /* "chnk" */

struct uhmm_trace_dev {
	uint32_t id;         /* 1..255; 0: slot unused */
	uint32_t _pad;
	uint64_t mem_bytes;  /* device memory (0: the backend did not say) */
	char name[32];
};

struct uhmm_trace_hdr {
	char magic[8];            /* UHMM_TRACE_MAGIC */
	uint32_t version;         /* UHMM_TRACE_VERSION */
	uint32_t hdr_bytes;       /* offset of the first chunk */
	uint32_t page_size;       /* 4096 */
	uint32_t rec_bytes;       /* sizeof(struct uhmm_trace_rec) */
	uint64_t clock_base;      /* CLOCK_MONOTONIC ns when recording began:
				   * record times are relative to it */
	uint64_t realtime_base;   /* CLOCK_REALTIME ns at the same moment */
	uint32_t pid;
	uint32_t ndev;            /* highest device id seen */
	uint64_t nrec;            /* records written (set when the trace is closed) */
	uint64_t lost;            /* records lost to write errors (likewise) */
	uint32_t fault_around;    /* the context's options (replay's defaults) */
	uint32_t readahead_pages;
	uint32_t closed;          /* 1 once the context was destroyed */
	uint32_t _pad;
	uint8_t _reserved[48];
	struct uhmm_trace_dev dev[UHMM_TRACE_MAX_DEVS]; /* dev[id - 1] */
};

/* After the header: chunks, each a thread's buffer as it was flushed. */
struct uhmm_trace_chunk {
	uint32_t magic;           /* UHMM_TRACE_CHUNK_MAGIC */
	uint32_t tid;             /* the recording thread (gettid) */
	uint32_t nrec;            /* records that follow */
	uint32_t seq;             /* the thread buffer's flush count */
};

/* Record kinds. */
enum uhmm_trace_kind {
	UHMM_TR_CPU_FAULT = 1, /* addr, a = write, b = where (0 CPU, else device
				* id), c = UHMM_TR_CF_*, dur = service ns,
				* len = the faulting thread's id (0: unknown) */
	UHMM_TR_DEV_FAULT = 2, /* addr (page), a = access (1 read, 2 write,
				* 3 atomic), b = device, c = 1 on the first
				* fault of a batch */
	UHMM_TR_MIGRATE = 3,   /* addr (span start), len = bytes moved,
				* a = from, b = to (0 = CPU), c = cause,
				* dur = ns (0: not measured), span = span bytes */
	UHMM_TR_EVICT = 4,     /* b = device, addr = block, len = bytes */
	UHMM_TR_INVAL = 5,     /* addr, len = range, a = enum uhmm_inv_reason */
	UHMM_TR_PREFETCH = 6,  /* addr, len, b = destination (recorded by the
				* policy layer: uhmm__trace_prefetch) */
	UHMM_TR_ADVICE = 7,    /* addr, len, a = advice, b = device
				* (uhmm__trace_advice) */
	UHMM_TR_DUP = 8,       /* addr, len = bytes, a = 1 duplicates made on
				* device b, 0 collapsed (b = 0: every device's) */
	UHMM_TR_COUNTER = 9,   /* addr, len = the region, b = device, a = the
				* policy's action (0 ignore, 1 migrate), span =
				* accesses counted (saturated) */
	UHMM_TR_NKINDS
};
/* UHMM_TR_CPU_FAULT c: how the page was found. */
enum { UHMM_TR_CF_ZERO = 0, UHMM_TR_CF_DEVICE = 1, UHMM_TR_CF_REVOKE = 2 };
/* UHMM_TR_MIGRATE c: why pages moved. */
enum uhmm_trace_cause {
	UHMM_TR_CAUSE_CALL = 0,      /* uhmm_migrate(), unregister, detach, destroy */
	UHMM_TR_CAUSE_CPU_FAULT = 1, /* a CPU fault (with fault-around) */
	UHMM_TR_CAUSE_DEV_FAULT = 2, /* a device's fault service */
	UHMM_TR_CAUSE_EVICT = 3,     /* room on a full device */
	UHMM_TR_CAUSE_READAHEAD = 4, /* read-ahead between CPU faults */
	UHMM_TR_CAUSE_PREFETCH = 5,  /* reserved: an asynchronous prefetch */
	UHMM_TR_NCAUSES
};

struct uhmm_trace_rec {
	uint64_t time;   /* ns since uhmm_trace_hdr.clock_base */
	uint64_t addr;
	uint64_t len;
	uint32_t dur;    /* ns, saturated at UINT32_MAX */
	uint8_t kind;    /* enum uhmm_trace_kind */
	uint8_t a, b, c; /* kind-specific (above) */
	uint32_t span;   /* UHMM_TR_MIGRATE: bytes of the span looked at */
	uint32_t _pad;
};
_Static_assert(sizeof(struct uhmm_trace_rec) == 40, "trace record size");
_Static_assert(sizeof(struct uhmm_trace_chunk) == 16, "trace chunk size");
_Static_assert(sizeof(struct uhmm_trace_hdr) <= UHMM_TRACE_HDR_BYTES, "trace header");

/* ---- recording (library only) -------------------------------------------- */

#ifdef UHMM_BUILDING
struct uhmm_ctx;
struct uhmm_device;

/* Contexts recording now, process-wide: the hooks' one branch. */
extern int uhmm__tracing;
#define UHMM__TRACING() \
	__builtin_expect(__atomic_load_n(&uhmm__tracing, __ATOMIC_RELAXED) != 0, 0)

/* Open @path (truncating) for @ctx; -errno.  Called by uhmm_ctx_create. */
int uhmm__trace_open(struct uhmm_ctx *ctx, const char *path);
/* Flush every thread's buffer, write the final header, close.  Called by
 * uhmm_ctx_destroy once nothing records any more. */
void uhmm__trace_close(struct uhmm_ctx *ctx);

/* Why the calling thread migrates toward a device (a device's fault thread
 * says UHMM_TR_CAUSE_DEV_FAULT once; default CALL).  Always cheap. */
void uhmm__trace_thread_cause(unsigned cause);
unsigned uhmm__trace_cause(void);

void uhmm__tr_cpu_fault(struct uhmm_ctx *ctx, uintptr_t addr, bool write, uint32_t word,
			uint32_t tid, uint64_t t0);
void uhmm__tr_dev_fault(struct uhmm_ctx *ctx, struct uhmm_device *dev, uintptr_t addr,
			unsigned access, bool first);
void uhmm__tr_migrate(struct uhmm_ctx *ctx, uintptr_t addr, size_t span, size_t pages,
		      unsigned from, unsigned to, unsigned cause, uint64_t t0);
void uhmm__tr_evict(struct uhmm_ctx *ctx, unsigned dev, uintptr_t addr, size_t bytes);
void uhmm__tr_inval(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end, unsigned reason);
/* A record of a range: UHMM_TR_PREFETCH (b = destination) and
 * UHMM_TR_ADVICE (a = advice, b = device), for the policy layer's hooks. */
void uhmm__tr_range(struct uhmm_ctx *ctx, unsigned kind, uintptr_t addr, size_t len,
		    unsigned a, unsigned b);
void uhmm__tr_device(struct uhmm_ctx *ctx, unsigned id, const char *name, uint64_t mem_bytes);
void uhmm__tr_counter(struct uhmm_ctx *ctx, unsigned dev, uintptr_t addr, size_t len,
		      uint64_t count, unsigned action);
void uhmm__tr_device_mem(struct uhmm_device *dev, uint64_t mem_bytes);
uint64_t uhmm__tr_now(struct uhmm_ctx *ctx);
struct install_req;
/* The device the pages an install counts came from (still recorded in
 * their words: they are published after they are counted). */
unsigned uhmm__tr_install_from(const struct install_req *req);
uint32_t uhmm__tr_tid(void);

/* The hooks (one line each at the event points). */
/* A start time for a later hook: 0 when nothing records (a trace, or a
 * probe that reports a duration: probes.h). */
#define uhmm__trace_t0(ctx) \
	(UHMM__TRACING() || UHMM_PROBE_TIMED() ? uhmm__tr_now(ctx) : 0)
/* The calling thread's id when something records, else 0. */
#define uhmm__trace_tid() (UHMM__TRACING() ? uhmm__tr_tid() : 0)
/* A CPU fault served (@word: the page's lock word when it was served;
 * @skip: not served after all, handed on or to be repeated). */
#define uhmm__trace_cpu_fault(ctx, addr, write, word, tid, t0, skip)             \
	do {                                                                     \
		if (UHMM__TRACING() && !(skip))                                  \
			uhmm__tr_cpu_fault(ctx, addr, write, word, tid, t0);     \
	} while (0)
#define uhmm__trace_dev_fault(ctx, dev, addr, access, first)                     \
	do {                                                                     \
		UHMM_PROBE(dev_fault, uhmm_device_id(dev), addr, access, first); \
		if (UHMM__TRACING())                                             \
			uhmm__tr_dev_fault(ctx, dev, addr, access, first);       \
	} while (0)
/* Pages moved (none: nothing is recorded). */
#define uhmm__trace_migrate(ctx, addr, span, pages, from, to, cause, t0)         \
	do {                                                                     \
		UHMM_PROBE(migrate_done, addr, span, pages, from, to, cause, t0); \
		if (UHMM__TRACING() && (pages))                                  \
			uhmm__tr_migrate(ctx, addr, span, pages, from, to, cause, t0); \
	} while (0)
#define uhmm__trace_evict(ctx, dev, addr, bytes)                                 \
	do {                                                                     \
		UHMM_PROBE(evict, dev, addr, bytes);                             \
		if (UHMM__TRACING() && (bytes))                                  \
			uhmm__tr_evict(ctx, dev, addr, bytes);                   \
	} while (0)
#define uhmm__trace_inval(ctx, start, end, reason)                               \
	do {                                                                     \
		UHMM_PROBE(invalidate, start, end, reason);                      \
		if (UHMM__TRACING())                                             \
			uhmm__tr_inval(ctx, start, end, reason);                 \
	} while (0)
/* An asynchronous prefetch of [addr, addr + len) to @dst (0: the CPU)
 * was asked for; advice @advice for device @dev (0: none) was given. */
#define uhmm__trace_prefetch(ctx, addr, len, dst)                                \
	do {                                                                     \
		UHMM_PROBE(prefetch, addr, len, dst);                            \
		if (UHMM__TRACING())                                             \
			uhmm__tr_range(ctx, UHMM_TR_PREFETCH, addr, len, 0, dst);\
	} while (0)
#define uhmm__trace_advice(ctx, addr, len, adv, dev)                          \
	do {                                                                     \
		UHMM_PROBE(advice, addr, len, adv, dev);                         \
		if (UHMM__TRACING())                                             \
			uhmm__tr_range(ctx, UHMM_TR_ADVICE, addr, len, adv, dev); \
	} while (0)
/* Read-mostly duplicates of @pages pages from @addr made on @dev, or
 * collapsed (@dev 0). */
#define uhmm__trace_dup(ctx, addr, pages, dev)                                  \
	do {                                                                     \
		if (dev)                                                         \
			UHMM_PROBE(dup_made, dev, addr, pages);                  \
		else                                                             \
			UHMM_PROBE(dup_collapse, addr, pages);                   \
		if (UHMM__TRACING() && (pages))                                  \
			uhmm__tr_range(ctx, UHMM_TR_DUP, addr, (pages) << 12,    \
				       (dev) != 0, dev);                         \
	} while (0)
/* An access-counter notification and the policy's answer. */
#define uhmm__trace_counter(ctx, dev, addr, len, count, action)                 \
	do {                                                                     \
		UHMM_PROBE(access_counter, dev, addr, len, count, action);       \
		if (UHMM__TRACING())                                             \
			uhmm__tr_counter(ctx, dev, addr, len, count, action);    \
	} while (0)
#define uhmm__trace_device(ctx, id, name, mem)                                   \
	do {                                                                     \
		if (UHMM__TRACING())                                             \
			uhmm__tr_device(ctx, id, name, mem);                     \
	} while (0)
#define uhmm__trace_device_mem(dev, mem)                                         \
	do {                                                                     \
		if (UHMM__TRACING())                                             \
			uhmm__tr_device_mem(dev, mem);                           \
	} while (0)
#endif /* UHMM_BUILDING */

#endif /* UHMM_CORE_TRACE_H */
