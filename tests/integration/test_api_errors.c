/* SPDX-License-Identifier: MIT */
/*
 * Bad arguments to every public call: each must fail with the error the
 * headers document, and change nothing.  Every test sets up a context, a
 * simdev and a managed buffer whose data lives on the device, makes its bad
 * calls, then checks that the buffer's pages are still on the device with
 * the same sequence numbers, that the counters and the device's free memory
 * did not move, and that the data reads back intact.
 *
 * Bad calls are checked table-style: every mismatch is printed with the
 * call's text, and the test fails at the end if there was any.
 */
#define _GNU_SOURCE
#include "testlib.h"

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG ((size_t)UHMM_PAGE_SIZE)
#define MiB ((size_t)1 << 20)
#define SEED 0x5eed1234ull

/* ---- expectations --------------------------------------------------------- */

static int nbad;

static void expect_err(long got, int want, const char *call, int line)
{
	if (got == want)
		return;
	nbad++;
	fprintf(stderr, "  line %d: %s = %ld (%s), expected %d (%s)\n", line, call,
		got, got < 0 ? strerror((int)-got) : "no error", want,
		want < 0 ? strerror(-want) : "no error");
}
#define EXPECT(want, call) expect_err((long)(call), (want), #call, __LINE__)

static void expect_no_failures(void)
{
	int n = nbad;
	nbad = 0;
	if (n)
		fail_msg("%d call(s) returned the wrong code (listed above)", n);
}

/* ---- fixture: a context, a simdev, a buffer of data on the device ---------- */

struct fx {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *buf;
	size_t len;
	uint32_t *seq;
	struct uhmm_stats st;
	struct uhmm_simdev_meminfo mi;
};

static uhmm_device *new_simdev(uhmm_ctx *ctx)
{
	struct uhmm_simdev_opts o;
	uhmm_device *dev = NULL;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	assert_non_null(dev);
	return dev;
}

/* Records what must not change. */
static void fx_snapshot(struct fx *f)
{
	for (size_t i = 0; i < f->len / PG; i++) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(f->ctx, f->buf + i * PG, &pi));
		assert_int_equal(pi.where, UHMM_WHERE_DEVICE);
		assert_ptr_equal(pi.device, f->dev);
		f->seq[i] = pi.seq;
	}
	ASSERT_OK(uhmm_stats_get(f->ctx, &f->st));
	ASSERT_OK(uhmm_simdev_meminfo(f->dev, &f->mi));
}

static void fx_setup(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	nbad = 0;
	ASSERT_OK(uhmm_ctx_create(NULL, &f->ctx));
	f->dev = new_simdev(f->ctx);
	f->len = MiB;
	ASSERT_OK(uhmm_alloc(f->ctx, f->len, (void **)&f->buf));
	uhmm_test_fill(f->buf, f->len, SEED);
	ASSERT_OK(uhmm_migrate(f->ctx, f->buf, f->len, f->dev, 0));
	f->seq = calloc(f->len / PG, sizeof(*f->seq));
	assert_non_null(f->seq);
	fx_snapshot(f);
}

/* Nothing the bad calls did may show: same places, counters, memory, data. */
static void fx_verify(struct fx *f)
{
	for (size_t i = 0; i < f->len / PG; i++) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(f->ctx, f->buf + i * PG, &pi));
		if (pi.where != UHMM_WHERE_DEVICE || pi.device != f->dev ||
		    pi.seq != f->seq[i])
			fail_msg("page %zu moved: where %u seq %u (was %u)", i, pi.where,
				 pi.seq, f->seq[i]);
	}
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(f->ctx, &st));
	assert_true(st.migrated_to_device_pages == f->st.migrated_to_device_pages);
	assert_true(st.migrated_to_system_pages == f->st.migrated_to_system_pages);
	assert_true(st.zero_filled_pages == f->st.zero_filled_pages);
	assert_true(st.cpu_faults_device == f->st.cpu_faults_device);
	assert_true(st.device_pages_freed_by_events == f->st.device_pages_freed_by_events);
	assert_true(st.managed_pages == f->st.managed_pages);
	struct uhmm_simdev_meminfo mi;
	ASSERT_OK(uhmm_simdev_meminfo(f->dev, &mi));
	assert_true(mi.free_pages == f->mi.free_pages);
	assert_true(mi.total_pages == f->mi.total_pages);
	/* Reading brings the data home through CPU faults. */
	size_t bad = uhmm_test_check(f->buf, f->len, SEED);
	if (bad != (size_t)-1)
		fail_msg("data lost at offset %zu", bad);
}

static void fx_teardown(struct fx *f)
{
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
	munmap(f->buf, f->len); /* uhmm_alloc memory outlives the context */
	free(f->seq);
	f->ctx = NULL;
}

/* A backend whose ops are never called (attach itself calls none). */
static long stub_alloc(void *priv, unsigned order, size_t n, uint64_t *dpfn)
{
	(void)priv, (void)order, (void)n, (void)dpfn;
	return 0;
}
static void stub_free(void *priv, unsigned order, size_t n, const uint64_t *dpfn)
{
	(void)priv, (void)order, (void)n, (void)dpfn;
}
static int stub_submit(void *priv, struct uhmm_copy *c, size_t n, uhmm_fence_t *f)
{
	(void)priv, (void)c, (void)n, (void)f;
	return -EIO;
}
static int stub_wait(void *priv, uhmm_fence_t f)
{
	(void)priv, (void)f;
	return -EIO;
}
static const struct uhmm_device_ops stub_ops = {
	.alloc = stub_alloc,
	.free = stub_free,
	.copy_submit = stub_submit,
	.copy_wait = stub_wait,
};

