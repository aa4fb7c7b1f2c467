/* READ right after munmap of device-resident pages: the kernel driver says
 * -EFAULT (munmap invalidates the mirror before it returns); uhmm's mirror
 * learns of the munmap asynchronously, so the READ may still succeed with
 * the old data of the unmapped pages. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <uhmm/dmirror.h>
int main(void)
{
	uhmm_dmirror *h;
	if (uhmm_dmirror_open(0, &h)) return 2;
	static char out[16 * 4096];
	int stale = 0, runs = 500;
	for (int i = 0; i < runs; i++) {
		char *p = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		memset(p, 0x5a, 16 * 4096);
		struct uhmm_dmirror_cmd c = { .addr = (uintptr_t)p, .ptr = (uintptr_t)out, .npages = 16 };
		{ int e = uhmm_dmirror_cmd(h, UHMM_DMIRROR_MIGRATE_TO_DEV, &c); if (e) { printf("migrate %d at %d\n", e, i); return 3; } }
		munmap(p + 8 * 4096, 2 * 4096);
		struct uhmm_dmirror_cmd r = { .addr = (uintptr_t)p, .ptr = (uintptr_t)out, .npages = 16 };
		if (uhmm_dmirror_cmd(h, UHMM_DMIRROR_READ, &r) == 0)
			stale++;
		/* (p stays mapped: a new mmap at the same address would meet the
		 * same lag, see the report) */
		munmap(p + 10 * 4096, 6 * 4096);
	}
	printf("READ over a just-unmapped hole succeeded %d times of %d\n", stale, runs);
	return stale ? 1 : 0;
}
