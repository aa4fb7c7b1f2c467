/* SPDX-License-Identifier: MIT */
/*
 * hmm_dmirror_abi.c - a program written against the kernel's HMM test
 * driver ABI (/dev/hmm_dmirror0..3, lib/test_hmm_uapi.h) and nothing else,
 * in the manner of the kernel's selftests (tools/testing/selftests/mm/
 * hmm-tests.c).  ctest runs it under LD_PRELOAD=libuhmm-dmirror.so, one
 * process per test (the test's name is the argument).
 *
 * It knows nothing of uhmm: every expectation is the driver's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

/* ---- the uapi, as lib/test_hmm_uapi.h has it ---- */
struct hmm_dmirror_cmd {
	__u64 addr;
	__u64 ptr;
	__u64 npages;
	__u64 cpages;
	__u64 faults;
};
#define HMM_DMIRROR_READ _IOWR('H', 0x00, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_WRITE _IOWR('H', 0x01, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_MIGRATE_TO_DEV _IOWR('H', 0x02, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_MIGRATE_TO_SYS _IOWR('H', 0x03, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_SNAPSHOT _IOWR('H', 0x04, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_EXCLUSIVE _IOWR('H', 0x05, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_CHECK_EXCLUSIVE _IOWR('H', 0x06, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_RELEASE _IOWR('H', 0x07, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_FLAGS _IOWR('H', 0x08, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_READ_UNLOCKABLE _IOWR('H', 0x09, struct hmm_dmirror_cmd)
#define HMM_DMIRROR_FLAG_FAIL_ALLOC (1ULL << 0)
enum {
	HMM_DMIRROR_PROT_ERROR = 0xFF,
	HMM_DMIRROR_PROT_NONE = 0x00,
	HMM_DMIRROR_PROT_READ = 0x01,
	HMM_DMIRROR_PROT_WRITE = 0x02,
	HMM_DMIRROR_PROT_PMD = 0x04,
	HMM_DMIRROR_PROT_PUD = 0x08,
	HMM_DMIRROR_PROT_ZERO = 0x10,
	HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20,
	HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30,
	HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL = 0x40,
	HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE = 0x50,
};

#define PS 4096ul
#define TWOMEG (2ul << 20)
#define LOCAL_W (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE)

static int hmm_open(int unit)
{
	char path[32];
	snprintf(path, sizeof(path), "/dev/hmm_dmirror%d", unit);
	return open(path, O_RDWR | O_CLOEXEC);
}

static int open_or_fail(int unit)
{
	int fd = hmm_open(unit);
	if (fd < 0)
		fail_msg("open /dev/hmm_dmirror%d: %s (run under LD_PRELOAD=libuhmm-dmirror.so)",
			 unit, strerror(errno));
	return fd;
}

/* One request: 0 or -errno; *out gets the command as the driver left it. */
static int dmcmd(int fd, unsigned long req, void *addr, void *ptr, unsigned long npages,
		 struct hmm_dmirror_cmd *out)
{
	struct hmm_dmirror_cmd c = { .addr = (uintptr_t)addr, .ptr = (uintptr_t)ptr,
				     .npages = npages, .cpages = 0xdead, .faults = 0xbeef };
	int r;
	do
		r = ioctl(fd, req, &c);
	while (r && errno == EINTR);
	if (out)
		*out = c;
	return r ? -errno : 0;
}

static void *map_anon_low(size_t size, int prot, int flags);

/* Low in the address space (map_anon_low), so that the holes tests punch
 * stay holes; anywhere if nothing there is free. */