/* Low in the address space, where the kernel's top-down placement of other
 * mappings never goes while there is room above: holes the tests punch in
 * these mappings stay holes (see unmapped_addr). */
static char *map_anon(size_t len, int prot)
{
	for (uintptr_t a = 0x60000000; a < 0x70000000; a += 16 << 20) {
		char *p = mmap((void *)a, len, prot,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p == (char *)a)
			return p;
		if (p != MAP_FAILED)
			munmap(p, len);
	}
	char *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

/* A page-aligned address that is surely not mapped. */
/*
 * An address range nothing maps, and that nothing will map behind the
 * test's back: low in the address space, where the kernel's top-down
 * placement never goes while there is room above.  (A hole the test itself
 * punched by munmap was once filled, under ASan, by another thread's
 * mapping between the munmap and the call under test.)
 */
static char *unmapped_addr(size_t len)
{
	unsigned char v;
	for (uintptr_t a = 0x20000000; a < 0x60000000; a += 16 << 20) {
		bool free = true;
		for (size_t off = 0; off < len && free; off += PG)
			free = mincore((void *)(a + off), PG, &v) == -1 && errno == ENOMEM;
		if (free)
			return (char *)a;
	}
	fail_msg("no unmapped range of %zu bytes below 1.5 GiB", len);
	return NULL;
}

/* ---- handles ----------------------------------------------------------------- */

static void null_ctx_is_ebadf(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	struct uhmm_ctx_info ci;
	struct uhmm_stats st;
	struct uhmm_page_info pi;
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 4 * MiB;
	void *p = &f;
	uhmm_device *d = (uhmm_device *)&f;
	char *r = map_anon(4 * PG, PROT_READ | PROT_WRITE);

	EXPECT(-EBADF, uhmm_ctx_destroy(NULL));
	EXPECT(-EBADF, uhmm_ctx_info(NULL, &ci));
	EXPECT(-EBADF, uhmm_alloc(NULL, PG, &p));
	EXPECT(-EBADF, uhmm_free(NULL, f.buf));
	EXPECT(-EBADF, uhmm_register(NULL, r, 4 * PG));
	EXPECT(-EBADF, uhmm_unregister(NULL, r, 4 * PG));
	EXPECT(-EBADF, uhmm_migrate(NULL, f.buf, f.len, NULL, 0));
	EXPECT(-EBADF, uhmm_migrate(NULL, f.buf, f.len, f.dev, 0));
	EXPECT(-EBADF, uhmm_page_query(NULL, f.buf, &pi));
	EXPECT(-EBADF, uhmm_device_attach(NULL, &stub_ops, NULL, "x", &d));
	EXPECT(-EBADF, uhmm_device_detach(NULL));
	EXPECT(-EBADF, uhmm_stats_get(NULL, &st));
	EXPECT(-EBADF, uhmm_stats_print(NULL, stderr));
	/* simdev.h: "errors of uhmm_device_attach()", i.e. -EBADF. */
	EXPECT(-EBADF, uhmm_simdev_create(NULL, &so, &d));
	assert_ptr_equal(p, &f);
	assert_ptr_equal(d, (uhmm_device *)&f);

	munmap(r, 4 * PG);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void destroyed_ctx_is_ebadf(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	/* A second context with its own range and device, then destroyed. */
	uhmm_ctx *dead;
	ASSERT_OK(uhmm_ctx_create(NULL, &dead));
	uhmm_device *ddev = new_simdev(dead);
	char *dbuf;
	ASSERT_OK(uhmm_alloc(dead, MiB, (void **)&dbuf));
	char *r = map_anon(4 * PG, PROT_READ | PROT_WRITE);
	ASSERT_OK(uhmm_register(dead, r, 4 * PG));
	ASSERT_OK(uhmm_ctx_destroy(dead));

	struct uhmm_ctx_info ci;
	struct uhmm_stats st;
	struct uhmm_page_info pi;
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 4 * MiB;
	void *p = &f;
	uhmm_device *d = (uhmm_device *)&f;

	EXPECT(-EBADF, uhmm_ctx_info(dead, &ci));
	EXPECT(-EBADF, uhmm_alloc(dead, PG, &p));
	EXPECT(-EBADF, uhmm_free(dead, dbuf));
	EXPECT(-EBADF, uhmm_register(dead, r, 4 * PG));
	EXPECT(-EBADF, uhmm_unregister(dead, r, 4 * PG));
	EXPECT(-EBADF, uhmm_migrate(dead, dbuf, MiB, NULL, 0));
	EXPECT(-EBADF, uhmm_page_query(dead, dbuf, &pi));
	EXPECT(-EBADF, uhmm_device_attach(dead, &stub_ops, NULL, "x", &d));
	EXPECT(-EBADF, uhmm_stats_get(dead, &st));
	EXPECT(-EBADF, uhmm_simdev_create(dead, &so, &d));
	/* The dead context's device went with it. */
	EXPECT(-EBADF, uhmm_device_detach(ddev));
	EXPECT(-EBADF, uhmm_migrate(f.ctx, f.buf, f.len, ddev, 0));
	EXPECT(-EBADF, uhmm_ctx_destroy(dead));
	assert_ptr_equal(p, &f);
	assert_ptr_equal(d, (uhmm_device *)&f);

	/* Its memory is ordinary memory now, and free for f.ctx to manage. */
	ASSERT_OK(uhmm_register(f.ctx, r, 4 * PG));
	ASSERT_OK(uhmm_unregister(f.ctx, r, 4 * PG));
	munmap(r, 4 * PG);
	munmap(dbuf, MiB);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/* uhmm_stats_print() on a destroyed context.  Kept apart: it is the one
 * call whose handle check is easy to forget ("printing works on a dying
 * context too"), and a use after free must not hide the other checks. */
static void destroyed_ctx_stats_print_is_ebadf(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	uhmm_ctx *dead;
	ASSERT_OK(uhmm_ctx_create(NULL, &dead));
	ASSERT_OK(uhmm_ctx_destroy(dead));
	FILE *devnull = fopen("/dev/null", "w");
	assert_non_null(devnull);
	EXPECT(-EBADF, uhmm_stats_print(dead, devnull));
	fclose(devnull);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void destroy_twice_is_ebadf(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	(void)new_simdev(ctx);
	assert_int_equal(uhmm_ctx_destroy(ctx), 0);
	assert_int_equal(uhmm_ctx_destroy(ctx), -EBADF);
	assert_int_equal(uhmm_ctx_destroy(NULL), -EBADF);
}

/* Calls on a simdev handle after uhmm_device_detach().  Kept apart for the
 * same reason as destroyed_ctx_stats_print_is_ebadf. */
static void detached_simdev_calls_fail(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	uhmm_device *gone = new_simdev(f.ctx);
	ASSERT_OK(uhmm_device_detach(gone));
	struct uhmm_simdev_meminfo mi;
	memset(&mi, 0x5a, sizeof(mi));
	long r = uhmm_simdev_meminfo(gone, &mi);
	if (r != -EBADF && r != -EINVAL) {
		nbad++;
		fprintf(stderr, "  uhmm_simdev_meminfo(detached) = %ld\n", r);
	}
	r = uhmm_simdev_inject(gone, UHMM_SIMDEV_FAIL_COPY, 0, 1);
	if (r != -EBADF && r != -EINVAL) {
		nbad++;
		fprintf(stderr, "  uhmm_simdev_inject(detached) = %ld\n", r);
	}
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void null_out_pointers_are_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 4 * MiB;

	EXPECT(-EINVAL, uhmm_ctx_create(NULL, NULL));
	EXPECT(-EINVAL, uhmm_ctx_info(f.ctx, NULL));
	EXPECT(-EINVAL, uhmm_alloc(f.ctx, PG, NULL));
	EXPECT(-EINVAL, uhmm_page_query(f.ctx, f.buf, NULL));
	EXPECT(-EINVAL, uhmm_stats_get(f.ctx, NULL));
	EXPECT(-EINVAL, uhmm_device_attach(f.ctx, &stub_ops, NULL, "x", NULL));
	EXPECT(-EINVAL, uhmm_simdev_create(f.ctx, &so, NULL));
	EXPECT(-EINVAL, uhmm_simdev_meminfo(f.dev, NULL));
	EXPECT(-EINVAL, uhmm_simdev_meminfo(NULL, NULL));

	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/* ---- alloc / free ------------------------------------------------------------ */

static void alloc_zero_len_is_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	void *p = &f;
	EXPECT(-EINVAL, uhmm_alloc(f.ctx, 0, &p));
	assert_ptr_equal(p, &f);
	long r = uhmm_alloc(f.ctx, SIZE_MAX, &p);
	if (r != -EINVAL && r != -ENOMEM) {
		nbad++;
		fprintf(stderr, "  uhmm_alloc(SIZE_MAX) = %ld\n", r);
	}
	assert_ptr_equal(p, &f);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void free_bad_addresses_are_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	char *r = map_anon(16 * PG, PROT_READ | PROT_WRITE);
	ASSERT_OK(uhmm_register(f.ctx, r, 16 * PG));
	char *a;
	ASSERT_OK(uhmm_alloc(f.ctx, 4 * PG, (void **)&a));
	fx_snapshot(&f);

	EXPECT(-EINVAL, uhmm_free(f.ctx, NULL));
	EXPECT(-EINVAL, uhmm_free(f.ctx, f.buf + PG));     /* not the start */
	EXPECT(-EINVAL, uhmm_free(f.ctx, f.buf + 1));      /* not even aligned */
	EXPECT(-EINVAL, uhmm_free(f.ctx, f.buf + f.len / 2));
	EXPECT(-EINVAL, uhmm_free(f.ctx, r));              /* registered */
	EXPECT(-EINVAL, uhmm_free(f.ctx, r + PG));
	EXPECT(-EINVAL, uhmm_free(f.ctx, unmapped_addr(PG)));
	EXPECT(-EINVAL, uhmm_free(f.ctx, &f));             /* the stack */
	/* Twice. */
	EXPECT(0, uhmm_free(f.ctx, a));
	EXPECT(-EINVAL, uhmm_free(f.ctx, a));

	/* The registered range is still managed and intact. */
	struct uhmm_page_info pi;
	EXPECT(0, uhmm_page_query(f.ctx, r, &pi));
	f.st.managed_pages -= 4; /* the alloc that was freed */
	EXPECT(0, uhmm_unregister(f.ctx, r, 16 * PG));
	f.st.managed_pages -= 16;
	munmap(r, 16 * PG);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/* ---- register / unregister ------------------------------------------------- */

static void register_bad_ranges_are_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	char *r = map_anon(16 * PG, PROT_READ | PROT_WRITE);
	char *top = (char *)(uintptr_t)(UINTPTR_MAX & ~(uintptr_t)(PG - 1));

	EXPECT(-EINVAL, uhmm_register(f.ctx, r + 1, 4 * PG));
	EXPECT(-EINVAL, uhmm_register(f.ctx, r + PG / 2, 4 * PG));
	EXPECT(-EINVAL, uhmm_register(f.ctx, r, 4 * PG + 1));
	EXPECT(-EINVAL, uhmm_register(f.ctx, r, PG - 1));
	EXPECT(-EINVAL, uhmm_register(f.ctx, r, 0));
	EXPECT(-EINVAL, uhmm_register(f.ctx, top, 2 * PG));            /* wraps */
	EXPECT(-EINVAL, uhmm_register(f.ctx, r, SIZE_MAX & ~(PG - 1))); /* wraps */

	/* Nothing of r became managed. */
	struct uhmm_page_info pi;
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, r, &pi));
	munmap(r, 16 * PG);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void register_unmapped_is_efault(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	/* Wholly unmapped. */
	EXPECT(-EFAULT, uhmm_register(f.ctx, unmapped_addr(8 * PG), 8 * PG));
	/* Pages 0..3 and 8..11 mapped; 4..7 a hole, 12..15 unmapped too. */
	char *r = map_anon(16 * PG, PROT_READ | PROT_WRITE);
	assert_int_equal(munmap(r + 4 * PG, 4 * PG), 0);
	assert_int_equal(munmap(r + 12 * PG, 4 * PG), 0);
	EXPECT(-EFAULT, uhmm_register(f.ctx, r, 12 * PG));        /* a hole inside */
	EXPECT(-EFAULT, uhmm_register(f.ctx, r + 8 * PG, 8 * PG)); /* past the end */
	EXPECT(-EFAULT, uhmm_register(f.ctx, r + 6 * PG, 4 * PG)); /* from a hole */
	EXPECT(-EFAULT, uhmm_register(f.ctx, r + 3 * PG, 2 * PG)); /* into a hole */

	/* Nothing of it became managed; its parts register fine. */
	struct uhmm_page_info pi;
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, r, &pi));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, r + 8 * PG, &pi));
	EXPECT(0, uhmm_register(f.ctx, r, 4 * PG));
	EXPECT(0, uhmm_register(f.ctx, r + 8 * PG, 4 * PG));
	EXPECT(0, uhmm_unregister(f.ctx, r, 4 * PG));
	EXPECT(0, uhmm_unregister(f.ctx, r + 8 * PG, 4 * PG));
	munmap(r, 4 * PG);
	munmap(r + 8 * PG, 4 * PG);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void register_unsupported_memory_is_eopnotsupp(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	const size_t len = 16 * PG;
	struct uhmm_page_info pi;

	/* Shared anonymous. */
	char *sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			-1, 0);
	assert_true(sh != MAP_FAILED);
	EXPECT(-EOPNOTSUPP, uhmm_register(f.ctx, sh, len));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, sh, &pi));

	/* File mappings, private and shared. */
	char path[] = "/tmp/uhmm-test-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	char *fp = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	char *fs = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(fp != MAP_FAILED && fs != MAP_FAILED);
	EXPECT(-EOPNOTSUPP, uhmm_register(f.ctx, fp, len));
	EXPECT(-EOPNOTSUPP, uhmm_register(f.ctx, fs, len));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, fp, &pi));

	/* No access at all (read-only memory is managed since issue 15). */
	char *ro = map_anon(len, PROT_READ);
	char *none = map_anon(len, PROT_NONE);
	EXPECT(0, uhmm_register(f.ctx, ro, len));
	EXPECT(0, uhmm_unregister(f.ctx, ro, len));
	EXPECT(-EOPNOTSUPP, uhmm_register(f.ctx, none, len));

	/* Good memory followed by inaccessible memory, in one call. */
	char *mix = map_anon(2 * len, PROT_READ | PROT_WRITE);
	assert_int_equal(mprotect(mix + len, len, PROT_NONE), 0);
	EXPECT(-EOPNOTSUPP, uhmm_register(f.ctx, mix, 2 * len));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, mix, &pi));
	EXPECT(0, uhmm_register(f.ctx, mix, len)); /* the good part alone is fine */
	EXPECT(0, uhmm_unregister(f.ctx, mix, len));

	munmap(sh, len);
	munmap(fp, len);
	munmap(fs, len);
	close(fd);
	munmap(ro, len);
	munmap(none, len);
	munmap(mix, 2 * len);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/*
 * Memory another context (or any userfaultfd of the process) manages: a
 * code of its own, -EADDRINUSE, with its own text, not -EBUSY's "page held
 * by the kernel".  The main thread's stack: -EOPNOTSUPP, as documented.
 */
