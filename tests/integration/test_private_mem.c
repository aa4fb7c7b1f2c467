/* SPDX-License-Identifier: MIT */
/*
 * uhmm's own memory is its own (issue 14; docs/ARCHITECTURE.md, "uhmm's own
 * memory"): uhmm allocates nothing from the application's malloc heap and
 * maps nothing where the application has holes.
 *
 * This program links with -Wl,--wrap=malloc,calloc,realloc,free,strdup,
 * posix_memalign,aligned_alloc: the wrappers count calls made while a
 * window is open.  (glibc's own internal allocations -- a new thread's
 * TLS vector -- do not go through the wrapped symbols: they are glibc's.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define MiB (1ul << 20)
#define PG 4096ul

/* ---- the allocator wrappers ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
char *__real_strdup(const char *s);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);
int __wrap_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);

static atomic_bool counting;
static atomic_uint calls;
/* Where the first counted call came from (printed when the test fails). */
static void *first_bt[24];
static atomic_int first_n;
static const char *first_what;

static void count(const char *what)
{
	if (!atomic_load(&counting))
		return;
	if (atomic_fetch_add(&calls, 1) == 0) {
		first_what = what;
		atomic_store(&first_n, backtrace(first_bt, 24));
	}
}

void *__wrap_malloc(size_t n)
{
	count("malloc");
	return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
	count("calloc");
	return __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
	count("realloc");
	return __real_realloc(p, n);
}

void __wrap_free(void *p)
{
	if (p)
		count("free");
	__real_free(p);
}

char *__wrap_strdup(const char *s)
{
	count("strdup");
	return __real_strdup(s);
}

int __wrap_posix_memalign(void **p, size_t a, size_t n)
{
	count("posix_memalign");
	return __real_posix_memalign(p, a, n);
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
	count("aligned_alloc");
	return __real_aligned_alloc(a, n);
}

static void report_first_call(void)
{
	if (!atomic_load(&calls))
		return;
	fprintf(stderr, "first allocation of the application's heap: %s, from\n", first_what);
	backtrace_symbols_fd(first_bt, atomic_load(&first_n), 2);
}

/* ---- helpers that do not allocate ---- */

/* The first error of a sequence of calls, and its line. */
struct seq {
	int err, line;
};
#define STEP(s, expr)                                                          \
	do {                                                                   \
		int r_ = (int)(expr);                                          \
		if (r_ < 0 && !(s)->err) {                                     \
			(s)->err = r_;                                         \
			(s)->line = __LINE__;                                  \
		}                                                              \
	} while (0)
#define ASSERT_SEQ(s)                                                          \
	do {                                                                   \
		if ((s).err)                                                   \
			fail_msg("line %d: %d (%s)", (s).line, (s).err,        \
				 uhmm_test_strerror((s).err));                 \
	} while (0)

static void fill_words(void *p, size_t len, uint64_t seed)
{
	uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		w[i] = seed * 0x9e3779b97f4a7c15ull + i;
}

static size_t bad_words(const void *p, size_t len, uint64_t seed)
{
	const uint64_t *w = p;
	size_t bad = 0;
	for (size_t i = 0; i < len / 8; i++)
		bad += w[i] != seed * 0x9e3779b97f4a7c15ull + i;
	return bad;
}

static void inv_cb(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	(void)n;
	(void)ev;
	atomic_fetch_add((atomic_uint *)priv, 1);
}

/* A kernel: word idx of the page idx += 1, on the device. */
static void bump_kernel(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	uint64_t *p = (uint64_t *)((char *)arg + idx * PG);
	uhmm_simdev_st64(wi, p, uhmm_simdev_ld64(wi, p) + 1);
}

/* The private memory gauge of a context (uhmm_stats.private_bytes). */
static uint64_t private_bytes(uhmm_ctx *ctx)
{
	struct uhmm_stats st;
	if (uhmm_stats_get(ctx, &st))
		return 0;
	return st.private_bytes;
}

/*
 * One life of a context, in the given mode: a simdev (lanes, copy
 * engine, fault thread), a uhmm_alloc range, a registered range, a
 * notifier, migrations both ways, CPU faults, a kernel launch, teardown.
 * No cmocka call inside (they may allocate): errors go to *s.
 */
