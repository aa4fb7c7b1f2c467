/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dmirror.c - libFuzzer target: the /dev/hmm_dmirror layer
 * (src/compat) through its ioctl entry.
 *
 * The program is linked with the compat objects, so open(), ioctl(),
 * mmap(), mprotect(), dup*() and close() are the shim's, exactly as under
 * LD_PRELOAD: the target opens "/dev/hmm_dmirrorN" and sends ioctls with
 * fuzzed request numbers, argument pointers and struct hmm_dmirror_cmd
 * fields (addr, ptr, npages; cpages and faults are outputs) against memory
 * areas it owns: private, read-only, PROT_NONE, shared, mmap'd from the
 * device, and holes between them.  A model says which errors each request
 * may return (uhmm/dmirror.h, docs/COMPAT.md) and a shadow of every byte
 * says what READ must give and what WRITE must leave; anything else aborts.
 *
 * The bytecode is described in docs/FUZZING.md.  Each input ends by closing
 * every descriptor, uhmm_dmirror_shutdown() (the process's context goes:
 * the next input starts with a fresh one) and unmapping its areas.
 * FUZZ_DMIRROR_TRACE=1 prints each op.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/dmirror.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#define PG ((uintptr_t)4096)
#define NAREA 4
#define MAXP 64
#define NPOS 8
#define REGION ((uintptr_t)0x210000000000ull)
#define STRIDE ((uintptr_t)4 << 20)
#define NFD 4
#define MAX_OPS 40
#define SCRATCH_PAGES 80

/* The kernel's uapi (lib/test_hmm_uapi.h). */
struct hmm_dmirror_cmd {
	uint64_t addr, ptr, npages, cpages, faults;
};
#define REQ(nr) _IOWR('H', (nr), struct hmm_dmirror_cmd)

enum {
	A_OK = 1u << 0, A_EINVAL = 1u << 1, A_EFAULT = 1u << 2, A_EPERM = 1u << 3,
	A_ENOMEM = 1u << 4, A_EBUSY = 1u << 5, A_EIO = 1u << 6, A_EBADF = 1u << 7,
	A_ENOENT = 1u << 8, A_EOPNOTSUPP = 1u << 9, A_ENODEV = 1u << 10, A_ENOTTY = 1u << 11,
};

static uint32_t bit_of(int e)
{
	switch (e) {
	case 0: return A_OK;
	case EINVAL: return A_EINVAL;
	case EFAULT: return A_EFAULT;
	case EPERM: return A_EPERM;
	case ENOMEM: return A_ENOMEM;
	case EBUSY: return A_EBUSY;
	case EIO: return A_EIO;
	case EBADF: return A_EBADF;
	case ENOENT: return A_ENOENT;
	case EOPNOTSUPP: return A_EOPNOTSUPP;
	case ENODEV: return A_ENODEV;
	case ENOTTY: return A_ENOTTY;
	default: return 1u << 31;
	}
}

#define FUZZ_NAME "fuzz_dmirror"
#include "fuzz_util.h"

/* e: a positive errno or 0. */
#define CHECK(what, e, allowed)                                                   \
	do {                                                                      \
		int e_ = (e);                                                     \
		uint32_t al_ = (allowed);                                         \
		if (!(bit_of(e_) & al_))                                          \
			die("%s: %d (%s), allowed mask 0x%x (line %d)", (what), e_, \
			    e_ ? strerror(e_) : "ok", al_, __LINE__);             \
	} while (0)

static const uint8_t *in_p;
static size_t in_n;

static uint8_t get8(void)
{
	if (!in_n)
		return 0;
	in_n--;
	return *in_p++;
}

/* ---- areas ------------------------------------------------------------------ */

enum { T_HOLE, T_PRIV, T_SHARED, T_DEVPRIV, T_DEVSHARED };

struct area {
	int type;           /* T_HOLE: empty slot */
	char *base;
	size_t np;
	uint8_t prot[MAXP]; /* PROT_* */
	uint8_t mapped[MAXP];
	uint8_t excl[MAXP]; /* bit d: EXCLUSIVE for device d succeeded here */
	uint8_t *shadow;
};