static void register_other_contexts_memory_is_eaddrinuse(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	uhmm_ctx *other;
	ASSERT_OK(uhmm_ctx_create(NULL, &other));
	const size_t len = 8 * PG;
	char *p = map_anon(len, PROT_READ | PROT_WRITE);
	EXPECT(0, uhmm_register(other, p, len));
	EXPECT(-EADDRINUSE, uhmm_register(f.ctx, p, len));
	EXPECT(-EADDRINUSE, uhmm_register(f.ctx, p + PG, PG));
	/* Nothing half-registered: ours does not manage it. */
	struct uhmm_page_info pi;
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, p, &pi));
	EXPECT(0, uhmm_unregister(other, p, len));
	EXPECT(0, uhmm_register(f.ctx, p, len)); /* free now */
	EXPECT(0, uhmm_unregister(f.ctx, p, len));
	assert_string_not_equal(uhmm_strerror(-EADDRINUSE), uhmm_strerror(-EBUSY));
	assert_non_null(strstr(uhmm_strerror(-EADDRINUSE), "another"));
	ASSERT_OK(uhmm_ctx_destroy(other));
	munmap(p, len);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void register_main_stack_is_eopnotsupp(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	/* cmocka runs the test on the main thread: this is its [stack]. */
	volatile char here = 0;
	char *pg = (char *)((uintptr_t)&here & ~(PG - 1));
	EXPECT(-EOPNOTSUPP, uhmm_register(f.ctx, pg, PG));
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void register_hugetlb_is_eopnotsupp(void **state)
{
	(void)state;
	const size_t len = 2 * MiB;
	char *h = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (h == MAP_FAILED)
		TEST_SKIP("MAP_HUGETLB: %s (no huge pages reserved?)", strerror(errno));
	h[0] = 1;
	struct fx f;
	fx_setup(&f);
	EXPECT(-EOPNOTSUPP, uhmm_register(f.ctx, h, len));
	struct uhmm_page_info pi;
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, h, &pi));
	assert_int_equal(h[0], 1);
	munmap(h, len);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void register_overlap_is_eexist(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	char *r = map_anon(16 * PG, PROT_READ | PROT_WRITE);
	uhmm_test_fill(r, 16 * PG, 77);
	ASSERT_OK(uhmm_register(f.ctx, r + 4 * PG, 8 * PG)); /* pages 4..11 */
	fx_snapshot(&f);

	EXPECT(-EEXIST, uhmm_register(f.ctx, r + 4 * PG, 8 * PG));  /* same */
	EXPECT(-EEXIST, uhmm_register(f.ctx, r, 16 * PG));          /* covers it */
	EXPECT(-EEXIST, uhmm_register(f.ctx, r, 5 * PG));           /* head */
	EXPECT(-EEXIST, uhmm_register(f.ctx, r + 11 * PG, 5 * PG)); /* tail */
	EXPECT(-EEXIST, uhmm_register(f.ctx, r + 6 * PG, 2 * PG));  /* inside */
	/* uhmm_alloc memory is managed memory too. */
	EXPECT(-EEXIST, uhmm_register(f.ctx, f.buf, f.len));
	EXPECT(-EEXIST, uhmm_register(f.ctx, f.buf + PG, PG));

	/* The free neighbours were not taken either. */
	struct uhmm_page_info pi;
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, r, &pi));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, r + 12 * PG, &pi));
	EXPECT(0, uhmm_unregister(f.ctx, r + 4 * PG, 8 * PG));
	f.st.managed_pages -= 8;
	assert_true(uhmm_test_check(r, 16 * PG, 77) == (size_t)-1);
	munmap(r, 16 * PG);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void unregister_inexact_range_is_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	char *r = map_anon(32 * PG, PROT_READ | PROT_WRITE);
	char *p = r + 8 * PG;
	ASSERT_OK(uhmm_register(f.ctx, p, 16 * PG));
	uhmm_test_fill(p, 16 * PG, 99);
	ASSERT_OK(uhmm_migrate(f.ctx, p, 16 * PG, f.dev, 0));
	fx_snapshot(&f);

	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p, 8 * PG));          /* head */
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p + PG, 15 * PG));    /* tail */
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p + PG, 4 * PG));     /* inside */
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p, 17 * PG));         /* longer */
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p - PG, 17 * PG));    /* earlier */
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, r, 32 * PG));         /* around */
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p + 1, 16 * PG));     /* unaligned */
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p, 16 * PG + 1));
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p, 0));
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, r, 8 * PG));          /* never */
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, f.buf, f.len));       /* allocated */

	/* Still registered, still on the device. */
	for (size_t i = 0; i < 16; i++) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(f.ctx, p + i * PG, &pi));
		assert_int_equal(pi.where, UHMM_WHERE_DEVICE);
	}
	EXPECT(0, uhmm_unregister(f.ctx, p, 16 * PG));
	EXPECT(-EINVAL, uhmm_unregister(f.ctx, p, 16 * PG));         /* twice */
	assert_true(uhmm_test_check(p, 16 * PG, 99) == (size_t)-1);
	/* Unregister brought 16 pages home: account for it. */
	f.st.migrated_to_system_pages += 16;
	f.st.managed_pages -= 16;
	f.mi.free_pages += 16;
	munmap(r, 32 * PG);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/* ---- migrate ---------------------------------------------------------------- */