static void one_life(struct seq *s, uint32_t flags, char *reg, size_t reg_len,
		     size_t *bad, uint64_t *priv, bool *skipped)
{
	const size_t len = 4 * MiB, npages = len / PG;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = flags;
	uhmm_ctx *ctx;
	int err = uhmm_ctx_create(&o, &ctx);
	if (err == -EOPNOTSUPP && flags) {
		*skipped = true;
		return;
	}
	STEP(s, err);
	if (err)
		return;
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64 * MiB;
	so.copy_threads = 2;
	uhmm_device *dev = NULL;
	STEP(s, uhmm_simdev_create(ctx, &so, &dev));
	char *p = NULL;
	STEP(s, uhmm_alloc(ctx, len, (void **)&p));
	atomic_uint invs = 0;
	struct uhmm_notifier *n = NULL;
	if (p && dev) {
		STEP(s, uhmm_notifier_insert(ctx, (uintptr_t)p, len, inv_cb, &invs, &n));
		fill_words(p, len, 1);                          /* CPU faults */
		STEP(s, uhmm_migrate(ctx, p, len, dev, 0));
		*bad += bad_words(p, len, 1);                   /* back by touch */
		STEP(s, uhmm_migrate(ctx, p, len, dev, 0));
		STEP(s, uhmm_migrate(ctx, p, len, NULL, 0));
		STEP(s, uhmm_migrate(ctx, p, len, dev, 0));
		STEP(s, uhmm_simdev_launch(dev, bump_kernel, npages, p));
		for (size_t i = 0; i < npages; i++)
			*bad += *(uint64_t *)(p + i * PG) != 1 * 0x9e3779b97f4a7c15ull + i * PG / 8 + 1;
	}
	fill_words(reg, reg_len, 2);
	STEP(s, uhmm_register(ctx, reg, reg_len));
	if (dev) {
		STEP(s, uhmm_migrate(ctx, reg, reg_len, dev, 0));
		STEP(s, uhmm_migrate(ctx, reg, reg_len, NULL, 0));
		STEP(s, uhmm_migrate(ctx, reg, reg_len, dev, 0));
	}
	*bad += bad_words(reg, reg_len, 2);
	*priv = private_bytes(ctx);
	if (n)
		STEP(s, uhmm_notifier_remove(n));
	if (!atomic_load(&invs))
		STEP(s, -ENOTRECOVERABLE); /* the notifier saw nothing */
	STEP(s, uhmm_unregister(ctx, reg, reg_len));
	if (p)
		STEP(s, uhmm_free(ctx, p));
	if (dev)
		STEP(s, uhmm_device_detach(dev));
	STEP(s, uhmm_ctx_destroy(ctx));
}

/*
 * Nothing of uhmm's comes from the application's malloc: create, use and
 * destroy contexts in the default and in SIGBUS mode with the wrappers
 * counting.
 */
static void no_allocation_from_the_application_heap(void **state)
{
	(void)state;
	const size_t reg_len = 2 * MiB;
	char *reg = mmap(NULL, reg_len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_ptr_not_equal(reg, MAP_FAILED);
	struct seq s1 = { 0 }, s2 = { 0 };
	size_t bad1 = 0, bad2 = 0;
	uint64_t priv1 = 0, priv2 = 0;
	bool skip1 = false, skip2 = false;

	atomic_store(&counting, true);
	one_life(&s1, 0, reg, reg_len, &bad1, &priv1, &skip1);
	one_life(&s2, UHMM_CTX_SIGBUS, reg, reg_len, &bad2, &priv2, &skip2);
	atomic_store(&counting, false);

	report_first_call();
	ASSERT_SEQ(s1);
	ASSERT_SEQ(s2);
	assert_int_equal(bad1, 0);
	assert_int_equal(bad2, 0);
	assert_int_equal(atomic_load(&calls), 0);
	/* The gauge saw the context's own memory (pool, buffers, stacks). */
	assert_true(priv1 >= 2 * MiB);
	if (skip2)
		fprintf(stderr, "(SIGBUS mode skipped: the kernel has no UFFD_FEATURE_SIGBUS)\n");
	else
		assert_true(priv2 >= 2 * MiB);
	munmap(reg, reg_len);
}

/* ---- a span of the application's heap, registered ---- */

/* The [heap] mapping (the main arena's brk heap): its start, or 0. */
static uintptr_t heap_start(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return 0;
	char line[512];
	uintptr_t at = 0;
	while (!at && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && strstr(line, "[heap]"))
			at = lo;
	}
	fclose(f);
	return at;
}

