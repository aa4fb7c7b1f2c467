/* SPDX-License-Identifier: MIT */
/*
 * Reproducer (found by uhmm-torture's mprotect operation): migrating a
 * range made read-only with uhmm_mprotect() to a device fails with -EFAULT
 * ("address range not managed or not mapped"), although the range is
 * managed and mapped.  The data stays intact (the failure is clean), but
 * the error is not the documented one and read-only memory can never move.
 *
 *   cc -O2 -pthread -I include tests/torture/repro/repro_migrate_readonly.c \
 *      build/libuhmm.a -o /tmp/repro2 && /tmp/repro2
 */
#define _GNU_SOURCE
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(void)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *p;
	size_t len = 16 * 4096;
	if (uhmm_ctx_create(NULL, &ctx) || uhmm_simdev_create(ctx, NULL, &dev) ||
	    uhmm_alloc(ctx, len, (void **)&p))
		return 2;
	memset(p, 0x5a, len);
	int r0 = uhmm_mprotect(ctx, p, len, PROT_READ);
	int r1 = uhmm_migrate(ctx, p, len, dev, 0);
	struct uhmm_page_info pi;
	int r2 = uhmm_page_query(ctx, p, &pi);
	printf("mprotect %d, migrate to device %d (%s), page_query %d where %u, data %s\n", r0,
	       r1, uhmm_strerror(r1), r2, pi.where, p[len - 1] == 0x5a ? "intact" : "LOST");
	uhmm_ctx_destroy(ctx);
	return r1 == 0 ? 0 : 1;
}