static void migrate_bad_args_are_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	char *top = (char *)(uintptr_t)(UINTPTR_MAX & ~(uintptr_t)(PG - 1));
	uhmm_device *dsts[2] = { f.dev, NULL };

	for (int k = 0; k < 2; k++) {
		uhmm_device *d = dsts[k];
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, f.buf + 1, PG, d, 0));
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, f.buf + PG / 2, 4 * PG, d, 0));
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, f.buf, PG + 1, d, 0));
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, f.buf, PG - 1, d, 0));
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, f.buf, 0, d, 0));
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, f.buf, f.len, d, 1));
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, f.buf, f.len, d, 0x80000000u));
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, top, 2 * PG, d, 0));
		EXPECT(-EINVAL, uhmm_migrate(f.ctx, f.buf, SIZE_MAX & ~(PG - 1), d, 0));
	}
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void expect_on_cpu(struct fx *f, char *p, size_t len, const uint32_t *seq)
{
	for (size_t i = 0; i < len / PG; i++) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(f->ctx, p + i * PG, &pi));
		if (pi.where != UHMM_WHERE_CPU || pi.seq != seq[i])
			fail_msg("page %zu of %p moved (where %u, seq %u, was %u)", i,
				 (void *)p, pi.where, pi.seq, seq[i]);
	}
}