static void *map_anon(size_t size, int prot, int flags)
{
	void *p = map_anon_low(size, prot, flags);
	if (p)
		return p;
	p = mmap(NULL, size, prot, flags | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

/*
 * The same, low in the address space, where the kernel's top-down placement
 * of other mappings never goes while there is room above: a hole the test
 * punches there stays a hole.  (One punched in an ordinary mapping was
 * refilled, under ASan, by another thread's mapping before the request.)
 */
static void *map_anon_low(size_t size, int prot, int flags)
{
	for (uintptr_t a = 0x30000000; a < 0x70000000; a += 16 << 20) {
		void *p = mmap((void *)a, size, prot, flags | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			       -1, 0);
		if (p == (void *)a)
			return p;
		if (p != MAP_FAILED)
			munmap(p, size); /* (a kernel that ignored the flag) */
	}
	return NULL;
}

static void fill(void *p, size_t size, int seed)
{
	int *q = p;
	for (size_t i = 0; i < size / sizeof(int); i++)
		q[i] = (int)i + seed;
}

static void check(const void *p, size_t size, int seed)
{
	const int *q = p;
	for (size_t i = 0; i < size / sizeof(int); i++)
		if (q[i] != (int)i + seed)
			fail_msg("int %zu: %d, expected %d", i, q[i], (int)i + seed);
}

static void snapshot_expect(int fd, void *addr, unsigned long npages, unsigned char want)
{
	unsigned char *m = malloc(npages);
	struct hmm_dmirror_cmd c;
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_SNAPSHOT, addr, m, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	for (unsigned long i = 0; i < npages; i++)
		if (m[i] != want)
			fail_msg("page %lu: snapshot 0x%02x, expected 0x%02x", i, m[i], want);
	free(m);
}

#define COH_LOCAL_W (HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL | HMM_DMIRROR_PROT_WRITE)
#define COH_REMOTE_W (HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE | HMM_DMIRROR_PROT_WRITE)

/* ---- opening ---- */

static void open_devices_coherent_ones_enodev(void **state)
{
	int a = open_or_fail(0), b = open_or_fail(1), c = open_or_fail(0);
	assert_true(a != b && b != c && a != c);
	for (int unit = 2; unit < 4; unit++) {
		/* Device-coherent: open too (uhmm's coherent simdevs). */
		int fd = open_or_fail(unit);
		assert_int_equal(close(fd), 0);
	}
	assert_int_equal(close(a), 0);
	assert_int_equal(close(b), 0);
	assert_int_equal(close(c), 0);
}

static void bad_requests_fail_and_write_nothing_back(void **state)
{
	int fd = open_or_fail(0);
	size_t size = 4 * PS;
	char *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	char *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	assert_int_equal(dmcmd(fd, _IOWR('H', 0x0a, struct hmm_dmirror_cmd), buf, mirror, 4, &c),
			 -EINVAL);
	assert_int_equal(dmcmd(fd, _IOWR('H', 0x00, int), buf, mirror, 4, &c), -EINVAL);
	/* The driver checks addr and npages for every request, FLAGS too
	 * (npages is its flag word: 0 fails), before the request number. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_FLAGS, buf + 1, NULL, 1, &c), -EINVAL);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_FLAGS, buf, NULL, 0, &c), -EINVAL);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, buf, NULL, 0, &c), -EINVAL);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf + 1, mirror, 4, &c), -EINVAL);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, 0, &c), -EINVAL);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, 0, &c), -EINVAL);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_SNAPSHOT, (void *)(-PS), mirror, 2, &c), -EINVAL);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, ~0ul / 2, &c), -EINVAL);
	/* On error the command is not written back. */
	assert_int_equal(c.cpages, 0xdead);
	assert_int_equal(c.faults, 0xbeef);
	/* The command itself cannot be read: -EFAULT, whatever the request
	 * (the driver copies it in first). */
	assert_int_equal(ioctl(fd, HMM_DMIRROR_READ, (void *)16), -1);
	assert_int_equal(errno, EFAULT);
	assert_int_equal(ioctl(fd, _IOWR('H', 0x0a, struct hmm_dmirror_cmd), (void *)16), -1);
	assert_int_equal(errno, EFAULT);
	/* The destination cannot be written. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, (void *)16, 4, &c), -EFAULT);
	/* Success zeroes and reports (a flag word of 2: no flag the driver
	 * acts on). */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_FLAGS, NULL, NULL, 2, &c), 0);
	assert_int_equal(c.cpages, 0);
	assert_int_equal(c.faults, 0);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

/* ---- READ / WRITE ---- */

static void read_anon_needs_one_fault_round(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 64;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(buf, size, 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	assert_int_equal(c.faults, 1);
	check(mirror, size, 0);
	/* The mirror is still valid: no fault the second time. */
	memset(mirror, 0, size);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	assert_int_equal(c.faults, 0);
	check(mirror, size, 0);
	/* The CPU changes the data: the device reads the new data. */
	fill(buf, size, 7);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	check(mirror, size, 7);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void read_prot_none_or_hole_efault(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 8;
	size_t size = npages * PS;
	char *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	char *mirror = malloc(size);
	fill(buf, size, 0);
	memset(mirror, 0x5a, size);
	assert_int_equal(mprotect(buf, size, PROT_NONE), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, NULL), -EFAULT);
	for (size_t i = 0; i < size; i++)
		assert_int_equal((unsigned char)mirror[i], 0x5a);
	assert_int_equal(mprotect(buf, size, PROT_READ), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, NULL), 0);
	check(mirror, size, 0);
	/* A hole in the middle. */
	assert_int_equal(munmap(buf + 3 * PS, PS), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, NULL), -EFAULT);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void write_anon_and_readonly_eperm(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 16;
	size_t size = npages * PS;
	int *buf = map_anon_low(size, PROT_READ, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(mirror, size, -100);
	/* Read-only: -EPERM, memory unchanged (still zero). */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	fill(mirror, size, -100);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, npages, &c), -EPERM);
	for (size_t i = 0; i < size / sizeof(int); i++)
		assert_int_equal(buf[i], 0);
	assert_int_equal(mprotect(buf, size, PROT_READ | PROT_WRITE), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	assert_int_equal(c.faults, 1);
	check(buf, size, -100);
	/* Made read-only again: the mirror must lose its write right. */
	assert_int_equal(mprotect(buf, size, PROT_READ), 0);
	fill(mirror, size, 5);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, npages, &c), -EPERM);
	check(buf, size, -100);
	/* A hole: -EFAULT. */
	assert_int_equal(munmap(buf, PS), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, npages, &c), -EFAULT);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

/* ---- migration ---- */

