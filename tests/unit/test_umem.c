/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of uhmm's own memory (src/util/umem.c): the small-object heap,
 * page mappings, thread stacks, the line reader and the sort.
 */
#define _GNU_SOURCE
#include "testlib.h"
#include "util/umem.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096ul
#define MiB (1ul << 20)

/* The permissions of the mapping holding p ("rw-p"...), or "" if none. */
static void perms_of(const void *p, char out[5])
{
	struct uhmm_lines l;
	char line[512];
	out[0] = '\0';
	assert_int_equal(uhmm__lines_open(&l, "/proc/self/maps"), 0);
	while (uhmm__lines_next(&l, line, sizeof(line))) {
		unsigned long lo, hi;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 &&
		    lo <= (uintptr_t)p && (uintptr_t)p < hi) {
			memcpy(out, perms, 4);
			out[4] = '\0';
		}
	}
	uhmm__lines_close(&l);
}

static void heap_sizes_alignment_and_reuse(void **state)
{
	(void)state;
	static const size_t sizes[] = { 1, 8, 16, 17, 100, 1000, 4096, 5000,
					16384, 16385, 100000, 3 * MiB };
	void *p[sizeof(sizes) / sizeof(sizes[0])];
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		p[i] = uhmm__umem_calloc(1, sizes[i]);
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % 16, 0);
		assert_true(uhmm__umem_owns((uintptr_t)p[i], sizes[i]));
		const unsigned char *c = p[i];
		for (size_t k = 0; k < sizes[i]; k++)
			if (c[k])
				fail_msg("calloc(%zu) not zero at %zu", sizes[i], k);
		memset(p[i], 0xab, sizes[i]);
	}
	/* Freed and asked again: calloc is zero though the object is reused. */
	void *q = p[4];
	uhmm__umem_free(q);
	void *r = uhmm__umem_calloc(1, 100);
	assert_ptr_equal(r, q);
	assert_int_equal(((unsigned char *)r)[50], 0);
	p[4] = r;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		uhmm__umem_free(p[i]);
	uhmm__umem_free(NULL);
	/* Not the application's: malloc'd memory is not umem's. */
	void *m = malloc(64);
	assert_false(uhmm__umem_owns((uintptr_t)m, 64));
	free(m);
	assert_null(uhmm__umem_calloc(SIZE_MAX / 2, 4));
}

static void realloc_keeps_data(void **state)
{
	(void)state;
	char *p = uhmm__umem_malloc(10);
	memcpy(p, "0123456789", 10);
	for (size_t n = 20; n < 4 * MiB; n *= 3) {
		p = uhmm__umem_realloc(p, n);
		assert_non_null(p);
		assert_memory_equal(p, "0123456789", 10);
	}
	p = uhmm__umem_realloc(p, 10);
	assert_memory_equal(p, "0123456789", 10);
	char *d = uhmm__umem_strdup("umem");
	assert_string_equal(d, "umem");
	uhmm__umem_free(d);
	assert_null(uhmm__umem_realloc(p, 0));
}

static void map_aligned_zeroed_and_given_back(void **state)
{
	(void)state;
	const size_t len = 6 * MiB + 3 * PG;
	/* Once first: the reservation's header and the free list's nodes
	 * (heap slabs) are in the gauge too. */
	uhmm__umem_unmap(uhmm__umem_map(len, 2 * MiB, 0), len);
	uint64_t before = uhmm__umem_bytes();
	char *p = uhmm__umem_map(len, 2 * MiB, 0);
	assert_non_null(p);
	assert_int_equal((uintptr_t)p % (2 * MiB), 0);
	assert_true(uhmm__umem_bytes() >= before + len);
	for (size_t o = 0; o < len; o += PG)
		assert_int_equal(p[o], 0);
	memset(p, 1, len);
	char perms[5];
	/* Guard pages on both sides. */
	perms_of(p - 1, perms);
	assert_string_equal(perms, "---p");
	perms_of(p + len, perms);
	assert_string_equal(perms, "---p");
	uhmm__umem_unmap(p, len);
	/* Back to reserved: PROT_NONE, still umem's, no longer counted. */
	perms_of(p, perms);
	assert_string_equal(perms, "---p");
	assert_true(uhmm__umem_owns((uintptr_t)p, len));
	assert_int_equal(uhmm__umem_bytes(), before);
	/* Reused, zero again. */
	char *q = uhmm__umem_map(len, 2 * MiB, 0);
	assert_ptr_equal(q, p);
	assert_int_equal(q[len / 2], 0);
	uhmm__umem_unmap(q, len);

	/* Read-only and NORESERVE mappings; NORESERVE is not in the gauge. */
	char *z = uhmm__umem_map(PG, 0, UMEM_RDONLY);
	perms_of(z, perms);
	assert_string_equal(perms, "r--p");
	uhmm__umem_unmap(z, PG);
	before = uhmm__umem_bytes();
	char *n = uhmm__umem_map(64 * MiB, 2 * MiB, UMEM_NORESERVE);
	assert_non_null(n);
	assert_int_equal(uhmm__umem_bytes(), before);
	n[0] = 1;
	uhmm__umem_unmap(n, 64 * MiB);
	assert_int_equal(uhmm__umem_bytes(), before);

	errno = 0;
	assert_null(uhmm__umem_map(PG, 3 * PG, 0)); /* not a power of two */
	assert_int_equal(errno, EINVAL);
	assert_null(uhmm__umem_map(0, 0, 0));
}