#define NBLK 64
#define BLK 1000

/*
 * Register the whole brk heap -- everything malloc handed out before and
 * after the context and its device were created, where a uhmm that used
 * malloc would keep its context, range table, notifier and simdev state --
 * migrate it to a simdev and back, touch it, check the data.
 */
static void register_the_whole_heap(void **state)
{
	(void)state;
	char *before[NBLK], *after[NBLK];
	for (int i = 0; i < NBLK; i++) {
		before[i] = malloc(BLK);
		assert_non_null(before[i]);
		fill_words(before[i], BLK, 100 + (uint64_t)i);
	}
	uintptr_t hs = heap_start();
	if (!hs || (uintptr_t)before[0] < hs || (uintptr_t)before[0] >= (uintptr_t)sbrk(0)) {
		for (int i = 0; i < NBLK; i++)
			free(before[i]);
		TEST_SKIP("malloc does not allocate from the brk heap here (a sanitizer's?)");
	}

	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64 * MiB;
	uhmm_device *dev;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	atomic_uint invs = 0;
	struct uhmm_notifier *n;
	for (int i = 0; i < NBLK; i++) {
		after[i] = malloc(BLK);
		assert_non_null(after[i]);
		fill_words(after[i], BLK, 200 + (uint64_t)i);
	}
	uintptr_t he = (uintptr_t)sbrk(0) & ~(PG - 1);
	assert_true(he > hs);
	size_t len = he - hs;
	ASSERT_OK(uhmm_notifier_insert(ctx, hs, len, inv_cb, &invs, &n));

	/* A bug here hangs (uhmm faulting on its own objects): end it. */
	alarm(20);
	struct seq s = { 0 };
	STEP(&s, uhmm_register(ctx, (void *)hs, len));
	STEP(&s, uhmm_migrate(ctx, (void *)hs, len, dev, 0));
	/* Touch (CPU faults) a few blocks while the rest is on the device. */
	size_t bad = bad_words(before[NBLK / 2], BLK, 100 + NBLK / 2) +
		     bad_words(after[NBLK / 2], BLK, 200 + NBLK / 2);
	STEP(&s, uhmm_migrate(ctx, (void *)hs, len, dev, 0));
	STEP(&s, uhmm_migrate(ctx, (void *)hs, len, NULL, 0));
	STEP(&s, uhmm_migrate(ctx, (void *)hs, len, dev, 0));
	for (int i = 0; i < NBLK; i++)
		bad += bad_words(before[i], BLK, 100 + (uint64_t)i) +
		       bad_words(after[i], BLK, 200 + (uint64_t)i);
	STEP(&s, uhmm_notifier_remove(n));
	STEP(&s, uhmm_unregister(ctx, (void *)hs, len));
	alarm(0);
	ASSERT_SEQ(s);
	assert_int_equal(bad, 0);
	assert_true(atomic_load(&invs) > 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	for (int i = 0; i < NBLK; i++) {
		free(before[i]);
		free(after[i]);
	}
}

/* ---- holes the application punched stay holes ---- */

static bool unmapped(const char *p, size_t len)
{
	unsigned char v;
	for (size_t o = 0; o < len; o += PG)
		if (mincore((void *)(p + o), PG, &v) != -1 || errno != ENOMEM)
			return false;
	return true;
}

/* Print the mappings of /proc/self/maps that meet [p, p + len). */
static void dump_maps(const char *p, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo < (uintptr_t)p + len &&
		    hi > (uintptr_t)p)
			fprintf(stderr, "  in the hole: %s", line);
	}
	fclose(f);
}