static void migrate_to_device_read_write_and_back(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 600; /* two chunks */
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(buf, size, 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(mirror, size, 0);
	snapshot_expect(fd, buf, npages, LOCAL_W);
	/* The device reads and writes its own memory: no fault rounds. */
	memset(mirror, 0, size);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	assert_int_equal(c.faults, 0);
	check(mirror, size, 0);
	fill(mirror, size, 3);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, npages, &c), 0);
	snapshot_expect(fd, buf, npages, LOCAL_W);
	/* MIGRATE_TO_SYS counts what moved. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, npages / 2, &c), 0);
	assert_int_equal(c.cpages, npages / 2);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, npages, &c), 0);
	assert_int_equal(c.cpages, npages - npages / 2);
	snapshot_expect(fd, buf, npages, HMM_DMIRROR_PROT_WRITE);
	check(buf, size, 3);
	/* Again, then a CPU access brings the pages back. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c), 0);
	check(buf, size, 3);
	snapshot_expect(fd, buf, npages, HMM_DMIRROR_PROT_WRITE);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void migrate_untouched_and_zero_pages(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 32;
	size_t size = npages * PS;
	char *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	char *mirror = malloc(size);
	volatile char sink = 0;
	for (size_t i = 0; i < size; i += 2 * PS)
		sink += buf[i]; /* every other page: the zero page */
	(void)sink;
	snapshot_expect(fd, buf, 1, HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
	snapshot_expect(fd, buf + PS, 1, HMM_DMIRROR_PROT_NONE);
	memset(mirror, 1, size);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL), 0);
	for (size_t i = 0; i < size; i++)
		assert_int_equal(mirror[i], 0);
	snapshot_expect(fd, buf, npages, LOCAL_W);
	for (size_t i = 0; i < size; i++)
		assert_int_equal(buf[i], 0);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void migrate_hole_or_prot_none_einval(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 1024;
	size_t size = npages * PS;
	char *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	char *mirror = malloc(size);
	fill(buf, size, 1);
	/* A hole in the second chunk: the first chunk stays migrated. */
	assert_int_equal(munmap(buf + 700 * PS, PS), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL),
			 -EINVAL);
	snapshot_expect(fd, buf, 512, LOCAL_W);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, npages, NULL), -EINVAL);
	/* Unreadable. */
	assert_int_equal(mprotect(buf + 800 * PS, PS, PROT_NONE), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf + 701 * PS, mirror, 200, NULL),
			 -EINVAL);
	check(buf, 512 * PS, 1); /* the CPU brings the first chunk back */
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void migrate_shared_anon_enoent(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 8;
	size_t size = npages * PS;
	char *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_SHARED);
	char *mirror = malloc(size);
	fill(buf, size, 2);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL), -ENOENT);
	snapshot_expect(fd, buf, npages, HMM_DMIRROR_PROT_WRITE);
	check(buf, size, 2);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void file_backed_shared_mapping(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 16;
	size_t size = npages * PS;
	char path[] = "/tmp/hmm_dmirror_abi.XXXXXX";
	int file = mkstemp(path);
	assert_true(file >= 0);
	unlink(path);
	int *data = malloc(size), *mirror = malloc(size);
	fill(data, size, 11);
	assert_int_equal(pwrite(file, data, size, 0), (ssize_t)size);
	int *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, file, 0);
	assert_true(buf != MAP_FAILED);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, NULL), 0);
	check(mirror, size, 11);
	snapshot_expect(fd, buf, npages, HMM_DMIRROR_PROT_WRITE);
	fill(mirror, size, 12);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, npages, NULL), 0);
	assert_int_equal(pread(file, data, size, 0), (ssize_t)size);
	check(data, size, 12); /* the file sees the device's write */
	/* Page cache cannot move to the device. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL), -ENOENT);
	check(buf, size, 12);
	munmap(buf, size);
	close(file);
	free(data);
	free(mirror);
	close(fd);
}

/* Read-only private anonymous memory migrates, as the kernel's (it was
 * refused: -ENOENT at the read-back), and reads back on the CPU. */
static void migrate_readonly_anon(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 32;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(buf, size, 21);
	assert_int_equal(mprotect(buf, size, PROT_READ), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(mirror, size, 21);
	snapshot_expect(fd, buf, npages,
			HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ);
	check(buf, size, 21); /* CPU reads bring it home */
	munmap(buf, size);
	free(mirror);
	close(fd);
}

/* A private file mapping: its copied-on-write pages migrate, as the
 * kernel's (they were refused); its page-cache pages do not (-ENOENT at
 * the read-back, as the kernel's migrate_vma leaves them).  The file is
 * not changed. */
static void migrate_private_file_cow_pages(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 16, half = npages / 2;
	size_t size = npages * PS;
	char path[] = "/tmp/hmm_dmirror_abi.XXXXXX";
	int file = mkstemp(path);
	assert_true(file >= 0);
	unlink(path);
	int *data = malloc(size), *mirror = malloc(size);
	fill(data, size, 31);
	assert_int_equal(pwrite(file, data, size, 0), (ssize_t)size);
	int *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, file, 0);
	assert_true(buf != MAP_FAILED);
	/* The first half written (anonymous copies), the second only read. */
	fill(buf, half * PS, 32);
	check((char *)buf + half * PS, size - half * PS, 31 + (int)(half * PS / sizeof(int)));
	struct hmm_dmirror_cmd c;
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c),
			 -ENOENT);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, half, &c), 0);
	assert_int_equal(c.cpages, half);
	check(mirror, half * PS, 32);
	snapshot_expect(fd, buf, half, HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE);
	check(buf, half * PS, 32);
	check((char *)buf + half * PS, size - half * PS, 31 + (int)(half * PS / sizeof(int)));
	assert_int_equal(pread(file, data, size, 0), (ssize_t)size);
	check(data, size, 31);
	munmap(buf, size);
	close(file);
	free(data);
	free(mirror);
	close(fd);
}