static void migrate_partly_unmanaged_is_efault_and_moves_nothing(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	/* 48 pages: managed 16..31, unmanaged (but mapped) around. */
	char *r = map_anon(48 * PG, PROT_READ | PROT_WRITE);
	char *m = r + 16 * PG;
	ASSERT_OK(uhmm_register(f.ctx, m, 16 * PG));
	uhmm_test_fill(r, 48 * PG, 4242);
	uint32_t seq[16];
	for (size_t i = 0; i < 16; i++) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(f.ctx, m + i * PG, &pi));
		assert_int_equal(pi.where, UHMM_WHERE_CPU);
		seq[i] = pi.seq;
	}
	fx_snapshot(&f);

	EXPECT(-EFAULT, uhmm_migrate(f.ctx, m, 32 * PG, f.dev, 0));      /* tail out */
	EXPECT(-EFAULT, uhmm_migrate(f.ctx, r, 32 * PG, f.dev, 0));      /* head out */
	EXPECT(-EFAULT, uhmm_migrate(f.ctx, r, 48 * PG, f.dev, 0));      /* both */
	EXPECT(-EFAULT, uhmm_migrate(f.ctx, m + 15 * PG, 2 * PG, f.dev, 0));
	EXPECT(-EFAULT, uhmm_migrate(f.ctx, r, 16 * PG, f.dev, 0));      /* none */
	/* The device-resident buffer, running past its end, going home. */
	EXPECT(-EFAULT, uhmm_migrate(f.ctx, f.buf, f.len + PG, NULL, 0));
	EXPECT(-EFAULT, uhmm_migrate(f.ctx, f.buf - PG, 2 * PG, NULL, 0));
	EXPECT(-EFAULT, uhmm_migrate(f.ctx, unmapped_addr(PG), PG, NULL, 0));

	expect_on_cpu(&f, m, 16 * PG, seq);
	fx_verify(&f); /* f.buf still entirely on the device, nothing allocated */
	assert_true(uhmm_test_check(r, 48 * PG, 4242) == (size_t)-1);
	EXPECT(0, uhmm_unregister(f.ctx, m, 16 * PG));
	munmap(r, 48 * PG);
	fx_teardown(&f);
	expect_no_failures();
}

