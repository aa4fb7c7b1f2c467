#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <uhmm/uhmm.h>
#include <uhmm/mirror.h>
int main(void)
{
	uhmm_ctx *ctx;
	if (uhmm_ctx_create(NULL, &ctx)) return 1;
	char *p;
	if (uhmm_alloc(ctx, 62 * 4096, (void **)&p)) return 1;
	printf("mprotect %d\n", uhmm_mprotect(ctx, p + 32 * 4096, 13 * 4096, PROT_READ));
	fflush(stdout);
	memset(p + 13 * 4096, 1, 4096);
	printf("wrote\n");
	return uhmm_ctx_destroy(ctx);
}