/*
 * The program punches holes (one page, 64 KiB, 4 MiB, 16 MiB) into its
 * own buffer, then creates a context, a simdev with lanes (threads), a
 * SIGBUS-mode context, migrates, launches a kernel: nothing of uhmm's
 * lands in a hole.
 */
static void holes_stay_unmapped(void **state)
{
	(void)state;
#ifdef __SANITIZE_THREAD__
	/* Seen: TSan's runtime maps 1 MiB of its own into such a hole when
	 * any thread is created, uhmm or not. */
	TEST_SKIP("TSan's runtime maps its own memory into holes");
#endif
	const size_t blen = 256 * MiB;
	char *buf = mmap(NULL, blen, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_ptr_not_equal(buf, MAP_FAILED);
	/* From the top down, the way the kernel looks for room. */
	static const struct { size_t off, len; } hole[] = {
		{ 240 * MiB, PG }, { 224 * MiB, 64 << 10 }, { 160 * MiB, 4 * MiB },
		{ 96 * MiB, 16 * MiB }, { 248 * MiB + 3 * PG, PG },
	};
	const size_t nh = sizeof(hole) / sizeof(hole[0]);
	for (size_t i = 0; i < nh; i++)
		assert_int_equal(munmap(buf + hole[i].off, hole[i].len), 0);

	char *reg = buf; /* the first 2 MiB: registered, migrated */
	const size_t reg_len = 2 * MiB;
	struct seq s = { 0 };
	size_t bad = 0;
	for (int mode = 0; mode < 2; mode++) {
		struct uhmm_ctx_opts o;
		uhmm_ctx_opts_init(&o);
		o.flags = mode ? UHMM_CTX_SIGBUS : 0;
		uhmm_ctx *ctx;
		int err = uhmm_ctx_create(&o, &ctx);
		if (mode && err == -EOPNOTSUPP)
			break;
		ASSERT_OK(err);
		struct uhmm_simdev_opts so;
		uhmm_simdev_opts_init(&so);
		so.mem_bytes = 64 * MiB;
		so.copy_threads = 2;
		uhmm_device *dev;
		ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
		fill_words(reg, reg_len, 3);
		STEP(&s, uhmm_register(ctx, reg, reg_len));
		STEP(&s, uhmm_migrate(ctx, reg, reg_len, dev, 0));
		bad += bad_words(reg, reg_len, 3);
		STEP(&s, uhmm_migrate(ctx, reg, reg_len, dev, 0));
		STEP(&s, uhmm_simdev_launch(dev, bump_kernel, reg_len / PG, reg));
		STEP(&s, uhmm_migrate(ctx, reg, reg_len, NULL, 0));
		for (size_t i = 0; i < nh; i++)
			if (!unmapped(buf + hole[i].off, hole[i].len) &&
			    (dump_maps(buf + hole[i].off, hole[i].len), true))
				fail_msg("mode %d: hole %zu (%zu bytes at +%zu MiB) was mapped by uhmm",
					 mode, i, hole[i].len, hole[i].off / MiB);
		STEP(&s, uhmm_unregister(ctx, reg, reg_len));
		STEP(&s, uhmm_device_detach(dev));
		ASSERT_OK(uhmm_ctx_destroy(ctx));
	}
	ASSERT_SEQ(s);
	assert_int_equal(bad, 0);
	for (size_t i = 0; i < nh; i++)
		assert_true(unmapped(buf + hole[i].off, hole[i].len));
	munmap(buf, blen);
}

/* uhmm's own memory cannot be registered: it would fault on itself. */
static void own_memory_is_refused(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_ctx_info info;
	ASSERT_OK(uhmm_ctx_info(ctx, &info));
	/* The context object itself lives in uhmm's memory. */
	uintptr_t c = (uintptr_t)ctx & ~(PG - 1);
	assert_int_equal(uhmm_register(ctx, (void *)c, PG), -EINVAL);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(no_allocation_from_the_application_heap),
		cmocka_unit_test(register_the_whole_heap),
		cmocka_unit_test(holes_stay_unmapped),
		cmocka_unit_test(own_memory_is_refused),
	};
	return uhmm_test_main(argc, argv, __FILE__, tests, sizeof(tests) / sizeof(tests[0]));
}