static struct area g_area[NAREA];
static int g_fd[NFD] = { -1, -1, -1, -1 };
static int g_fdnum[NFD];  /* device number of the descriptor */
static uint8_t *g_scratch; /* unmanaged, ours: where ptr usually points */

/* Page @a: its area and page index, or NULL (a hole). */
static struct area *area_of(uintptr_t a, size_t *pg)
{
	for (int i = 0; i < NAREA; i++) {
		struct area *r = &g_area[i];
		if (r->type != T_HOLE && a >= (uintptr_t)r->base &&
		    a < (uintptr_t)r->base + r->np * PG && r->mapped[(a - (uintptr_t)r->base) / PG]) {
			*pg = (a - (uintptr_t)r->base) / PG;
			return r;
		}
	}
	return NULL;
}

struct summary {
	bool hole, none, ro, notpriv, excl_any;
	bool shared; /* (notpriv, and not a private mapping of the device) */
};

static struct summary summarise(uintptr_t a, size_t n, int devnum)
{
	struct summary s = { 0 };
	for (size_t i = 0; i < n; i++) {
		size_t pg;
		struct area *r = area_of(a + i * PG, &pg);
		if (!r) {
			s.hole = true;
			continue;
		}
		if (!(r->prot[pg] & PROT_READ))
			s.none = true;
		else if (!(r->prot[pg] & PROT_WRITE))
			s.ro = true;
		if (r->type != T_PRIV)
			s.notpriv = true;
		if (r->type != T_PRIV && r->type != T_DEVPRIV)
			s.shared = true;
		if (r->excl[pg] & (1u << devnum))
			s.excl_any = true;
	}
	return s;
}

static void shadow_rw(uintptr_t a, size_t n, uint8_t *buf, bool to_shadow)
{
	for (size_t i = 0; i < n; i++) {
		size_t pg;
		struct area *r = area_of(a + i * PG, &pg);
		if (!r)
			die("model: shadow of a hole");
		if (to_shadow)
			memcpy(r->shadow + pg * PG, buf + i * PG, PG);
		else
			memcpy(buf + i * PG, r->shadow + pg * PG, PG);
	}
}

/* The pages of [a, a + n) that are readable now must hold the shadow. */
static void verify(uintptr_t a, size_t n, const char *why)
{
	for (size_t i = 0; i < n; i++) {
		size_t pg;
		struct area *r = area_of(a + i * PG, &pg);
		if (!r || !(r->prot[pg] & PROT_READ))
			continue;
		const uint8_t *m = (const uint8_t *)r->base + pg * PG;
		if (memcmp(m, r->shadow + pg * PG, PG) != 0) {
			size_t k = 0;
			while (m[k] == r->shadow[pg * PG + k])
				k++;
			die("%s: area %d page %zu byte %zu is 0x%02x, expected 0x%02x", why,
			    (int)(r - g_area), pg, k, m[k], r->shadow[pg * PG + k]);
		}
	}
}

static uintptr_t pos_addr(int pos)
{
	return REGION + (uintptr_t)pos * STRIDE;
}

static bool pos_used(uintptr_t at)
{
	for (int i = 0; i < NAREA; i++)
		if (g_area[i].type != T_HOLE && (uintptr_t)g_area[i].base == at)
			return true;
	return false;
}

static void area_reset_if_empty(struct area *r)
{
	for (size_t k = 0; k < r->np; k++)
		if (r->mapped[k])
			return;
	r->type = T_HOLE;
}


/* ---- ops ---------------------------------------------------------------------- */