static void migrate_to_foreign_device_is_ebadf(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	uhmm_ctx *other;
	ASSERT_OK(uhmm_ctx_create(NULL, &other));
	uhmm_device *odev = new_simdev(other);
	char *obuf;
	ASSERT_OK(uhmm_alloc(other, 16 * PG, (void **)&obuf));
	uhmm_test_fill(obuf, 16 * PG, 5);
	struct uhmm_simdev_meminfo omi, omi2;
	ASSERT_OK(uhmm_simdev_meminfo(odev, &omi));

	EXPECT(-EBADF, uhmm_migrate(f.ctx, f.buf, f.len, odev, 0));
	EXPECT(-EBADF, uhmm_migrate(other, obuf, 16 * PG, f.dev, 0));
	/* A pointer that was never a device. */
	EXPECT(-EBADF, uhmm_migrate(f.ctx, f.buf, f.len, (uhmm_device *)&f, 0));

	ASSERT_OK(uhmm_simdev_meminfo(odev, &omi2));
	assert_true(omi.free_pages == omi2.free_pages);
	struct uhmm_page_info pi;
	ASSERT_OK(uhmm_page_query(other, obuf, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_CPU);
	assert_true(uhmm_test_check(obuf, 16 * PG, 5) == (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(other));
	munmap(obuf, 16 * PG);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void migrate_to_detached_device_is_ebadf(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	uhmm_device *gone = new_simdev(f.ctx);
	ASSERT_OK(uhmm_device_detach(gone));
	EXPECT(-EBADF, uhmm_migrate(f.ctx, f.buf, f.len, gone, 0));
	EXPECT(-EBADF, uhmm_device_detach(gone));
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/* ---- page query ------------------------------------------------------------- */

static void page_query_errors(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	struct uhmm_page_info pi;
	memset(&pi, 0x5a, sizeof(pi));
	int local;
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, &local, &pi));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, NULL, &pi));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, f.buf + f.len, &pi));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, f.buf - 1, &pi));
	EXPECT(-EFAULT, uhmm_page_query(f.ctx, unmapped_addr(PG), &pi));
	EXPECT(-EINVAL, uhmm_page_query(f.ctx, f.buf, NULL));
	/* Any byte of a managed page answers for the page. */
	EXPECT(0, uhmm_page_query(f.ctx, f.buf + f.len - 1, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_DEVICE);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/* ---- options ---------------------------------------------------------------- */

static void ctx_opts_bad_values_are_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	/* The environment wins over the struct: keep it out of the way. */
	unsetenv("UHMM_FAULT_AROUND");
	unsetenv("UHMM_ZERO_AROUND");
	unsetenv("UHMM_POOL_PAGES");
	unsetenv("UHMM_STATS");
	struct uhmm_ctx_opts o;
	uhmm_ctx *c = (uhmm_ctx *)&f;

#define BAD(field, value)                                                     \
	do {                                                                  \
		uhmm_ctx_opts_init(&o);                                       \
		o.field = value;                                              \
		EXPECT(-EINVAL, uhmm_ctx_create(&o, &c));                     \
		assert_ptr_equal(c, (uhmm_ctx *)&f);                          \
	} while (0)
	BAD(fault_around, 0);
	BAD(fault_around, 513);
	BAD(fault_around, 1000);
	BAD(zero_around, 0);
	BAD(zero_around, 513);
	BAD(size, sizeof(o) - 1);
	BAD(size, 0);
	BAD(flags, UHMM_CTX_REQUIRE_KERNEL_FAULTS | UHMM_CTX_USER_MODE_ONLY);
	BAD(flags, 1u << 31);
#undef BAD

	/* The bounds themselves are fine. */
	uhmm_ctx_opts_init(&o);
	o.fault_around = 1;
	o.zero_around = 512;
	EXPECT(0, uhmm_ctx_create(&o, &c));
	if (c != (uhmm_ctx *)&f) {
		struct uhmm_ctx_info ci;
		EXPECT(0, uhmm_ctx_info(c, &ci));
		assert_int_equal(ci.fault_around, 1);
		assert_int_equal(ci.zero_around, 512);
		EXPECT(0, uhmm_ctx_destroy(c));
	}
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void simdev_bad_opts_are_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	struct uhmm_simdev_opts o;
	uhmm_device *d = (uhmm_device *)&f;

#define BAD(field, value)                                                     \
	do {                                                                  \
		uhmm_simdev_opts_init(&o);                                    \
		o.mem_bytes = 4 * MiB;                                        \
		o.field = value;                                              \
		EXPECT(-EINVAL, uhmm_simdev_create(f.ctx, &o, &d));           \
		assert_ptr_equal(d, (uhmm_device *)&f);                       \
	} while (0)
	BAD(mem_bytes, 0);
	BAD(mem_bytes, MiB);
	BAD(mem_bytes, 3 * MiB);
	BAD(mem_bytes, 2 * MiB + PG);
	BAD(copy_threads, 0);
	BAD(copy_threads, 9);
	BAD(bandwidth_gbps, -1.0);
	BAD(bandwidth_gbps, NAN);
	BAD(size, sizeof(o) - 1);
#undef BAD
	/* A failed create attached nothing: the device table is as it was, and
	 * migrations still go to f.dev only. */
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

static void device_attach_null_ops_is_einval(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	uhmm_device *d = (uhmm_device *)&f;
	EXPECT(-EINVAL, uhmm_device_attach(f.ctx, NULL, NULL, "x", &d));
	struct uhmm_device_ops partial = stub_ops;
	partial.alloc = NULL;
	EXPECT(-EINVAL, uhmm_device_attach(f.ctx, &partial, NULL, "x", &d));
	partial = stub_ops;
	partial.copy_wait = NULL;
	EXPECT(-EINVAL, uhmm_device_attach(f.ctx, &partial, NULL, "x", &d));
	assert_ptr_equal(d, (uhmm_device *)&f);
	/* A complete table attaches (and detaches: it holds no pages). */
	EXPECT(0, uhmm_device_attach(f.ctx, &stub_ops, NULL, NULL, &d));
	if (d != (uhmm_device *)&f) {
		assert_ptr_equal(uhmm_device_ops_of(d), &stub_ops);
		assert_non_null(uhmm_device_name(d));
		EXPECT(0, uhmm_device_detach(d));
	}
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/* ---- fork -------------------------------------------------------------------- */

enum {
	CHILD_MIGRATE_DEV = 1 << 0,
	CHILD_MIGRATE_SYS = 1 << 1,
	CHILD_ALLOC = 1 << 2,
	CHILD_QUERY = 1 << 3,
	CHILD_STATS = 1 << 4,
	CHILD_REGISTER = 1 << 5,
	CHILD_DESTROY = 1 << 6,
	CHILD_DATA = 1 << 7,
};

static void fork_child_calls_are_echild(void **state)
{
	(void)state;
	struct fx f;
	fx_setup(&f);
	char *r = map_anon(4 * PG, PROT_READ | PROT_WRITE);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int bad = 0;
		void *p = NULL;
		struct uhmm_page_info pi;
		struct uhmm_stats st;
		if (uhmm_migrate(f.ctx, f.buf, f.len, f.dev, 0) != -ECHILD)
			bad |= CHILD_MIGRATE_DEV;
		if (uhmm_migrate(f.ctx, f.buf, f.len, NULL, 0) != -ECHILD)
			bad |= CHILD_MIGRATE_SYS;
		if (uhmm_alloc(f.ctx, PG, &p) != -ECHILD || p)
			bad |= CHILD_ALLOC;
		if (uhmm_page_query(f.ctx, f.buf, &pi) != -ECHILD)
			bad |= CHILD_QUERY;
		if (uhmm_stats_get(f.ctx, &st) != -ECHILD)
			bad |= CHILD_STATS;
		if (uhmm_register(f.ctx, r, 4 * PG) != -ECHILD)
			bad |= CHILD_REGISTER;
		if (uhmm_ctx_destroy(f.ctx) != -ECHILD)
			bad |= CHILD_DESTROY;
		/* The inherited memory is ordinary memory holding the data. */
		if (uhmm_test_check(f.buf, f.len, SEED) != (size_t)-1)
			bad |= CHILD_DATA;
		_exit(bad);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status))
		fail_msg("child: calls on the parent's context did not return -ECHILD "
			 "(mask %#x: 1 migrate-dev, 2 migrate-sys, 4 alloc, 8 query, "
			 "16 stats, 32 register, 64 destroy, 128 data)",
			 WEXITSTATUS(status));

	/* The parent's context works as before.  (fork brought the device
	 * pages home, so check the data and migrate again.) */
	assert_true(uhmm_test_check(f.buf, f.len, SEED) == (size_t)-1);
	ASSERT_OK(uhmm_migrate(f.ctx, f.buf, f.len, f.dev, 0));
	ASSERT_OK(uhmm_register(f.ctx, r, 4 * PG));
	ASSERT_OK(uhmm_unregister(f.ctx, r, 4 * PG));
	fx_snapshot(&f);
	munmap(r, 4 * PG);
	fx_verify(&f);
	fx_teardown(&f);
	expect_no_failures();
}

