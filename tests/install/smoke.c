/* Builds against an installed uhmm (pkg-config or find_package). */
#include <stdio.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

int main(void)
{
	uhmm_ctx *ctx;
	int err = uhmm_ctx_create(NULL, &ctx);
	if (err) {
		fprintf(stderr, "smoke: %s\n", uhmm_strerror(err));
		return 1;
	}
	uhmm_device *dev;
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4u << 20;
	void *p;
	if (uhmm_simdev_create(ctx, &o, &dev) || uhmm_alloc(ctx, 1 << 20, &p) ||
	    uhmm_migrate(ctx, p, 1 << 20, dev, 0))
		return 1;
	((char *)p)[0] = 1;
	printf("smoke: ok\n");
	return uhmm_ctx_destroy(ctx);
}
