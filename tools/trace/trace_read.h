/* SPDX-License-Identifier: MIT */
/*
 * trace_read.h - load a uhmm trace file (src/core/trace.h, docs/TRACING.md)
 * into memory, every record with the thread that recorded it, sorted by
 * time (records of equal time keep their file order).  Shared by
 * uhmm-trace and uhmm-replay (tools: they use the C library's malloc).
 */
#ifndef UHMM_TRACE_READ_H
#define UHMM_TRACE_READ_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/trace.h"

struct trec {
	struct uhmm_trace_rec r;
	uint32_t tid;   /* the recording thread */
	uint64_t order; /* position in the file */
};

struct tfile {
	struct uhmm_trace_hdr hdr;
	struct trec *v;
	size_t n;
	int truncated; /* the file ends in or before a chunk it promised */
};

static inline int trec_cmp(const void *x, const void *y)
{
	const struct trec *a = x, *b = y;
	if (a->r.time != b->r.time)
		return a->r.time < b->r.time ? -1 : 1;
	return a->order < b->order ? -1 : a->order > b->order;
}

static inline const char *tr_kind_name(unsigned k)
{
	static const char *names[] = { "?", "cpu_fault", "dev_fault", "migrate", "evict",
				       "inval", "prefetch", "advice", "dup", "counter" };
	return k < UHMM_TR_NKINDS ? names[k] : "?";
}

static inline const char *tr_cause_name(unsigned c)
{
	static const char *names[] = { "call", "cpu_fault", "dev_fault", "evict",
				       "readahead", "prefetch" };
	return c < UHMM_TR_NCAUSES ? names[c] : "?";
}

static inline const char *tr_access_name(unsigned a)
{
	return a == 1 ? "read" : a == 2 ? "write" : a == 3 ? "atomic" : "?";
}

/* Returns 0, or -errno with a message in err. */
static inline int tfile_load(const char *path, struct tfile *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	FILE *f = fopen(path, "rb");
	if (!f) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (fread(&t->hdr, sizeof(t->hdr), 1, f) != 1 ||
	    memcmp(t->hdr.magic, UHMM_TRACE_MAGIC, sizeof(t->hdr.magic)) != 0) {
		snprintf(err, errlen, "%s: not a uhmm trace", path);
		fclose(f);
		return -EINVAL;
	}
	if (t->hdr.version != UHMM_TRACE_VERSION ||
	    t->hdr.rec_bytes != sizeof(struct uhmm_trace_rec) ||
	    t->hdr.hdr_bytes < sizeof(t->hdr)) {
		snprintf(err, errlen, "%s: trace version %u (record %u bytes) not supported",
			 path, t->hdr.version, t->hdr.rec_bytes);
		fclose(f);
		return -EINVAL;
	}
	if (fseek(f, (long)t->hdr.hdr_bytes, SEEK_SET) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		fclose(f);
		return -EIO;
	}
	size_t cap = 0;
	uint64_t order = 0;
	for (;;) {
		struct uhmm_trace_chunk c;
		size_t got = fread(&c, 1, sizeof(c), f);
		if (got == 0)
			break;
		if (got != sizeof(c) || c.magic != UHMM_TRACE_CHUNK_MAGIC) {
			t->truncated = 1;
			break;
		}
		if (t->n + c.nrec > cap) {
			cap = (t->n + c.nrec) * 2 + 1024;
			struct trec *nv = realloc(t->v, cap * sizeof(*nv));
			if (!nv) {
				snprintf(err, errlen, "%s: out of memory", path);
				fclose(f);
				return -ENOMEM;
			}
			t->v = nv;
		}
		uint32_t k;
		for (k = 0; k < c.nrec; k++) {
			struct trec *x = &t->v[t->n];
			if (fread(&x->r, sizeof(x->r), 1, f) != 1)
				break;
			x->tid = c.tid;
			x->order = order++;
			t->n++;
		}
		if (k < c.nrec) {
			t->truncated = 1;
			break;
		}
	}
	fclose(f);
	if (t->n > 1)
		qsort(t->v, t->n, sizeof(*t->v), trec_cmp);
	return 0;
}

static inline void tfile_free(struct tfile *t)
{
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

/* Device name of id (or ""), and its memory size. */
static inline const char *tfile_dev_name(const struct tfile *t, unsigned id)
{
	return id && id <= UHMM_TRACE_MAX_DEVS && t->hdr.dev[id - 1].id ? t->hdr.dev[id - 1].name
									 : "";
}

#endif /* UHMM_TRACE_READ_H */
