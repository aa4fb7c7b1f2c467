/* SPDX-License-Identifier: MIT */
/*
 * stride.c - an example placement policy (uhmm/policy.h): a stride
 * prefetcher for device faults.
 *
 * Without a pattern a device fault migrates only the 64 KiB around the
 * page (UVM's first granularity), not the whole 2 MiB block that uhmm's
 * default takes: sparse or random accesses move 32 times less data.  When
 * a device's faults advance by the same positive stride twice in a row (a
 * streaming or strided scan), the span is widened to the rest of the
 * block from the faulting page on: the pages the scan will touch next come
 * with this fault, and the scan faults about once a block.
 * Bad for a scan whose stride is irregular (it keeps to 64 KiB) and for
 * backward scans (not detected).
 *
 * Build: cc -shared -fPIC -I include -o stride.so examples/policies/stride.c -lpthread
 * Use:   uhmm-replay --policy ./stride.so trace.bin
 * Thread safety: its state (the last fault and stride of each device) is
 * under a mutex.
 */
#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>

#include <uhmm/policy.h>

#define PAGE 4096ull
#define BLOCK (2ull << 20)
#define CHUNK (64ull << 10)

struct stride_state {
	pthread_mutex_t lock;
	uint64_t last[256];   /* the last faulting page of each device */
	int64_t delta[256];   /* the step before it (0: none) */
};

static void *stride_init(const void *arg, int *err)
{
	(void)arg;
	struct stride_state *s = calloc(1, sizeof(*s));
	if (!s) {
		*err = -ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

static void stride_exit(void *st)
{
	struct stride_state *s = st;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int stride_dev_faults(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f,
			     size_t n, struct uhmm_pol_dev_act *act)
{
	struct stride_state *s = st;
	unsigned d = dev & 255;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < n; i++) {
		uint64_t page = f[i].addr & ~(PAGE - 1);
		uint64_t blk = page & ~(BLOCK - 1);
		int64_t delta = s->last[d] ? (int64_t)(page - s->last[d]) : 0;
		bool streaming = delta > 0 && delta == s->delta[d];
		uint64_t lo, hi;
		if (streaming) {
			lo = page;
			hi = blk + BLOCK;
		} else {
			lo = page & ~(CHUNK - 1);
			hi = lo + CHUNK;
		}
		/* Within what the page may move with (managed, one advice). */
		act[i].action = UHMM_POL_MIGRATE;
		act[i].lo = lo > f[i].lo ? lo : f[i].lo;
		act[i].hi = hi < f[i].hi ? hi : f[i].hi;
		s->delta[d] = delta;
		s->last[d] = page;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

__attribute__((visibility("default"))) const struct uhmm_policy_ops uhmm_policy = {
	.version = UHMM_POLICY_VERSION,
	.size = sizeof(struct uhmm_policy_ops),
	.name = "stride.so",
	.init = stride_init,
	.exit = stride_exit,
	.dev_faults = stride_dev_faults,
};
