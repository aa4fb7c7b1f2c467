/* SPDX-License-Identifier: MIT */
/*
 * test_dmirror_api.c - the linkable C API of uhmm/dmirror.h (the same code
 * the preload library runs for ioctl()): argument errors, a round trip,
 * mmap and mprotect helpers, shutdown.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include <uhmm/dmirror.h>

#define PS 4096ul

static void open_rejects_bad_numbers(void **state)
{
	uhmm_dmirror *h;
	assert_int_equal(uhmm_dmirror_open(-1, &h), -EINVAL);
	assert_int_equal(uhmm_dmirror_open(4, &h), -EINVAL);
	assert_int_equal(uhmm_dmirror_open(0, NULL), -EINVAL);
	/* (2 and 3, the device-coherent ones, open: coherent simdevs.) */
	assert_int_equal(uhmm_dmirror_open(2, &h), 0);
	assert_int_equal(uhmm_dmirror_close(h), 0);
	assert_int_equal(uhmm_dmirror_close(NULL), -EBADF);
}

static void cmd_rejects_bad_arguments(void **state)
{
	uhmm_dmirror *h;
	struct uhmm_dmirror_cmd c = { 0 };
	assert_int_equal(uhmm_dmirror_cmd(NULL, UHMM_DMIRROR_READ, &c), -EBADF);
	assert_int_equal(uhmm_dmirror_open(0, &h), 0);
	assert_int_equal(uhmm_dmirror_cmd(h, UHMM_DMIRROR_READ, NULL), -EFAULT);
	assert_int_equal(uhmm_dmirror_cmd(h, 10, &c), -EINVAL);
	assert_int_equal(uhmm_dmirror_cmd(h, UHMM_DMIRROR_READ, &c), -EINVAL); /* npages 0 */
	assert_int_equal(uhmm_dmirror_close(h), 0);
}

static void migrate_round_trip(void **state)
{
	uhmm_dmirror *h;
	assert_int_equal(uhmm_dmirror_open(1, &h), 0);
	size_t n = 16, size = n * PS;
	char *buf = aligned_alloc(PS, size), *out = malloc(size);
	unsigned char snap[16];
	memset(buf, 0x3c, size);
	struct uhmm_dmirror_cmd c = { (uintptr_t)buf, (uintptr_t)out, n, 0, 0 };
	assert_int_equal(uhmm_dmirror_cmd(h, UHMM_DMIRROR_MIGRATE_TO_DEV, &c), 0);
	assert_int_equal(c.cpages, n);
	for (size_t i = 0; i < size; i++)
		assert_int_equal(out[i], 0x3c);
	c.ptr = (uintptr_t)snap;
	assert_int_equal(uhmm_dmirror_cmd(h, UHMM_DMIRROR_SNAPSHOT, &c), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(snap[i], UHMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | UHMM_DMIRROR_PROT_WRITE);
	assert_int_equal(uhmm_dmirror_cmd(h, UHMM_DMIRROR_MIGRATE_TO_SYS, &c), 0);
	assert_int_equal(c.cpages, n);
	for (size_t i = 0; i < size; i++)
		assert_int_equal(buf[i], 0x3c);
	assert_int_equal(uhmm_dmirror_close(h), 0);
	free(buf);
	free(out);
}

static void map_and_mprotect_helpers(void **state)
{
	uhmm_dmirror *h;
	void *p;
	assert_int_equal(uhmm_dmirror_open(0, &h), 0);
	assert_int_equal(uhmm_dmirror_map(h, NULL, 0, PROT_READ, MAP_PRIVATE, &p), -EINVAL);
	assert_int_equal(uhmm_dmirror_map(h, NULL, 2 * PS, PROT_READ | PROT_WRITE, MAP_SHARED, &p),
			 0);
	assert_int_equal(((char *)p)[PS], 0);
	int *w = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int *src = calloc(1, PS); /* WRITE copies whole pages */
	struct uhmm_dmirror_cmd c = { (uintptr_t)w, (uintptr_t)src, 1, 0, 0 };
	src[0] = 5;
	assert_int_equal(uhmm_dmirror_cmd(h, UHMM_DMIRROR_WRITE, &c), 0);
	assert_int_equal(w[0], 5);
	assert_int_equal(uhmm_dmirror_mprotect(w, PS, PROT_READ), 0);
	assert_int_equal(uhmm_dmirror_cmd(h, UHMM_DMIRROR_WRITE, &c), -EPERM);
	assert_int_equal(uhmm_dmirror_mprotect(w, 0, PROT_READ), 0); /* as mprotect(2) */
	munmap(w, PS);
	munmap(p, 2 * PS);
	free(src);
	assert_int_equal(uhmm_dmirror_close(h), 0);
}

static void shutdown_only_when_idle(void **state)
{
	uhmm_dmirror *h;
	assert_int_equal(uhmm_dmirror_open(0, &h), 0);
	assert_int_equal(uhmm_dmirror_shutdown(), -EBUSY);
	assert_int_equal(uhmm_dmirror_close(h), 0);
	assert_int_equal(uhmm_dmirror_shutdown(), 0);
	/* A new context on the next open. */
	assert_int_equal(uhmm_dmirror_open(0, &h), 0);
	assert_int_equal(uhmm_dmirror_close(h), 0);
	assert_int_equal(uhmm_dmirror_shutdown(), 0);
}

/*
 * A READ right after munmap of part of a device-resident buffer: the
 * kernel's driver answers -EFAULT (munmap invalidates the mirror before it
 * returns).  uhmm follows munmap from the fault-service thread, just after
 * the call returns; the layer waits for it (uhmm_sync) before each request.
 * Without that wait the READ succeeded with the old data about one time in
 * three here, so 200 rounds fail reliably.
 */
static void read_right_after_munmap_is_efault(void **state)
{
	(void)state;
	uhmm_dmirror *h;
	assert_int_equal(uhmm_dmirror_open(0, &h), 0);
	size_t n = 16;
	char *out = malloc(n * PS);
	for (int i = 0; i < 200; i++) {
		char *p = mmap(NULL, n * PS, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_ptr_not_equal(p, MAP_FAILED);
		memset(p, 0x5a, n * PS);
		struct uhmm_dmirror_cmd c = { (uintptr_t)p, (uintptr_t)out, n, 0, 0 };
		assert_int_equal(uhmm_dmirror_cmd(h, UHMM_DMIRROR_MIGRATE_TO_DEV, &c), 0);
		assert_int_equal(munmap(p + 8 * PS, 2 * PS), 0);
		struct uhmm_dmirror_cmd r = { (uintptr_t)p, (uintptr_t)out, n, 0, 0 };
		if (uhmm_dmirror_cmd(h, UHMM_DMIRROR_READ, &r) != -EFAULT)
			fail_msg("round %d: READ over the hole just unmapped did not fail", i);
		assert_int_equal(munmap(p, 8 * PS), 0);
		assert_int_equal(munmap(p + 10 * PS, 6 * PS), 0);
	}
	free(out);
	assert_int_equal(uhmm_dmirror_close(h), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(open_rejects_bad_numbers),
		cmocka_unit_test(cmd_rejects_bad_arguments),
		cmocka_unit_test(migrate_round_trip),
		cmocka_unit_test(map_and_mprotect_helpers),
		cmocka_unit_test(read_right_after_munmap_is_efault),
		cmocka_unit_test(shutdown_only_when_idle),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