/* ---- strerror ----------------------------------------------------------------- */

static void strerror_names_every_code(void **state)
{
	(void)state;
	static const int codes[] = { 0,       -EBADF,  -ECHILD, -EINVAL,     -EFAULT,
				     -EEXIST, -ENOMEM, -EIO,    -EOPNOTSUPP, -ENOSYS,
				     -EPERM,  -EAGAIN, -EBUSY,  -ENOSPC,     -ENODEV,
				     -EADDRINUSE, -9999 };
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = uhmm_strerror(codes[i]);
		if (!s || !*s)
			fail_msg("uhmm_strerror(%d) is %s", codes[i], s ? "empty" : "NULL");
	}
	/* Distinct codes get distinct words for the ones uhmm documents. */
	assert_string_not_equal(uhmm_strerror(-EBADF), uhmm_strerror(-ECHILD));
	assert_string_not_equal(uhmm_strerror(-EFAULT), uhmm_strerror(-EINVAL));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(null_ctx_is_ebadf),
	cmocka_unit_test(destroyed_ctx_is_ebadf),
	cmocka_unit_test(destroyed_ctx_stats_print_is_ebadf),
	cmocka_unit_test(destroy_twice_is_ebadf),
	cmocka_unit_test(detached_simdev_calls_fail),
	cmocka_unit_test(null_out_pointers_are_einval),
	cmocka_unit_test(alloc_zero_len_is_einval),
	cmocka_unit_test(free_bad_addresses_are_einval),
	cmocka_unit_test(register_bad_ranges_are_einval),
	cmocka_unit_test(register_unmapped_is_efault),
	cmocka_unit_test(register_unsupported_memory_is_eopnotsupp),
	cmocka_unit_test(register_hugetlb_is_eopnotsupp),
	cmocka_unit_test(register_overlap_is_eexist),
	cmocka_unit_test(unregister_inexact_range_is_einval),
	cmocka_unit_test(migrate_bad_args_are_einval),
	cmocka_unit_test(migrate_partly_unmanaged_is_efault_and_moves_nothing),
	cmocka_unit_test(migrate_to_foreign_device_is_ebadf),
	cmocka_unit_test(migrate_to_detached_device_is_ebadf),
	cmocka_unit_test(page_query_errors),
	cmocka_unit_test(ctx_opts_bad_values_are_einval),
	cmocka_unit_test(simdev_bad_opts_are_einval),
	cmocka_unit_test(device_attach_null_ops_is_einval),
	cmocka_unit_test(fork_child_calls_are_echild),
	cmocka_unit_test(strerror_names_every_code),
	cmocka_unit_test(register_other_contexts_memory_is_eaddrinuse),
	cmocka_unit_test(register_main_stack_is_eopnotsupp),
};

UHMM_TEST_MAIN(tests)