/* A mapping larger than a reservation chunk gets a reservation of its own. */
static void map_grows_past_a_chunk(void **state)
{
	(void)state;
	char *a = uhmm__umem_map(1536 * MiB, 2 * MiB, UMEM_NORESERVE);
	assert_non_null(a);
	char *b = uhmm__umem_map(1536 * MiB, 2 * MiB, UMEM_NORESERVE);
	assert_non_null(b);
	a[1536 * MiB - 1] = 1;
	b[0] = 2;
	uhmm__umem_unmap(a, 1536 * MiB);
	uhmm__umem_unmap(b, 1536 * MiB);
}

static void *thread_fn(void *arg)
{
	char buf[64 << 10]; /* some stack */
	memset(buf, 1, sizeof(buf));
	*(uintptr_t *)arg = (uintptr_t)buf;
	return arg;
}

static void threads_run_on_umem_stacks(void **state)
{
	(void)state;
	for (int i = 0; i < 4; i++) {
		uintptr_t where = 0;
		pthread_t t;
		assert_int_equal(uhmm__umem_thread_create(&t, thread_fn, &where), 0);
		void *ret;
		assert_int_equal(uhmm__umem_thread_join(t, &ret), 0);
		assert_ptr_equal(ret, &where);
		assert_true(uhmm__umem_owns(where, 1));
	}
}

/* A fork while another thread allocates: the child can allocate. */
static atomic_bool stop_churn;
static void *churn(void *arg)
{
	(void)arg;
	static void *v[256];
	/* Mostly under the class lock of 100-byte objects. */
	while (!atomic_load(&stop_churn)) {
		for (int i = 0; i < 256; i++)
			v[i] = uhmm__umem_malloc(100);
		for (int i = 0; i < 256; i++)
			uhmm__umem_free(v[i]);
	}
	return NULL;
}

static void fork_child_can_allocate(void **state)
{
	(void)state;
	pthread_t t;
	atomic_store(&stop_churn, false);
	assert_int_equal(pthread_create(&t, NULL, churn, NULL), 0);
	for (int i = 0; i < 50; i++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			alarm(10);
			void *p = uhmm__umem_malloc(100);
			void *m = uhmm__umem_map(PG, 0, 0);
			_exit(p && m ? 0 : 1);
		}
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	atomic_store(&stop_churn, true);
	pthread_join(t, NULL);
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return x < y ? -1 : x > y;
}

static void sort_and_lines(void **state)
{
	(void)state;
	int v[1000];
	for (int i = 0; i < 1000; i++)
		v[i] = (i * 7919) % 1000 - 500;
	uhmm__sort(v, 1000, sizeof(v[0]), cmp_int);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(v[i], i - 500);
	uhmm__sort(v, 0, sizeof(v[0]), cmp_int);

	/* Lines: short, empty, one longer than the buffer, no final '\n'. */
	char path[] = "/tmp/uhmm-umem-lines-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static char big[10000];
	memset(big, 'x', sizeof(big) - 1);
	dprintf(fd, "one\n\n%s\nlast", big);
	close(fd);
	struct uhmm_lines l;
	char line[64];
	assert_int_equal(uhmm__lines_open(&l, path), 0);
	assert_true(uhmm__lines_next(&l, line, sizeof(line)));
	assert_string_equal(line, "one\n");
	assert_true(uhmm__lines_next(&l, line, sizeof(line)));
	assert_string_equal(line, "\n");
	assert_true(uhmm__lines_next(&l, line, sizeof(line)));
	assert_int_equal(strlen(line), sizeof(line) - 1); /* cut */
	assert_true(uhmm__lines_next(&l, line, sizeof(line)));
	assert_string_equal(line, "last");
	assert_false(uhmm__lines_next(&l, line, sizeof(line)));
	uhmm__lines_close(&l);
	unlink(path);
	assert_int_equal(uhmm__lines_open(&l, "/nonexistent/x"), -ENOENT);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(heap_sizes_alignment_and_reuse),
		cmocka_unit_test(realloc_keeps_data),
		cmocka_unit_test(map_aligned_zeroed_and_given_back),
		cmocka_unit_test(map_grows_past_a_chunk),
		cmocka_unit_test(threads_run_on_umem_stacks),
		cmocka_unit_test(fork_child_can_allocate),
		cmocka_unit_test(sort_and_lines),
	};
	return uhmm_test_main(argc, argv, __FILE__, tests, sizeof(tests) / sizeof(tests[0]));
}