static void two_devices_migrate_to_one_read_through_other(void **state)
{
	int fd0 = open_or_fail(0), fd1 = open_or_fail(1);
	unsigned long npages = 64;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(buf, size, 4);
	assert_int_equal(dmcmd(fd0, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL), 0);
	snapshot_expect(fd0, buf, npages, LOCAL_W);
	/* Another device's page is not valid for this device's snapshot. */
	snapshot_expect(fd1, buf, npages, HMM_DMIRROR_PROT_NONE);
	/* Device 1 reads: the pages leave device 0 first. */
	memset(mirror, 0, size);
	assert_int_equal(dmcmd(fd1, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	assert_int_equal(c.faults, 1);
	check(mirror, size, 4);
	snapshot_expect(fd0, buf, npages, HMM_DMIRROR_PROT_WRITE);
	/* Device 1 takes them.  Device 0's migration selects system pages
	 * only (migrate_vma): device 1's pages are not migrated, and its
	 * read-back finds them missing; half of them in system memory, and
	 * those it takes. */
	assert_int_equal(dmcmd(fd1, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL), 0);
	snapshot_expect(fd1, buf, npages, LOCAL_W);
	assert_int_equal(dmcmd(fd0, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c),
			 -ENOENT);
	snapshot_expect(fd1, buf, npages, LOCAL_W);
	snapshot_expect(fd0, buf, npages, HMM_DMIRROR_PROT_NONE);
	assert_int_equal(dmcmd(fd1, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, npages / 2, &c), 0);
	assert_int_equal(c.cpages, npages / 2);
	assert_int_equal(dmcmd(fd0, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages / 2, NULL), 0);
	check(mirror, size / 2, 4);
	snapshot_expect(fd0, buf, npages / 2, LOCAL_W);
	snapshot_expect(fd1, (char *)buf + size / 2, npages / 2, LOCAL_W);
	/* MIGRATE_TO_SYS on device 1 moves nothing of device 0's. */
	assert_int_equal(dmcmd(fd1, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, npages / 2, &c), 0);
	assert_int_equal(c.cpages, 0);
	check(buf, size, 4);
	munmap(buf, size);
	free(mirror);
	close(fd0);
	close(fd1);
}

/* ---- snapshot ---- */

static void snapshot_reports_each_kind(void **state)
{
	int fd0 = open_or_fail(0), fd1 = open_or_fail(1);
	unsigned long npages = 7;
	char *p = map_anon(npages * PS, PROT_NONE, MAP_PRIVATE);
	unsigned char m[7];
	char tmp[PS];
	/* 0: PROT_NONE, 1: hole, 2: zero page, 3: read-only, 4: written,
	 * 5: on device 0, 6: on device 1 (NONE for device 0, as the kernel's
	 * snapshot, which does not fault another device's page).  (The hole is punched last: the
	 * kernel's selftest punches it first, but under uhmm the migrations
	 * register memory, and uhmm's page-state array for a one-page range
	 * is a one-page mmap that the kernel may place in that very hole.
	 * See docs/COMPAT.md.) */
	assert_int_equal(mprotect(p + 2 * PS, PS, PROT_READ), 0);
	volatile char v = p[2 * PS];
	(void)v;
	assert_int_equal(mprotect(p + 3 * PS, 4 * PS, PROT_READ | PROT_WRITE), 0);
	memset(p + 3 * PS, 1, 4 * PS);
	assert_int_equal(mprotect(p + 3 * PS, PS, PROT_READ), 0);
	assert_int_equal(dmcmd(fd0, HMM_DMIRROR_MIGRATE_TO_DEV, p + 5 * PS, tmp, 1, NULL), 0);
	assert_int_equal(dmcmd(fd1, HMM_DMIRROR_MIGRATE_TO_DEV, p + 6 * PS, tmp, 1, NULL), 0);
	assert_int_equal(munmap(p + PS, PS), 0);
	struct hmm_dmirror_cmd c;
	assert_int_equal(dmcmd(fd0, HMM_DMIRROR_SNAPSHOT, p, m, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	assert_int_equal(m[0], HMM_DMIRROR_PROT_ERROR);
	assert_int_equal(m[1], HMM_DMIRROR_PROT_ERROR);
	assert_int_equal(m[2], HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
	assert_int_equal(m[3], HMM_DMIRROR_PROT_READ);
	assert_int_equal(m[4], HMM_DMIRROR_PROT_WRITE);
	assert_int_equal(m[5], LOCAL_W);
	assert_int_equal(m[6], HMM_DMIRROR_PROT_NONE); /* device 1's: not valid here */
	munmap(p, npages * PS);
	close(fd0);
	close(fd1);
}

/* AnonHugePages of the mapping at @p, in kB (smaps). */
static long anon_huge_kb(void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	int in = 0;
	long kb = -1;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	if (f)
		fclose(f);
	return kb;
}

static void thp_region_snapshot_pmd_and_migrate(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = TWOMEG / PS;
	char *raw = map_anon(2 * TWOMEG, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *buf = (int *)(((uintptr_t)raw + TWOMEG - 1) & ~(TWOMEG - 1));
	int *mirror = malloc(TWOMEG);
	struct hmm_dmirror_cmd c;
	assert_int_equal(madvise(buf, TWOMEG, MADV_HUGEPAGE), 0);
	fill(buf, TWOMEG, 9);
	long kb = anon_huge_kb(buf);
	if (kb >= 2048)
		snapshot_expect(fd, buf, npages, HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD);
	else
		fprintf(stderr, "note: the kernel gave no huge page (AnonHugePages %ld kB); "
				"PMD not checked\n", kb);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	check(mirror, TWOMEG, 9);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(mirror, TWOMEG, 9);
	snapshot_expect(fd, buf, npages, LOCAL_W);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(buf, TWOMEG, 9);
	/* Back as one huge page, as it left (the device-private THP
	 * migration of Linux 6.18): the snapshot says PMD again. */
	if (kb >= 2048) {
		assert_true(anon_huge_kb(buf) >= 2048);
		snapshot_expect(fd, buf, npages, HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD);
	}
	munmap(raw, 2 * TWOMEG);
	free(mirror);
	close(fd);
}

/* ---- exclusive, release, flags ---- */

static void exclusive_until_cpu_touch(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 16;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(buf, size, 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(mirror, size, 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, buf, NULL, npages, NULL), -EPERM);
	/* The CPU takes the pages back by touching them. */
	for (size_t i = 0; i < size / sizeof(int); i++)
		assert_int_equal(buf[i]++, (int)i);
	check(buf, size, 1);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, buf, NULL, npages, NULL), 0);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void exclusive_then_mprotect_write_eperm(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 4;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	fill(buf, size, 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, mirror, npages, NULL), 0);
	assert_int_equal(mprotect(buf, size, PROT_READ), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, npages, NULL), -EPERM);
	check(buf, size, 0);
	/* Read-only now: taking it exclusively again fails as the driver's
	 * write get_user_pages does, -EFAULT. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, mirror, npages, NULL), -EFAULT);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void release_evicts_device_memory(void **state)
{
	int fd = open_or_fail(1);
	unsigned long npages = 128;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	fill(buf, size, 21);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL), 0);
	snapshot_expect(fd, buf, npages, LOCAL_W);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_RELEASE, buf, NULL, npages, NULL), 0);
	snapshot_expect(fd, buf, npages, HMM_DMIRROR_PROT_WRITE);
	check(buf, size, 21);
	/* The device works on afterwards. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL), 0);
	check(mirror, size, 21);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void flags_fail_alloc_falls_back(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = TWOMEG / PS;
	char *raw = map_anon(2 * TWOMEG, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *buf = (int *)(((uintptr_t)raw + TWOMEG - 1) & ~(TWOMEG - 1));
	int *mirror = malloc(TWOMEG);
	struct hmm_dmirror_cmd c;
	madvise(buf, TWOMEG, MADV_HUGEPAGE);
	fill(buf, TWOMEG, 33);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_FLAGS, NULL, NULL, HMM_DMIRROR_FLAG_FAIL_ALLOC, &c),
			 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(mirror, TWOMEG, 33);
	snapshot_expect(fd, buf, npages, LOCAL_W);
	check(buf, TWOMEG, 33);
	munmap(raw, 2 * TWOMEG);
	free(mirror);
	close(fd);
}

static void dev_mmap_private_is_read_only_for_snapshot(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 4;
	size_t size = npages * PS;
	char *priv = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	char *shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(priv != MAP_FAILED && shared != MAP_FAILED);
	for (size_t i = 0; i < size; i++)
		assert_int_equal(priv[i] | shared[i], 0);
	snapshot_expect(fd, priv, npages, HMM_DMIRROR_PROT_READ);
	snapshot_expect(fd, shared, npages, HMM_DMIRROR_PROT_WRITE);
	priv[0] = 1; /* copy-on-write */
	snapshot_expect(fd, priv, 1, HMM_DMIRROR_PROT_WRITE);
	munmap(priv, size);
	munmap(shared, size);
	close(fd);
}

static void dup_shares_the_mirror(void **state)
{
	int fd = open_or_fail(0);
	int fd2 = dup(fd);
	assert_true(fd2 >= 0);
	int *buf = map_anon(PS, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int mirror[PS / sizeof(int)];
	struct hmm_dmirror_cmd c;
	fill(buf, PS, 8);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, 1, &c), 0);
	assert_int_equal(c.faults, 1);
	assert_int_equal(close(fd), 0);
	assert_int_equal(dmcmd(fd2, HMM_DMIRROR_READ, buf, mirror, 1, &c), 0);
	assert_int_equal(c.faults, 0); /* same file, same mirror */
	check(mirror, PS, 8);
	assert_int_equal(close(fd2), 0);
	munmap(buf, PS);
}

/* ---- the address space changes ---- */

/* Fork: @flags MAP_PRIVATE or MAP_SHARED.  The child writes through its
 * own device; the parent sees the result only for a shared mapping. */
static void fork_child_writes(int flags)
{
	int fd = open_or_fail(0);
	unsigned long npages = 32;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, flags);
	int *mirror = malloc(size);
	fill(buf, size, 0);
	fill(mirror, size, -1000);
	/* Some of it on the device when fork happens. */
	int *back = malloc(size);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, back, npages / 2, NULL),
			 flags == MAP_SHARED ? -ENOENT : 0);
	free(back);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int bad = 0;
		const int *q = buf;
		for (size_t i = 0; i < size / sizeof(int); i++)
			bad |= q[i] != (int)i;
		/* The parent's descriptor mirrors the parent, not us. */
		bad |= (dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, 1, NULL) != -EINVAL) << 1;
		int cfd = hmm_open(0);
		struct hmm_dmirror_cmd c;
		bad |= (cfd < 0) << 2;
		bad |= (dmcmd(cfd, HMM_DMIRROR_WRITE, buf, mirror, npages, &c) != 0) << 3;
		bad |= (c.cpages != npages || c.faults != 1) << 4;
		for (size_t i = 0; i < size / sizeof(int); i++)
			bad |= (q[i] != (int)i - 1000) << 5;
		close(cfd);
		_exit(bad);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	check(buf, size, flags == MAP_SHARED ? -1000 : 0);
	/* The parent's device still works. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, NULL), 0);
	check(mirror, size, flags == MAP_SHARED ? -1000 : 0);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

static void fork_child_writes_private_stay_in_child(void **state)
{
	fork_child_writes(MAP_PRIVATE);
}

static void fork_child_writes_shared_reach_parent(void **state)
{
	fork_child_writes(MAP_SHARED);
}

struct racer {
	int fd;
	void *buf;
	/* Allocated before the thread starts: a malloc of this size is an
	 * mmap, which, made after the munmap below, lands where buf was. */
	void *mirror;
	unsigned long npages;
	int ok, efault, other;
};