static void op_area(void)
{
	struct area *r = &g_area[get8() % NAREA];
	uint8_t t = get8(), bn = get8(), pos = get8();
	if (r->type != T_HOLE)
		return;
	uintptr_t at = 0;
	for (int k = 0; k < NPOS && !at; k++)
		if (!pos_used(pos_addr((pos + k) % NPOS)))
			at = pos_addr((pos + k) % NPOS);
	size_t np = 1 + bn % MAXP;
	int type = 1 + t % 4;
	void *p;
	int prot = PROT_READ | PROT_WRITE;
	if (type == T_DEVPRIV || type == T_DEVSHARED) {
		/* The device's own mmap (needs an open descriptor). */
		int fd = g_fd[(t >> 2) % NFD];
		if (fd < 0)
			return;
		p = mmap((void *)at, np * PG, prot,
			 (type == T_DEVSHARED ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE, fd, 0);
	} else {
		p = mmap((void *)at, np * PG, prot,
			 (type == T_SHARED ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS |
				 MAP_FIXED_NOREPLACE,
			 -1, 0);
	}
	if (p == MAP_FAILED || p != (void *)at)
		die("mmap of an area at %#lx: %s", (unsigned long)at, strerror(errno));
	r->type = type;
	r->base = p;
	r->np = np;
	memset(r->mapped, 1, np);
	memset(r->prot, prot, np);
	memset(r->excl, 0, np);
	memset(r->shadow, 0, np * PG);
	if (t & 0x40) {
		for (size_t i = 0; i < np * PG; i += 1 + t % 61)
			r->shadow[i] = (uint8_t)(i * 7 + t);
		memcpy(p, r->shadow, np * PG);
	}
	trace("area %d type %d at %p np %zu", (int)(r - g_area), type, p, np);
}

static void op_open(void)
{
	uint8_t b = get8();
	int k = b % NFD;
	int dn = (b >> 2) % 6; /* 4, 5: not one of ours */
	if (g_fd[k] >= 0)
		return;
	char path[32];
	snprintf(path, sizeof(path), "/dev/hmm_dmirror%d", dn);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	int e = fd < 0 ? errno : 0;
	trace("open %s = %d (%d)", path, fd, e);
	if (dn < 2) {
		CHECK("open dmirror0/1", e, A_OK);
	} else if (dn < 4) {
		/* Coherent simdevs (issue 19): they open; the model covers
		 * the private devices only, so the file is closed again. */
		CHECK("open dmirror2/3", e, A_OK);
		if (fd >= 0)
			close(fd);
		return;
	} else {
		CHECK("open dmirror4/5 (not emulated)", e, A_ENOENT);
	}
	if (fd >= 0) {
		g_fd[k] = fd;
		g_fdnum[k] = dn;
	}
}

static void op_close_dup(void)
{
	uint8_t b = get8();
	int k = b % NFD, k2 = (b >> 2) % NFD;
	if (g_fd[k] < 0)
		return;
	if (b & 0x80) {
		trace("close fd %d", g_fd[k]);
		if (close(g_fd[k]))
			die("close: %s", strerror(errno));
		g_fd[k] = -1;
		return;
	}
	if (g_fd[k2] >= 0)
		return;
	int nfd = (b & 0x40) ? dup3(g_fd[k], 200 + k2, O_CLOEXEC) : dup(g_fd[k]);
	trace("dup fd %d = %d", g_fd[k], nfd);
	if (nfd < 0)
		die("dup: %s", strerror(errno));
	g_fd[k2] = nfd;
	g_fdnum[k2] = g_fdnum[k];
}

/* An address and a page count from 3 bytes (hostile now and then). */
struct cmdarg {
	uint64_t addr, npages;
	bool shape_bad; /* unaligned, zero, wrapping, too large */
	bool huge;      /* 2^36 pages: accepted, then fails somewhere */
};

static struct cmdarg cmdarg_pick(void)
{
	uint8_t ba = get8(), bo = get8(), bn = get8(), mode = get8();
	struct area *r = &g_area[ba % NAREA];
	uintptr_t base = r->type != T_HOLE ? (uintptr_t)r->base : pos_addr(ba % NPOS);
	struct cmdarg c;
	c.addr = base + (uint64_t)((long)(bo % 72) - 4) * PG;
	c.npages = 1 + bn % 70;
	c.shape_bad = false;
	c.huge = false;
	switch (mode % 16) {
	case 0: c.addr += 1 + (mode >> 4) * 8; c.shape_bad = true; break;
	case 1: c.npages = 0; c.shape_bad = true; break;
	case 2: c.npages = ((uint64_t)1 << 36) + 1 + (mode >> 4); c.shape_bad = true; break;
	case 5: if (mode & 0x80) { c.npages = (uint64_t)1 << 36; c.huge = true; } break;
	case 3: c.npages = UINT64_MAX / PG + 1 - (mode >> 4); c.shape_bad = true; break; /* wraps */
	case 4: c.npages = (uint64_t)1 << 14; break; /* large: mostly holes */
	default: break;
	}
	return c;
}

/* What ptr is: our scratch (writable, unmanaged), or something hostile. */
enum { P_SCRATCH, P_NULL, P_HOLE, P_AREA, P_SCRATCH_END };

static void op_ioctl(void)
{
	uint8_t b = get8();
	int k = b % NFD;
	unsigned nr = (b >> 2) % 10; /* 9: READ_UNLOCKABLE or unknown (10) */
	uint8_t how = get8(), pb = get8();
	if (nr == 9 && (how & 0x40)) /* (the inputs of tests/fuzz/regress keep their ops) */
		nr = 10;
	struct cmdarg c = cmdarg_pick();
	int fd = g_fd[k];
	if (fd < 0)
		return;
	int dn = g_fdnum[k];
	unsigned long req = REQ(nr);
	uint32_t allowed_req = 0;
	switch (how % 16) {
	case 0: req = _IOWR('h', nr, struct hmm_dmirror_cmd); allowed_req = A_EINVAL; break;
	case 1: req = _IOR('H', nr, struct hmm_dmirror_cmd); allowed_req = A_EINVAL; break;
	case 2: req = _IOWR('H', nr, uint64_t); allowed_req = A_EINVAL; break;
	default: break;
	}
	if (nr > 9)
		allowed_req = A_EINVAL;
	/* ptr */
	int pk = (pb % 8 < 4) ? P_SCRATCH : pb % 8 - 3;
	uintptr_t ptr;
	size_t plen = nr == 4 ? (size_t)c.npages : (size_t)c.npages * PG; /* bytes */
	struct area *pa = &g_area[(pb >> 4) % NAREA];
	switch (pk) {
	case P_NULL: ptr = 0; break;
	case P_HOLE: ptr = pos_addr(NPOS - 1) + PG * 16; break;
	case P_AREA:
		ptr = pa->type != T_HOLE ? (uintptr_t)pa->base + (pb >> 6) * PG : 0;
		break;
	case P_SCRATCH_END: ptr = (uintptr_t)g_scratch + SCRATCH_PAGES * PG - PG; break;
	default: ptr = (uintptr_t)g_scratch; break;
	}
	if (pk == P_HOLE && pos_used(pos_addr(NPOS - 1)))
		return;
	/* Can ptr take plen bytes (write) / give them (read)? */
	bool ptr_w = false, ptr_r = false, ptr_area = false;
	if (ptr && plen <= (size_t)SCRATCH_PAGES * PG) {
		if (ptr >= (uintptr_t)g_scratch && ptr + plen <= (uintptr_t)g_scratch + SCRATCH_PAGES * PG) {
			ptr_w = ptr_r = true;
		} else if (pk == P_AREA) {
			ptr_w = ptr_r = true;
			for (size_t i = 0; i < (plen + PG - 1) / PG; i++) {
				size_t pg;
				struct area *r = area_of(ptr + i * PG, &pg);
				if (!r || !(r->prot[pg] & PROT_READ))
					ptr_w = ptr_r = false;
				else if (!(r->prot[pg] & PROT_WRITE))
					ptr_w = false;
			}
		}
	}
	if (pk == P_AREA && !ptr)
		return;
	/* ptr inside an area, whatever the length: a request that fails
	 * part-way may have written its first chunks there (a huge SNAPSHOT
	 * writes chunk by chunk, as the kernel's does, until a hole). */
	ptr_area = pk == P_AREA;
	/* The argument block itself: ours, or hostile. */
	static struct hmm_dmirror_cmd cmdbuf;
	struct hmm_dmirror_cmd *cmd = &cmdbuf;
	void *argp = cmd;
	uint32_t allowed_arg = 0;
	if (how % 16 == 3) {
		argp = NULL;
		allowed_arg = A_EFAULT;
	} else if (how % 16 == 4) {
		argp = (void *)(pos_addr(NPOS - 1) + PG * 8);
		if (pos_used(pos_addr(NPOS - 1)))
			return;
		allowed_arg = A_EFAULT;
	}
	*cmd = (struct hmm_dmirror_cmd){ .addr = c.addr, .ptr = ptr, .npages = c.npages,
					 .cpages = 0xdead, .faults = 0xbeef };
	if (nr == 8) /* FLAGS: npages is the flag word */
		cmd->npages = how >> 7;
	struct hmm_dmirror_cmd before = *cmd;

	/* What the request may answer. */
	uint32_t allowed;
	struct summary s = { 0 };
	bool data_check = false;
	/* FLAGS: the driver checks addr and npages (the flag word) as for
	 * any request, before the number: 0 fails. */
	bool flags_bad = (c.addr & (PG - 1)) || c.addr >= c.addr + (cmd->npages << 12);
	if (allowed_arg) {
		/* The block cannot be read: -EFAULT first, whatever the
		 * request (the driver copies it in before anything). */
		allowed = allowed_arg;
	} else if (allowed_req) {
		allowed = allowed_req;
	} else if (nr == 8) {
		allowed = flags_bad ? A_EINVAL : A_OK;
	} else if (c.shape_bad) {
		allowed = A_EINVAL;
	} else if (nr == 7) {
		allowed = A_OK | A_EIO;
	} else if (c.huge) {
		/* 2^48 bytes: the bounce buffer, the first hole or the end
		 * of the address space stops it.  (CHECK_EXCLUSIVE would
		 * walk 2^36 pages one by one, as the kernel's does.) */
		if (nr == 6)
			return;
		allowed = A_ENOMEM | A_EFAULT | A_EINVAL | A_EPERM | A_ENOENT;
	} else {
		size_t n = (size_t)c.npages;
		s = summarise(c.addr, n, dn);
		uint32_t pe = 0; /* ptr's part */
		switch (nr) {
		case 0: /* READ */
		case 9: /* READ_UNLOCKABLE: no userfaultfd of ours here: as READ */
			if (s.hole || s.none)
				allowed = A_EFAULT;
			else
				allowed = ptr_w ? A_OK : A_EFAULT, data_check = ptr_w;
			if (n > SCRATCH_PAGES)
				allowed |= A_ENOMEM | A_EFAULT;
			break;
		case 1: /* WRITE */
			if (!ptr_r)
				allowed = A_EFAULT;
			else if (s.hole || s.none)
				allowed = A_EFAULT | (s.ro ? A_EPERM : 0);
			else if (s.ro)
				allowed = A_EPERM;
			else
				allowed = A_OK, data_check = true;
			break;
		case 2: /* MIGRATE_TO_DEV */
			pe = ptr_w ? 0 : A_EFAULT;
			if (s.hole || s.none)
				allowed = A_EINVAL;
			else if (s.shared)
				allowed = A_ENOENT | A_ENOMEM | pe;
			else if (s.notpriv) /* a private file mapping: adopted,
					     * its copied-on-write pages migrate */
				allowed = A_ENOENT | A_ENOMEM | (pe ? pe : A_OK), data_check = ptr_w;
			else if (s.ro) /* not migrated, unless there already */
				allowed = A_ENOENT | A_ENOMEM | (pe ? pe : A_OK), data_check = ptr_w;
			else /* -ENOENT: pages on the other device are not
			      * selected (migrate_vma selects system pages) */
				allowed = (pe ? pe : A_OK) | A_ENOMEM | A_ENOENT, data_check = ptr_w;
			break;
		case 3: /* MIGRATE_TO_SYS */
			allowed = (s.hole || s.none) ? A_EINVAL : A_OK | A_ENOMEM;
			break;
		case 4: /* SNAPSHOT */
			allowed = ptr_w ? A_OK : A_EFAULT;
			if (n > SCRATCH_PAGES * PG)
				allowed |= A_ENOMEM;
			data_check = ptr_w;
			break;
		case 5: /* EXCLUSIVE */
			pe = ptr_w ? 0 : A_EFAULT;
			if (s.hole || s.notpriv)
				allowed = A_EFAULT | A_EOPNOTSUPP | (s.ro || s.none ? A_EPERM : 0) |
					  /* a private file mapping is adopted */
					  (!s.hole && !s.shared && !s.none && !s.ro
						   ? (pe ? pe : A_OK) | A_EBUSY | A_ENOMEM
						   : 0);
			else if (s.none)
				allowed = A_EPERM | A_EFAULT;
			else if (s.ro) /* -EFAULT: read-only memory is never registered */
				allowed = A_EPERM | A_EFAULT;
			else
				allowed = (pe ? pe : A_OK) | A_EBUSY | A_ENOMEM, data_check = ptr_w;
			break;
		default: /* CHECK_EXCLUSIVE */
			allowed = A_OK | (s.excl_any ? A_EPERM : 0);
			break;
		}
	}
	uint8_t *expect = NULL;
	size_t n = (size_t)c.npages;
	if (data_check && nr != 4) {
		expect = malloc(n * PG);
		if (nr == 1)
			memcpy(expect, (void *)ptr, n * PG);
		else
			shadow_rw(c.addr, n, expect, false);
	}
	int r = ioctl(fd, req, argp);
	int e = r < 0 ? errno : 0;
	trace("ioctl fd %d (dev %d) nr %u how %u addr %#" PRIx64 " ptr %#lx npages %#" PRIx64
	      " = %d (%s) cpages %" PRIu64 " faults %" PRIu64,
	      fd, dn, nr, how % 16, c.addr, (unsigned long)ptr, c.npages, r, strerror(e),
	      cmd->cpages, cmd->faults);
	if (r != 0 && r != -1)
		die("ioctl returned %d", r);
	CHECK("ioctl", e, allowed);
	if (e && memcmp(cmd, &before, sizeof(before)) != 0)
		die("a failed request wrote the command back");
	if (!e && nr != 8 && nr != 7 && nr != 6 && nr != 3 && cmd->cpages != c.npages)
		die("cpages %" PRIu64 " for npages %" PRIu64, cmd->cpages, c.npages);
	if (!e && nr == 3 && cmd->cpages > c.npages)
		die("MIGRATE_TO_SYS: cpages %" PRIu64 " > npages", cmd->cpages);
	if (!e && (nr == 6 || nr == 8) && cmd->cpages != 0)
		die("cpages %" PRIu64 " for a request that handles no page", cmd->cpages);
	if (!e && (cmd->addr != before.addr || cmd->ptr != before.ptr))
		die("the request changed addr/ptr");
	/* The data. */
	if (!e && data_check) {
		if (nr == 1) {
			shadow_rw(c.addr, n, expect, true);
			verify(c.addr, n, "after WRITE");
		} else if (nr == 4) {
			const uint8_t *bytes = (const uint8_t *)ptr;
			for (size_t i = 0; i < n; i++) {
				size_t pg;
				struct area *ar = area_of(c.addr + i * PG, &pg);
				if (!ar && bytes[i] != 0xFF)
					die("SNAPSHOT: hole page %zu reads %#x", i, bytes[i]);
				/* PROT_NONE reads ERROR, as the kernel's
				 * (hmm_range_fault fills HMM_PFN_ERROR for a
				 * VMA without VM_READ). */
				if (ar && bytes[i] == 0xFF && (ar->prot[pg] & PROT_READ))
					die("SNAPSHOT: mapped page %zu reads ERROR", i);
				if (ar && bytes[i] != 0xFF && (bytes[i] & 0x02) &&
				    !(ar->prot[pg] & PROT_WRITE))
					die("SNAPSHOT: page %zu WRITE on read-only memory", i);
			}
		} else {
			if (memcmp((void *)ptr, expect, n * PG) != 0) {
				size_t q = 0;
				while (((uint8_t *)ptr)[q] == expect[q])
					q++;
				die("request %u: device data differs at byte %zu (page %zu): %#x, "
				    "expected %#x",
				    nr, q, q / PG, ((uint8_t *)ptr)[q], expect[q]);
			}
		}
	}
	/* EXCLUSIVE: the pages may be held from now on, even when the
	 * request failed afterwards (ptr not writable: the kernel's too). */
	if (nr == 5 && !allowed_req && !allowed_arg && !c.shape_bad && !c.huge)
		for (size_t i = 0; i < n; i++) {
			size_t pg;
			struct area *ar = area_of(c.addr + i * PG, &pg);
			if (ar)
				ar->excl[pg] |= (uint8_t)(1u << dn);
		}
	if (nr == 1 && e && !allowed_req && !allowed_arg && !c.shape_bad && ptr_r) {
		/* A failed WRITE may have written some pages (those the mirror
		 * could reach before it met the bad one), each one whole. */
		uint8_t *src = malloc(n * PG);
		memcpy(src, (void *)ptr, n * PG);
		for (size_t i = 0; i < n; i++) {
			size_t pg;
			struct area *ar = area_of(c.addr + i * PG, &pg);
			if (!ar || !(ar->prot[pg] & PROT_READ))
				continue;
			const uint8_t *m = (const uint8_t *)ar->base + pg * PG;
			if (memcmp(m, ar->shadow + pg * PG, PG) == 0)
				continue;
			if (memcmp(m, src + i * PG, PG) != 0)
				die("failed WRITE left page %zu neither old nor new", i);
			memcpy(ar->shadow + pg * PG, m, PG);
		}
		free(src);
	}
	/* ptr inside an area: take what is there now as the truth (a failed
	 * request may have written part of it). */
	if (ptr_area) {
		for (size_t i = 0; i < (plen + PG - 1) / PG; i++) {
			size_t pg;
			struct area *ar = area_of(ptr + i * PG, &pg);
			if (!ar)
				break; /* nothing is written past a hole */
			if (ar->prot[pg] & PROT_READ)
				memcpy(ar->shadow + pg * PG, ar->base + pg * PG, PG);
		}
	}
	free(expect);
}

static void op_cpu(void)
{
	struct area *r = &g_area[get8() % NAREA];
	uint8_t pg = get8(), v = get8();
	if (r->type == T_HOLE)
		return;
	size_t p = pg % r->np;
	if (!r->mapped[p] || !(r->prot[p] & PROT_READ))
		return;
	if ((v & 1) && (r->prot[p] & PROT_WRITE)) {
		size_t off = (size_t)v * 13 % PG;
		trace("cpu write area %d page %zu", (int)(r - g_area), p);
		memset(r->base + p * PG + off, v, PG - off);
		memset(r->shadow + p * PG + off, v, PG - off);
	} else {
		trace("cpu read area %d page %zu", (int)(r - g_area), p);
		verify((uintptr_t)r->base + p * PG, 1, "cpu read");
	}
	r->excl[p] = 0; /* the CPU took it back */
}

static void op_mm(void)
{
	struct area *r = &g_area[get8() % NAREA];
	uint8_t bo = get8(), bn = get8(), what = get8();
	if (r->type == T_HOLE)
		return;
	size_t o = bo % r->np, n = 1 + bn % (r->np - o);
	for (size_t i = o; i < o + n; i++)
		if (!r->mapped[i])
			return;
	char *a = r->base + o * PG;
	int rc;
	switch (what % 4) {
	case 0: { /* mprotect: the shim tells the mirrors first */
		static const int prots[4] = { PROT_READ, PROT_NONE, PROT_READ | PROT_WRITE,
					      PROT_READ | PROT_WRITE };
		int prot = prots[(what >> 2) % 4];
		rc = mprotect(a, n * PG, prot);
		trace("mprotect area %d pages %zu+%zu %d = %d", (int)(r - g_area), o, n, prot, rc);
		if (rc)
			die("mprotect: %s", strerror(errno));
		memset(r->prot + o, prot, n);
		break;
	}
	case 1: /* discard: private pages read zeros (shared ones refill from the file) */
		if (r->type != T_PRIV)
			return;
		rc = madvise(a, n * PG, MADV_DONTNEED);
		trace("madvise area %d pages %zu+%zu = %d", (int)(r - g_area), o, n, rc);
		if (rc)
			die("madvise: %s", strerror(errno));
		memset(r->shadow + o * PG, 0, n * PG);
		memset(r->excl + o, 0, n);
		break;
	case 2: /* punch a hole */
		rc = munmap(a, n * PG);
		trace("munmap area %d pages %zu+%zu = %d", (int)(r - g_area), o, n, rc);
		if (rc)
			die("munmap: %s", strerror(errno));
		memset(r->mapped + o, 0, n);
		memset(r->excl + o, 0, n);
		area_reset_if_empty(r);
		break;
	default: /* the C API's own checks */
		{
			struct uhmm_dmirror_cmd cc = { 0 };
			CHECK("uhmm_dmirror_cmd(NULL handle)", -uhmm_dmirror_cmd(NULL, 0, &cc), A_EBADF);
			uhmm_dmirror *h = NULL;
			CHECK("uhmm_dmirror_open(9)", -uhmm_dmirror_open(9, &h), A_EINVAL);
			CHECK("uhmm_dmirror_open(out NULL)", -uhmm_dmirror_open(0, NULL), A_EINVAL);
			/* (Devices 2 and 3 are coherent simdevs: they open.) */
			CHECK("uhmm_dmirror_open(4)", -uhmm_dmirror_open(4, &h), A_EINVAL);
			int e = -uhmm_dmirror_open((what >> 2) & 1, &h);
			CHECK("uhmm_dmirror_open", e, A_OK);
			CHECK("uhmm_dmirror_cmd(cmd NULL)", -uhmm_dmirror_cmd(h, 0, NULL), A_EFAULT);
			void *p = NULL;
			CHECK("uhmm_dmirror_map(len 0)",
			      -uhmm_dmirror_map(h, NULL, 0, PROT_READ, MAP_PRIVATE, &p), A_EINVAL);
			CHECK("uhmm_dmirror_map(no type)",
			      -uhmm_dmirror_map(h, NULL, PG, PROT_READ, 0, &p), A_EINVAL);
			CHECK("uhmm_dmirror_close", -uhmm_dmirror_close(h), A_OK);
			trace("C API checks");
		}
		break;
	}
}

/* ---- per input ------------------------------------------------------------------- */

static void cleanup(void)
{
	g_opno = 9999;
	trace("cleanup");
	for (int k = 0; k < NFD; k++) {
		if (g_fd[k] >= 0 && close(g_fd[k]))
			die("close: %s", strerror(errno));
		g_fd[k] = -1;
	}
	/* Every page home; then the data must be what the shadow says. */
	CHECK("uhmm_dmirror_shutdown", -uhmm_dmirror_shutdown(), A_OK);
	for (int i = 0; i < NAREA; i++) {
		struct area *r = &g_area[i];
		if (r->type == T_HOLE)
			continue;
		for (size_t k = 0; k < r->np; k++) {
			if (!r->mapped[k])
				continue;
			if (!(r->prot[k] & PROT_WRITE) && mprotect(r->base + k * PG, PG, PROT_READ | PROT_WRITE))
				die("mprotect: %s", strerror(errno));
			r->prot[k] = PROT_READ | PROT_WRITE;
			verify((uintptr_t)r->base + k * PG, 1, "final check");
			munmap(r->base + k * PG, PG);
		}
		r->type = T_HOLE;
	}
}

typedef void (*op_fn)(void);
static const op_fn ops[] = {
	op_open, op_area, op_ioctl, op_ioctl, op_ioctl, op_ioctl, op_cpu, op_mm, op_close_dup,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		g_trace = getenv("FUZZ_DMIRROR_TRACE") != NULL;
		/* Small devices: running out of device memory is reachable. */
		setenv("UHMM_DMIRROR_MEM_MB", "2", 0);
		g_scratch = mmap(NULL, (SCRATCH_PAGES + 1) * PG, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (g_scratch == MAP_FAILED)
			abort();
		/* A guard page: ptr running off the end meets PROT_NONE. */
		if (mprotect(g_scratch + SCRATCH_PAGES * PG, PG, PROT_NONE))
			abort();
		for (int i = 0; i < NAREA; i++)
			g_area[i].shadow = malloc(MAXP * PG);
		init = true;
	}
	in_p = data;
	in_n = size;
	for (g_opno = 0; g_opno < MAX_OPS && in_n; g_opno++)
		ops[get8() % (sizeof(ops) / sizeof(ops[0]))]();
	cleanup();
	return 0;
}
