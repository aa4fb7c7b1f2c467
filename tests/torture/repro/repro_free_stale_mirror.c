/* SPDX-License-Identifier: MIT */
/*
 * Reproducer (found by uhmm-torture, seed 1, 30 s: bytes written by a
 * device kernel to one range appeared in another range and were missing
 * from their own): uhmm_free() (and uhmm_unregister()) free the device
 * pages of a range without invalidating the mirrors.  simdev keeps its
 * device page-table entries (and TLB entries) for the freed range, pointing
 * at device frames that go back to the allocator.  A later kernel on a new
 * range mapped at the same address hits those stale entries and reads and
 * writes the frames, which by then belong to other pages: a device
 * use-after-free that corrupts unrelated memory and loses the writes.
 *
 *  1. A = uhmm_alloc(2 MiB); a kernel writes it (migrate-on-touch: A's
 *     pages go to the device, simdev maps them DEV).
 *  2. uhmm_free(A): frames freed; no invalidation is sent.
 *  3. B: anonymous memory mmap'd at A's address, uhmm_register()ed.
 *  4. C = uhmm_alloc(2 MiB), filled with 0xcc, migrated to the device: it
 *     gets the freed frames.
 *  5. A kernel writes 0x11 to every word of B.
 *  Expected: B all 0x11, C all 0xcc.  Got: C overwritten, B zeros.
 *
 * Suspected cause: src/core/range.c uhmm_free() / drain_and_discard() (and
 * uhmm_unregister) publish the pages as empty system pages without
 * uhmm__invalidate(..., UHMM_INV_UNMAP, ...) - only the UNMAP event path
 * (src/core/service.c:479) invalidates, and uhmm_free unregisters first so
 * that no UNMAP event is raised.
 *
 *   cc -O2 -pthread -I include tests/torture/repro/repro_free_stale_mirror.c \
 *      build/libuhmm.a -o /tmp/repro3 && /tmp/repro3
 */
#define _GNU_SOURCE
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define LEN (2u << 20)

static void k_fill(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	uint64_t *p = arg;
	uhmm_simdev_st64(wi, &p[idx], 0x1111111111111111ull);
}

int main(void)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *a, *b, *c;
	if (uhmm_ctx_create(NULL, &ctx) || uhmm_simdev_create(ctx, NULL, &dev))
		return 2;
	if (uhmm_alloc(ctx, LEN, (void **)&a) ||
	    uhmm_simdev_launch(dev, k_fill, LEN / 8, a) || uhmm_free(ctx, a))
		return 2;
	b = mmap(a, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		 -1, 0);
	if (b != a || uhmm_register(ctx, b, LEN))
		return 3;
	if (uhmm_alloc(ctx, LEN, (void **)&c))
		return 2;
	memset(c, 0xcc, LEN);
	if (uhmm_migrate(ctx, c, LEN, dev, 0))
		return 2;
	int r = uhmm_simdev_launch(dev, k_fill, LEN / 8, b);
	size_t bad_b = 0, bad_c = 0;
	for (size_t i = 0; i < LEN; i++) {
		bad_b += (unsigned char)b[i] != 0x11;
		bad_c += (unsigned char)c[i] != 0xcc;
	}
	printf("launch %d; B: %zu of %u bytes wrong; C (never written): %zu bytes "
	       "changed\n", r, bad_b, LEN, bad_c);
	uhmm_ctx_destroy(ctx);
	return bad_b || bad_c ? 1 : 0;
}