static void *read_loop(void *arg)
{
	struct racer *r = arg;
	void *mirror = r->mirror;
	for (int i = 0; i < 2000 && !r->efault; i++) {
		int e = dmcmd(r->fd, HMM_DMIRROR_READ, r->buf, mirror, r->npages, NULL);
		if (!e)
			r->ok++;
		else if (e == -EFAULT)
			r->efault++;
		else
			r->other++;
	}
	return NULL;
}

static void munmap_racing_read_fails_cleanly(void **state)
{
	for (int on_device = 0; on_device < 2; on_device++) {
		int fd = open_or_fail(0);
		struct racer r = { .fd = fd, .npages = 256 };
		size_t size = r.npages * PS;
		r.buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
		fill(r.buf, size, 0);
		void *mirror = malloc(size);
		r.mirror = malloc(size);
		if (on_device)
			assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, r.buf, mirror,
					       r.npages, NULL), 0);
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, read_loop, &r), 0);
		usleep(2000);
		assert_int_equal(munmap(r.buf, size), 0);
		pthread_join(t, NULL);
		assert_int_equal(r.other, 0);
		/* Once it is gone, the device says so. */
		assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, r.buf, mirror, r.npages, NULL),
				 -EFAULT);
		free(mirror);
		free(r.mirror);
		close(fd);
	}
}

/* Devices 2 and 3 are device-coherent: migrated pages stay in place on
 * CPU access, snapshots say coherent local or remote, MIGRATE_TO_SYS
 * brings them home, RELEASE (eviction) too. */
static void coherent_devices_keep_pages_on_cpu_access(void **state)
{
	int d2 = open_or_fail(2), d3 = open_or_fail(3);
	unsigned long npages = 600; /* two chunks */
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(buf, size, 40);
	assert_int_equal(dmcmd(d2, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(mirror, size, 40);
	snapshot_expect(d2, buf, npages, COH_LOCAL_W);
	snapshot_expect(d3, buf, npages, COH_REMOTE_W);
	/* The CPU reads and writes in place: still on device 2. */
	check(buf, size, 40);
	fill(buf, size, 41);
	snapshot_expect(d2, buf, npages, COH_LOCAL_W);
	memset(mirror, 0, size);
	assert_int_equal(dmcmd(d2, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	check(mirror, size, 41);
	/* To device 3, which the caller chose: home first (the driver's
	 * MIGRATE_TO_DEV selects system memory only, as the kernel's). */
	assert_int_equal(dmcmd(d2, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(buf, size, 41);
	assert_int_equal(dmcmd(d3, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	check(mirror, size, 41);
	snapshot_expect(d3, buf, npages, COH_LOCAL_W);
	snapshot_expect(d2, buf, npages, COH_REMOTE_W);
	/* The driver's eviction of device 3's memory moves them home. */
	assert_int_equal(dmcmd(d3, HMM_DMIRROR_RELEASE, buf, NULL, npages, &c), 0);
	snapshot_expect(d3, buf, npages, HMM_DMIRROR_PROT_WRITE);
	check(buf, size, 41);
	/* MIGRATE_TO_SYS of pages not on the device moves none. */
	assert_int_equal(dmcmd(d2, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, npages, &c), 0);
	assert_int_equal(c.cpages, 0);
	munmap(buf, size);
	free(mirror);
	close(d2);
	close(d3);
}

static void mremap_after_migration(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 64;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(buf, size, 55);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, mirror, npages, NULL), 0);
	char *dst = map_anon(size, PROT_NONE, MAP_PRIVATE);
	int *moved = mremap(buf, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	assert_true((void *)moved == dst);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, NULL), -EFAULT);
	memset(mirror, 0, size);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, moved, mirror, npages, &c), 0);
	check(mirror, size, 55);
	check(moved, size, 55);
	munmap(moved, size);
	free(mirror);
	close(fd);
}

/* ---- the mirror follows every change of plain (unmanaged) memory ---- */

/* READ of @npages at @p: its fault rounds, and the data checked. */
static unsigned long read_faults(int fd, void *p, unsigned long npages, int seed)
{
	size_t size = npages * PS;
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	memset(mirror, 0xee, size);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, p, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	if (seed >= 0)
		check(mirror, size, seed);
	free(mirror);
	return c.faults;
}

/*
 * The kernel's mirror is told of an munmap before it returns (its notifier
 * sees every change of every VMA): a device READ after munmap and a new
 * mmap at the same address faults again.  The memory here is never
 * migrated, so uhmm does not manage it and hears of the munmap only
 * through the preloaded munmap().
 */
static void read_after_munmap_mmap_reuse_faults_again(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 16;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	fill(buf, size, 1);
	assert_int_equal(read_faults(fd, buf, npages, 1), 1);
	assert_int_equal(read_faults(fd, buf, npages, 1), 0); /* mirrored */
	assert_int_equal(munmap(buf, size), 0);
	int *again = mmap(buf, size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	assert_true(again == buf);
	fill(again, size, 2);
	assert_int_equal(read_faults(fd, again, npages, 2), 1);
	assert_int_equal(read_faults(fd, again, npages, 2), 0);
	munmap(again, size);
	close(fd);
}

/* mmap(MAP_FIXED) over mirrored memory replaces it: a new fault round. */
static void read_after_map_fixed_over_mirror_faults_again(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 16;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	fill(buf, size, 3);
	assert_int_equal(read_faults(fd, buf, npages, 3), 1);
	int *over = mmap(buf + PS / sizeof(int) * 4, 4 * PS, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	assert_true(over != MAP_FAILED);
	fill(buf, size, 4);
	/* The mirror lost exactly pages 4..7: one round for them. */
	assert_int_equal(read_faults(fd, buf, npages, 4), 1);
	assert_int_equal(read_faults(fd, buf, npages, 4), 0);
	munmap(buf, size);
	close(fd);
}

/* madvise(MADV_DONTNEED) discards: the mirror drops the pages, the device
 * reads zeros after a new round. */
static void read_after_madvise_dontneed_faults_again(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 8;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	fill(buf, size, 5);
	assert_int_equal(read_faults(fd, buf, npages, 5), 1);
	assert_int_equal(madvise(buf, size, MADV_DONTNEED), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	assert_int_equal(c.faults, 1);
	for (size_t i = 0; i < size / sizeof(int); i++)
		assert_int_equal(mirror[i], 0);
	/* Advice that keeps the contents keeps the mirror. */
	assert_int_equal(madvise(buf, size, MADV_WILLNEED), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	assert_int_equal(c.faults, 0);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

/* mremap moving plain mirrored memory away, and a new mapping in its
 * place: the old address faults again, the new one is read afresh. */
static void read_after_mremap_of_mirror_faults_again(void **state)
{
	int fd = open_or_fail(0);
	unsigned long npages = 16;
	size_t size = npages * PS;
	int *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	fill(buf, size, 6);
	assert_int_equal(read_faults(fd, buf, npages, 6), 1);
	char *dst = map_anon(size, PROT_NONE, MAP_PRIVATE);
	int *moved = mremap(buf, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	assert_true((void *)moved == dst);
	int *again = mmap(buf, size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	assert_true(again == buf);
	fill(again, size, 7);
	assert_int_equal(read_faults(fd, again, npages, 7), 1);
	assert_int_equal(read_faults(fd, moved, npages, 6), 1);
	/* Shrinking in place cuts the tail: a mapping there is new. */
	assert_true(mremap(again, size, size / 2, 0) == again);
	int *tail = mmap((char *)again + size / 2, size / 2, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	assert_true((char *)tail == (char *)again + size / 2);
	fill(again, size, 8); /* both halves, one range again */
	assert_int_equal(read_faults(fd, again, npages / 2, 8), 0); /* kept */
	assert_int_equal(read_faults(fd, again, npages, 8), 1);     /* the tail */
	munmap(again, size);
	munmap(moved, size);
	close(fd);
}

/* ---- READ_UNLOCKABLE: a userfaultfd of the program's own ---- */

/* The program's fault handler: fills each missing page with the ints
 * fill(.., seed) would put there, until told to stop (polls, bounded). */
struct uffd_server {
	int uffd;
	char *base;
	int seed;
	atomic_int stop;
	atomic_int served;
};

static void *uffd_serve(void *arg)
{
	struct uffd_server *sv = arg;
	char *page = aligned_alloc(PS, PS);
	while (!atomic_load(&sv->stop)) {
		struct pollfd pfd = { .fd = sv->uffd, .events = POLLIN };
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		struct uffd_msg msg;
		if (read(sv->uffd, &msg, sizeof(msg)) != sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uintptr_t a = msg.arg.pagefault.address & ~(PS - 1);
		int *q = (int *)page;
		size_t first = (a - (uintptr_t)sv->base) / sizeof(int);
		for (size_t i = 0; i < PS / sizeof(int); i++)
			q[i] = (int)(first + i) + sv->seed;
		struct uffdio_copy cp = { .dst = a, .src = (uintptr_t)page, .len = PS };
		if (ioctl(sv->uffd, UFFDIO_COPY, &cp) == 0)
			atomic_fetch_add(&sv->served, 1);
	}
	free(page);
	return NULL;
}

/*
 * A buffer whose missing pages only the program's own userfaultfd
 * provides.  READ's range fault cannot wait for it (the kernel faults
 * without FAULT_FLAG_ALLOW_RETRY, and handle_userfault refuses): -EFAULT,
 * nothing served.  READ_UNLOCKABLE's may drop its locks: the handler
 * serves the pages from its own thread, the device reads what it put
 * there, in one round.
 */
static void read_unlockable_waits_for_programs_userfaultfd(void **state)
{
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0) {
		fprintf(stderr, "[  SKIP    ] userfaultfd: %s\n", strerror(errno));
		skip();
	}
	struct uffdio_api api = { .api = UFFD_API };
	assert_int_equal(ioctl(uffd, UFFDIO_API, &api), 0);
	int fd = open_or_fail(0);
	unsigned long npages = 8;
	size_t size = npages * PS;
	char *buf = map_anon(size, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	struct uffdio_register reg = { .range = { (uintptr_t)buf, size },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	assert_int_equal(ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
	struct uffd_server sv = { .uffd = uffd, .base = buf, .seed = 9 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, uffd_serve, &sv), 0);
	int *mirror = malloc(size);
	struct hmm_dmirror_cmd c;
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), -EFAULT);
	assert_int_equal(atomic_load(&sv.served), 0);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_WRITE, buf, mirror, npages, &c), -EFAULT);
	assert_int_equal(atomic_load(&sv.served), 0);
	memset(mirror, 0, size);
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ_UNLOCKABLE, buf, mirror, npages, &c), 0);
	assert_int_equal(c.cpages, npages);
	assert_int_equal(c.faults, 1);
	assert_true(atomic_load(&sv.served) >= 1);
	check(mirror, size, 9);
	/* Present now: a plain READ needs nothing of the handler. */
	assert_int_equal(dmcmd(fd, HMM_DMIRROR_READ, buf, mirror, npages, &c), 0);
	check(mirror, size, 9);
	atomic_store(&sv.stop, 1);
	pthread_join(t, NULL);
	close(uffd);
	munmap(buf, size);
	free(mirror);
	close(fd);
}

#ifdef __SANITIZE_THREAD__
/* The fork tests open the device in the child, which starts uhmm's threads
 * there: TSan supports that only when told to. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
	return "die_after_fork=0";
}
#endif

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(open_devices_coherent_ones_enodev),
		cmocka_unit_test(bad_requests_fail_and_write_nothing_back),
		cmocka_unit_test(read_anon_needs_one_fault_round),
		cmocka_unit_test(read_after_munmap_mmap_reuse_faults_again),
		cmocka_unit_test(read_after_map_fixed_over_mirror_faults_again),
		cmocka_unit_test(read_after_madvise_dontneed_faults_again),
		cmocka_unit_test(read_after_mremap_of_mirror_faults_again),
		cmocka_unit_test(read_unlockable_waits_for_programs_userfaultfd),
		cmocka_unit_test(read_prot_none_or_hole_efault),
		cmocka_unit_test(write_anon_and_readonly_eperm),
		cmocka_unit_test(migrate_readonly_anon),
		cmocka_unit_test(migrate_private_file_cow_pages),
		cmocka_unit_test(migrate_to_device_read_write_and_back),
		cmocka_unit_test(migrate_untouched_and_zero_pages),
		cmocka_unit_test(migrate_hole_or_prot_none_einval),
		cmocka_unit_test(migrate_shared_anon_enoent),
		cmocka_unit_test(file_backed_shared_mapping),
		cmocka_unit_test(two_devices_migrate_to_one_read_through_other),
		cmocka_unit_test(snapshot_reports_each_kind),
		cmocka_unit_test(thp_region_snapshot_pmd_and_migrate),
		cmocka_unit_test(exclusive_until_cpu_touch),
		cmocka_unit_test(exclusive_then_mprotect_write_eperm),
		cmocka_unit_test(release_evicts_device_memory),
		cmocka_unit_test(flags_fail_alloc_falls_back),
		cmocka_unit_test(dev_mmap_private_is_read_only_for_snapshot),
		cmocka_unit_test(dup_shares_the_mirror),
		cmocka_unit_test(fork_child_writes_private_stay_in_child),
		cmocka_unit_test(fork_child_writes_shared_reach_parent),
		cmocka_unit_test(munmap_racing_read_fails_cleanly),
		cmocka_unit_test(mremap_after_migration),
		cmocka_unit_test(coherent_devices_keep_pages_on_cpu_access),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
