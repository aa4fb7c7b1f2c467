/* SPDX-License-Identifier: MIT */
/*
 * dm_cmd.c - the requests of the dmirror device, on uhmm.
 *
 * A handle is a mirror (the kernel's struct dmirror): its device page
 * table (dm_pt) holds range-fault entries, filled by mirror_fault() with
 * the read_begin / range_fault / lock / read_retry pattern of
 * uhmm/mirror.h and emptied by dm_invalidate() under the same lock.
 *
 * How the device reaches a page, by its entry:
 *   DEVICE (a frame of its simdev)  the copy engine, under pt_lock: the
 *       frame cannot change hands while we hold it, because moving it
 *       invalidates first, and the invalidation waits for pt_lock.
 *   EXCLUSIVE (a reserve slot)      memcpy at the slot, under pt_lock, for
 *       the same reason (a revocation invalidates before the slot moves).
 *   system page                     through the process's own address with
 *       process_vm_readv/writev, with NO lock held: such an access can
 *       fault into uhmm's service thread, which may be running our
 *       invalidate callback at that moment (waiting for pt_lock).  The
 *       kernel's checks apply (no right the CPU lacks, copy-on-write as a
 *       CPU write), and memory that vanished gives EFAULT, not a crash: the
 *       entries are dropped and the next round faults them again, which
 *       reports the hole as the kernel would.
 *
 * Locks: d->use_lock (read; RELEASE writes), then pt_lock.  Nothing
 * touches process memory or calls uhmm with pt_lock held except the
 * copy engine (device memory and our own bounce buffers only).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat/dmirror_internal.h"

#define PS DM_PAGE_SIZE
/* A racer that keeps unmapping what we read could make us loop: after
 * this many rounds give up as if the memory were gone. */
#define MAX_ROUNDS 1000

static inline uintptr_t min_u(uintptr_t a, uintptr_t b)
{
	return a < b ? a : b;
}

void dm_invalidate(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
		   void *priv)
{
	uhmm_dmirror *h = priv;
	pthread_mutex_lock(&h->pt_lock);
	/* Every reason drops the entries: REMAP included (the next access
	 * faults them in at the new place), MIGRATE to our own device too
	 * (the read-back after a migration fills them from a snapshot). */
	dm_pt_clear(&h->pt, ev->start, ev->end);
	pthread_mutex_unlock(&h->pt_lock);
}

/* ---- filling the mirror ---- */

/*
 * One round of range faults over [start, end) (the kernel's
 * dmirror_fault): @rf_flags as uhmm_range_fault.  With @device_only (the
 * read-back of a migration), nothing is faulted and only pages on this
 * device are entered.
 */
static int mirror_fault(uhmm_dmirror *h, uhmm_device *dev, uintptr_t start,
			uintptr_t end, uint32_t rf_flags, bool device_only)
{
	uint64_t *ent = uhmm__umem_malloc(DM_CHUNK_PAGES * sizeof(*ent));
	if (!ent)
		return -ENOMEM;
	int err = 0;
	for (uintptr_t a = start; a < end && !err;) {
		uintptr_t next = min_u(end, a + DM_CHUNK_PAGES * PS);
		struct uhmm_range_req req = {
			.notifier = h->n, .start = a, .end = next, .flags = rf_flags,
			.device = dev, .entries = ent,
		};
		err = uhmm_range_fault(h->ctx, &req);
		if (err)
			break;
		pthread_mutex_lock(&h->pt_lock);
		if (uhmm_notifier_read_retry(h->n, req.notifier_seq)) {
			pthread_mutex_unlock(&h->pt_lock);
			continue; /* invalidated meanwhile: this chunk again */
		}
		for (size_t i = 0; i < (next - a) / PS && !err; i++) {
			uint64_t e = ent[i];
			/* (This device's memory: private, or coherent in place.) */
			if (!(e & UHMM_RE_VALID) ||
			    (device_only && !(e & (UHMM_RE_DEVICE | UHMM_RE_COHERENT))))
				continue;
			err = dm_pt_set(&h->pt, a + i * PS, e);
		}
		pthread_mutex_unlock(&h->pt_lock);
		a = next;
	}
	uhmm__umem_free(ent);
	return err;
}

/* ---- device accesses through the mirror ---- */

enum acc { ACC_READ, ACC_WRITE, ACC_READ_DEVICE_ONLY };

/* Queue a device copy of one page, merging with the previous one when
 * both the frames and the buffer are contiguous. */
static void copy_add(struct uhmm_copy *c, size_t *nc, void *sys, uint64_t dpfn,
		     uint16_t dir)
{
	if (*nc) {
		struct uhmm_copy *l = &c[*nc - 1];
		if (l->dpfn + l->npages == dpfn &&
		    (char *)l->sys + (size_t)l->npages * PS == (char *)sys) {
			l->npages++;
			return;
		}
	}
	c[(*nc)++] = (struct uhmm_copy){ .sys = sys, .dpfn = dpfn, .npages = 1,
					 .dir = dir };
}

static int copy_run(uhmm_device *dev, struct uhmm_copy *c, size_t nc)
{
	if (!nc)
		return 0;
	const struct uhmm_device_ops *ops = uhmm_device_ops_of(dev);
	void *priv = uhmm_device_priv(dev);
	uhmm_fence_t f;
	if (!ops)
		return -EIO;
	int err = ops->copy_submit(priv, c, nc, &f);
	if (!err)
		err = ops->copy_wait(priv, f);
	return err ? -EIO : 0;
}

/*
 * Access pages *done.. of [start, end) through the mirror, between the
 * process and @buf (page i of the range <-> buf + i * PS).  Advances *done
 * past what was accessed.  Returns 0 when all is done, -ENOENT at the first
 * page without a suitable entry (the caller faults from *done), or an
 * error.  ACC_READ_DEVICE_ONLY takes only entries of pages on this device.
 */
static int mirror_access(uhmm_dmirror *h, uhmm_device *dev, uintptr_t start,
			 uintptr_t end, char *buf, size_t *done, enum acc acc)
{
	size_t n = (end - start) / PS;
	struct uhmm_copy *c = uhmm__umem_malloc(DM_CHUNK_PAGES * sizeof(*c));
	uint8_t *sys = uhmm__umem_malloc(DM_CHUNK_PAGES);
	int err = (!c || !sys) ? -ENOMEM : 0;
	while (!err && *done < n) {
		size_t first = *done, lim = first + DM_CHUNK_PAGES < n ? first + DM_CHUNK_PAGES : n;
		size_t i = first, nc = 0;
		bool missing = false;
		pthread_mutex_lock(&h->pt_lock);
		for (; i < lim; i++) {
			uintptr_t va = start + i * PS;
			char *b = buf + i * PS;
			uint64_t e = dm_pt_get(&h->pt, va);
			sys[i - first] = 0;
			if (!(e & UHMM_RE_VALID) || (acc == ACC_WRITE && !(e & UHMM_RE_WRITE)) ||
			    (acc == ACC_READ_DEVICE_ONLY &&
			     !(e & (UHMM_RE_DEVICE | UHMM_RE_COHERENT)))) {
				missing = true;
				break;
			}
			uint64_t pfn = e & UHMM_RE_DPFN_MASK;
			if (e & UHMM_RE_DEVICE) {
				copy_add(c, &nc, b, pfn, acc == ACC_WRITE ? UHMM_COPY_TO_DEVICE
									 : UHMM_COPY_FROM_DEVICE);
			} else if (e & UHMM_RE_EXCLUSIVE) {
				/* The device's own access to the page it holds. */
				void *slot = (void *)(uintptr_t)(pfn << DM_PAGE_SHIFT);
				if (acc == ACC_WRITE)
					memcpy(slot, b, PS);
				else
					memcpy(b, slot, PS);
			} else {
				sys[i - first] = 1;
			}
		}
		err = copy_run(dev, c, nc);
		pthread_mutex_unlock(&h->pt_lock);
		/* System pages, no lock held (see the top of the file). */
		for (size_t k = first; !err && k < i;) {
			if (!sys[k - first]) {
				k++;
				continue;
			}
			size_t j = k + 1;
			while (j < i && sys[j - first])
				j++;
			uintptr_t va = start + k * PS;
			int r = acc == ACC_WRITE ? dm_mem_write(va, buf + k * PS, (j - k) * PS)
						 : dm_mem_read(buf + k * PS, va, (j - k) * PS);
			if (r) {
				/* Gone or no longer allowed: forget these
				 * entries, fault again from here. */
				pthread_mutex_lock(&h->pt_lock);
				dm_pt_clear(&h->pt, va, start + j * PS);
				pthread_mutex_unlock(&h->pt_lock);
				i = k;
				missing = true;
				break;
			}
			k = j;
		}
		if (err)
			break;
		*done = i;
		if (missing)
			err = -ENOENT;
	}
	uhmm__umem_free(c);
	uhmm__umem_free(sys);
	return err;
}

/* ---- memory a userfaultfd of the program's own provides ---- */

/* VMAs of [start, end) that a userfaultfd registered in missing mode
 * ("um" in smaps' VmFlags): up to @max of them into @iv (start, end
 * pairs, clipped).  Returns how many, or -errno. */
static int uffd_vmas(uintptr_t start, uintptr_t end, uintptr_t (*iv)[2], int max)
{
	struct uhmm_lines f;
	int err = uhmm__lines_open(&f, "/proc/self/smaps");
	if (err)
		return err;
	char line[512];
	int n = 0;
	unsigned long lo = 0, hi = 0;
	bool in = false;
	while (n < max && uhmm__lines_next(&f, line, sizeof(line))) {
		unsigned long a, b;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3) {
			if (a >= end)
				break; /* sorted: the rest lies beyond */
			lo = a;
			hi = b;
			in = b > start;
			continue;
		}
		if (!in || strncmp(line, "VmFlags:", 8) != 0)
			continue;
		/* Two-letter flags, each preceded by a space. */
		for (const char *q = line + 8; (q = strstr(q, " um")) != NULL; q += 3) {
			if (q[3] == ' ' || q[3] == '\n' || q[3] == '\0') {
				iv[n][0] = lo > start ? lo : start;
				iv[n][1] = hi < end ? hi : end;
				n++;
				break;
			}
		}
	}
	uhmm__lines_close(&f);
	return n;
}

/*
 * Whether a range fault over [start, end) would meet a page that only a
 * userfaultfd of the program's own can provide: not present, not swapped,
 * not managed by uhmm (whose own userfaultfd serves its pages), in an area
 * registered for missing faults.  The kernel's READ and WRITE fault
 * without FAULT_FLAG_ALLOW_RETRY, and handle_userfault() refuses such a
 * fault (VM_FAULT_SIGBUS): the request fails with -EFAULT instead of
 * waiting for the program.  Only READ_UNLOCKABLE lets it wait.
 */
static bool uffd_would_block(uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0)
		return false;
	uintptr_t iv[16][2];
	int n = -1; /* smaps read only once a candidate page is found */
	bool blocks = false;
	uint64_t ent[64];
	for (uintptr_t a = start; a < end && !blocks;) {
		size_t k = min_u((end - a) / PS, 64);
		if (pread(pm, ent, k * 8, (off_t)(a / PS * 8)) != (ssize_t)(k * 8))
			break;
		for (size_t i = 0; i < k && !blocks; i++) {
			uintptr_t va = a + i * PS;
			struct uhmm_page_info pi;
			if ((ent[i] >> 62) & 3) /* present or swapped */
				continue;
			if (uhmm_page_query(ctx, (void *)va, &pi) == 0)
				continue; /* uhmm's */
			if (n < 0)
				n = uffd_vmas(start, end, iv, 16);
			if (n <= 0)
				goto out; /* no such area (or smaps unreadable) */
			for (int j = 0; j < n; j++)
				if (va >= iv[j][0] && va < iv[j][1])
					blocks = true;
		}
		a += k * PS;
	}
out:
	close(pm);
	return blocks;
}

/*
 * Access the whole range, faulting what the mirror lacks (the loop of the
 * kernel's dmirror_read/dmirror_write).  Counts fault rounds in *faults
 * (may be NULL).  @unlockable: the range fault may wait for a userfaultfd
 * of the program's (READ_UNLOCKABLE); otherwise such a page is -EFAULT.
 */
static int access_faulting(uhmm_dmirror *h, uhmm_device *dev, uintptr_t start,
			   uintptr_t end, char *buf, enum acc acc, uint64_t *faults,
			   bool unlockable)
{
	size_t done = 0;
	for (int round = 0;; round++) {
		int err = mirror_access(h, dev, start, end, buf, &done, acc);
		if (err != -ENOENT)
			return err;
		if (round >= MAX_ROUNDS)
			return -EFAULT;
		if (!unlockable && uffd_would_block(h->ctx, start + done * PS, end))
			return -EFAULT;
		err = mirror_fault(h, dev, start + done * PS, end,
				   acc == ACC_WRITE ? UHMM_RF_FAULT_WRITE : UHMM_RF_FAULT_READ,
				   false);
		if (err)
			return err;
		if (faults)
			(*faults)++;
	}
}

/* ---- requests ---- */

static int cmd_read(uhmm_dmirror *h, uhmm_device *dev, struct uhmm_dmirror_cmd *c,
		    bool unlockable)
{
	size_t size = c->npages * PS;
	char *buf = dm_bounce_alloc(size);
	if (!buf)
		return -ENOMEM;
	int err = access_faulting(h, dev, c->addr, c->addr + size, buf, ACC_READ, &c->faults,
				  unlockable);
	if (!err)
		err = dm_mem_write(c->ptr, buf, size);
	if (!err)
		c->cpages = c->npages;
	dm_bounce_free(buf, size);
	return err;
}

static int cmd_write(uhmm_dmirror *h, uhmm_device *dev, struct uhmm_dmirror_cmd *c)
{
	size_t size = c->npages * PS;
	char *buf = dm_bounce_alloc(size);
	if (!buf)
		return -ENOMEM;
	int err = dm_mem_read(buf, c->ptr, size);
	if (!err)
		err = access_faulting(h, dev, c->addr, c->addr + size, buf, ACC_WRITE,
				      &c->faults, false);
	if (!err)
		c->cpages = c->npages;
	dm_bounce_free(buf, size);
	return err;
}

/* The device reads [start, end) back after a migration or an exclusive
 * grab; @device_only: every page must be on this device (-ENOENT). */
static int read_back(uhmm_dmirror *h, uhmm_device *dev, struct uhmm_dmirror_cmd *c,
		     bool device_only)
{
	size_t size = c->npages * PS;
	uintptr_t start = c->addr, end = start + size;
	char *buf = dm_bounce_alloc(size);
	if (!buf)
		return -ENOMEM;
	int err;
	if (device_only) {
		size_t done = 0;
		err = mirror_fault(h, dev, start, end, UHMM_RF_SNAPSHOT, true);
		if (!err)
			err = mirror_access(h, dev, start, end, buf, &done, ACC_READ_DEVICE_ONLY);
	} else {
		err = access_faulting(h, dev, start, end, buf, ACC_READ, NULL, false);
	}
	if (!err)
		err = dm_mem_write(c->ptr, buf, size);
	if (!err)
		c->cpages = c->npages;
	dm_bounce_free(buf, size);
	return err;
}

/* The area [a, ...) starts in: -EINVAL for a hole or an unreadable area
 * (the kernel's vma_lookup + VM_READ check); sets *vend. */
static int chunk_vma(uintptr_t a, uintptr_t *vend)
{
	struct dm_vma v;
	int r = dm_vma_find(a, &v);
	if (r < 0)
		return r;
	if (r == 0 || v.start > a || !v.r)
		return -EINVAL;
	*vend = v.end;
	return 0;
}

/* Whether the page at @a is managed and on @dev (1), managed elsewhere
 * (0), or not managed (-EFAULT). */
static int page_on(uhmm_ctx *ctx, uintptr_t a, uhmm_device *dev)
{
	struct uhmm_page_info pi;
	int r = uhmm_page_query(ctx, (void *)a, &pi);
	if (r)
		return r;
	/* (In its memory: private, or coherent in place.) */
	return (pi.where == UHMM_WHERE_DEVICE || pi.where == UHMM_WHERE_COHERENT) &&
	       pi.device == dev;
}

/*
 * What MIGRATE_TO_DEV selects: managed pages in system memory, as the
 * kernel's migrate_vma with MIGRATE_VMA_SELECT_SYSTEM (the driver's).
 * Pages in this device's memory are there already; pages in another
 * device's memory are not selected, and the read-back reports them
 * (-ENOENT).  A page held exclusively stays selectable (its data is in
 * system memory; uhmm_migrate revokes the hold).
 */
static bool to_dev_selects(uhmm_ctx *ctx, uintptr_t a, uhmm_device *dev)
{
	struct uhmm_page_info pi;
	if (uhmm_page_query(ctx, (void *)a, &pi))
		return false; /* not managed */
	return !pi.device || pi.where == UHMM_WHERE_EXCLUSIVE;
}

static int cmd_migrate_to_dev(uhmm_dmirror *h, uhmm_device *dev,
			      struct uhmm_dmirror_cmd *c)
{
	uintptr_t start = c->addr, end = start + c->npages * PS;
	/* FAIL_ALLOC: this handle's next device allocation fails, once. */
	pthread_mutex_lock(&h->pt_lock);
	bool fail = h->flags & UHMM_DMIRROR_FLAG_FAIL_ALLOC;
	h->flags &= ~UHMM_DMIRROR_FLAG_FAIL_ALLOC;
	pthread_mutex_unlock(&h->pt_lock);
	if (fail)
		uhmm_simdev_inject(dev, UHMM_SIMDEV_FAIL_ALLOC, 0, 1);
	bool retried = false;
	int err = 0;
	for (uintptr_t a = start; a < end && !err;) {
		uintptr_t vend, next;
		err = chunk_vma(a, &vend);
		if (err)
			break;
		next = min_u(min_u(end, a + DM_CHUNK_PAGES * PS), vend);
		/* Before the adoption of a private file mapping: which of its
		 * pages are not anonymous (they stay, as the kernel's). */
		uint8_t file[DM_CHUNK_PAGES];
		dm_file_pages(a, (next - a) / PS, file);
		dm_manage_range(h->ctx, a, next);
		/* Migrate the managed runs in system memory; unmanaged pages
		 * (shared, file) and other devices' pages stay, and the
		 * read-back reports them. */
		for (uintptr_t p = a; p < next && !err;) {
			if (file[(p - a) / PS] || !to_dev_selects(h->ctx, p, dev)) {
				p += PS;
				continue;
			}
			uintptr_t q = p + PS;
			while (q < next && !file[(q - a) / PS] && to_dev_selects(h->ctx, q, dev))
				q += PS;
			err = uhmm_migrate(h->ctx, (void *)p, q - p, dev, 0);
			if (err == -ENOMEM && fail && !retried) {
				/* The injected failure: allocate again (the
				 * kernel falls back from 2 MiB to 4 KiB pages;
				 * uhmm's migration allocates 4 KiB pages, so
				 * its fallback is this second attempt). */
				retried = true;
				err = 0;
				continue;
			}
			/* Pinned (-EBUSY: shared with a fork child), unmapped
			 * meanwhile (-EFAULT), or refused (-EPERM): left where
			 * they are; the read-back reports them (-ENOENT). */
			if (err == -EBUSY || err == -EFAULT || err == -EPERM)
				err = 0;
			p = q;
		}
		a = next;
	}
	if (fail)
		uhmm_simdev_inject(dev, UHMM_SIMDEV_FAIL_ALLOC, 0, 0);
	if (err)
		return err;
	return read_back(h, dev, c, true);
}

static int cmd_migrate_to_sys(uhmm_dmirror *h, uhmm_device *dev,
			      struct uhmm_dmirror_cmd *c)
{
	uintptr_t start = c->addr, end = start + c->npages * PS;
	int err = 0;
	for (uintptr_t a = start; a < end && !err;) {
		uintptr_t vend, next;
		err = chunk_vma(a, &vend);
		if (err)
			break;
		next = min_u(min_u(end, a + DM_CHUNK_PAGES * PS), vend);
		for (uintptr_t p = a; p < next && !err;) {
			if (page_on(h->ctx, p, dev) != 1) {
				p += PS;
				continue;
			}
			uintptr_t q = p + PS;
			while (q < next && page_on(h->ctx, q, dev) == 1)
				q += PS;
			err = uhmm_migrate(h->ctx, (void *)p, q - p, NULL, 0);
			if (!err)
				c->cpages += (q - p) / PS;
			p = q;
		}
		a = next;
	}
	return err;
}

/* SNAPSHOT byte of a range-fault entry.  @cow_pending: the CPU maps this
 * system page read-only until a write copies it (see cow_pending()). */
static uint8_t snap_byte(uint64_t e, bool cow_pending)
{
	if (e & UHMM_RE_ERROR)
		return UHMM_DMIRROR_PROT_ERROR;
	/* Another device's page (or one it holds exclusively): the kernel's
	 * snapshot sets dev_private_owner to this device, so hmm_range_fault
	 * reports another owner's device-private entry as not valid (no
	 * fault is asked for), and the driver says NONE.  DEV_PRIVATE_REMOTE
	 * is what its entry decoding would say for a valid one; it never
	 * sees one in a snapshot. */
	if (e & UHMM_RE_REMOTE)
		return UHMM_DMIRROR_PROT_NONE;
	if (!(e & UHMM_RE_VALID))
		return UHMM_DMIRROR_PROT_NONE;
	bool w = (e & UHMM_RE_WRITE) && !((e & (UHMM_RE_DEVICE | UHMM_RE_EXCLUSIVE)) == 0 &&
					   cow_pending);
	uint8_t b = w ? UHMM_DMIRROR_PROT_WRITE : UHMM_DMIRROR_PROT_READ;
	if (e & UHMM_RE_DEVICE)
		return b | UHMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	/* Devices 2 and 3: in place in coherent memory (the kernel ORs the
	 * rights in as for any valid page). */
	if (e & UHMM_RE_COHERENT)
		return b | UHMM_DMIRROR_PROT_DEV_COHERENT_LOCAL;
	if (e & UHMM_RE_COHERENT_REMOTE)
		return b | UHMM_DMIRROR_PROT_DEV_COHERENT_REMOTE;
	if (e & UHMM_RE_ZERO)
		b |= UHMM_DMIRROR_PROT_ZERO;
	if (e & UHMM_RE_HUGE)
		b |= UHMM_DMIRROR_PROT_PMD;
	return b;
}

/*
 * Which pages of [a, a + n pages) a private mapping maps read-only for
 * copy-on-write: a page-cache page (pagemap bit 61) or an anonymous page
 * shared with a fork child (bit 56, "exclusively mapped", clear).  The
 * kernel reports those without HMM_PFN_WRITE; uhmm's entries follow the
 * mapping's rights, so the snapshot refines them here.
 */
static void cow_pending(int pm_fd, uintptr_t a, size_t n, uint8_t *out)
{
	memset(out, 0, n);
	uint64_t pm[DM_CHUNK_PAGES];
	if (pm_fd < 0 || pread(pm_fd, pm, n * 8, (off_t)(a / PS * 8)) != (ssize_t)(n * 8))
		return;
	struct dm_vma v = { 0 };
	for (size_t i = 0; i < n; i++) {
		uintptr_t va = a + i * PS;
		if (va >= v.end && dm_vma_find(va, &v) != 1)
			return;
		if (v.start > va || v.shared || !((pm[i] >> 63) & 1))
			continue;
		out[i] = ((pm[i] >> 61) & 1) || !((pm[i] >> 56) & 1);
	}
}

/*
 * The bytes go to ptr chunk by chunk, as the kernel's copy_to_user of each
 * chunk: a ptr buffer shorter than npages fails with -EFAULT at the first
 * chunk past its end, instead of after a walk of the whole range (npages
 * may be up to 2^36).
 */
static int cmd_snapshot(uhmm_dmirror *h, uhmm_device *dev, struct uhmm_dmirror_cmd *c)
{
	uint8_t bytes[DM_CHUNK_PAGES];
	uint64_t *ent = uhmm__umem_malloc(DM_CHUNK_PAGES * sizeof(*ent));
	uint8_t cow[DM_CHUNK_PAGES];
	int pm_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int err = !ent ? -ENOMEM : 0;
	uintptr_t start = c->addr, end = start + c->npages * PS;
	for (uintptr_t a = start; a < end && !err;) {
		uintptr_t next = min_u(end, a + DM_CHUNK_PAGES * PS);
		/* No notifier: a snapshot is a snapshot, nothing is kept. */
		struct uhmm_range_req req = { .start = a, .end = next, .flags = UHMM_RF_SNAPSHOT,
					      .device = dev, .entries = ent };
		err = uhmm_range_fault(h->ctx, &req);
		if (err)
			break;
		size_t n = (next - a) / PS;
		cow_pending(pm_fd, a, n, cow);
		for (size_t i = 0; i < n; i++)
			bytes[i] = snap_byte(ent[i], cow[i]);
		err = dm_mem_write(c->ptr + (a - start) / PS, bytes, n);
		a = next;
	}
	if (pm_fd >= 0)
		close(pm_fd);
	if (!err)
		c->cpages = c->npages;
	uhmm__umem_free(ent);
	return err;
}

static int cmd_exclusive(uhmm_dmirror *h, uhmm_device *dev, struct uhmm_dmirror_cmd *c)
{
	dm_manage_range(h->ctx, c->addr, c->addr + c->npages * PS);
	int err = uhmm_make_exclusive(dev, (void *)(uintptr_t)c->addr, c->npages, NULL);
	/* The driver's make_device_exclusive takes each page with a write
	 * get_user_pages: a read-only area fails -EFAULT there (uhmm says
	 * -EPERM once it manages read-only memory). */
	if (err == -EPERM)
		err = -EFAULT;
	if (err)
		return err;
	/* Read through the mirror: the device reaches pages it holds at
	 * their reserve slots (UHMM_RE_EXCLUSIVE), without revoking them. */
	return read_back(h, dev, c, false);
}

static int cmd_check_exclusive(uhmm_dmirror *h, uhmm_device *dev,
			       struct uhmm_dmirror_cmd *c)
{
	uintptr_t start = c->addr, end = start + c->npages * PS;
	for (uintptr_t a = start; a < end; a += PS)
		if (uhmm_check_exclusive(dev, (void *)a, 1) == 1)
			return -EPERM; /* still held: the CPU has not revoked */
	return 0;
}

int dm_cmd(uhmm_dmirror *h, unsigned request, struct uhmm_dmirror_cmd *cmd)
{
	struct uhmm_dmirror_cmd c = *cmd;
	/* The driver's checks, in its order, for every request (FLAGS too:
	 * its npages is the flag word, and 0 fails): addr page-aligned, and
	 * addr < addr + (npages << PAGE_SHIFT) in 64-bit arithmetic (so
	 * npages 0 and a wrapping range fail); then the request number. */
	if ((c.addr & (PS - 1)) || c.addr >= c.addr + (c.npages << DM_PAGE_SHIFT))
		return -EINVAL;
	if (request > UHMM_DMIRROR_READ_UNLOCKABLE)
		return -EINVAL;
	c.cpages = 0;
	c.faults = 0;
	if (request == UHMM_DMIRROR_FLAGS) {
		pthread_mutex_lock(&h->pt_lock);
		h->flags = c.npages;
		pthread_mutex_unlock(&h->pt_lock);
		*cmd = c;
		return 0;
	}
	/* Within what a 48-bit address space can name, so sizes fit in
	 * size_t (the kernel fails such a request later, allocating its
	 * bounce buffer or walking past the address space). */
	if (c.npages > ((uint64_t)1 << 36))
		return -EINVAL;
	/* The kernel's mirror is invalidated before munmap/mremap/madvise
	 * return; uhmm's right after: let it catch up (cheap when idle). */
	(void)uhmm_sync(h->ctx);
	struct dm_dev *d = h->d;
	bool excl = request == UHMM_DMIRROR_RELEASE;
	if (excl)
		pthread_rwlock_wrlock(&d->use_lock);
	else
		pthread_rwlock_rdlock(&d->use_lock);
	uhmm_device *dev = d->dev;
	int err;
	if (!dev) {
		err = -EIO; /* a RELEASE could not re-create the device */
		goto out;
	}
	switch (request) {
	case UHMM_DMIRROR_READ:
		err = cmd_read(h, dev, &c, false);
		break;
	case UHMM_DMIRROR_READ_UNLOCKABLE:
		err = cmd_read(h, dev, &c, true);
		break;
	case UHMM_DMIRROR_WRITE:
		err = cmd_write(h, dev, &c);
		break;
	case UHMM_DMIRROR_MIGRATE_TO_DEV:
		err = cmd_migrate_to_dev(h, dev, &c);
		break;
	case UHMM_DMIRROR_MIGRATE_TO_SYS:
		err = cmd_migrate_to_sys(h, dev, &c);
		break;
	case UHMM_DMIRROR_SNAPSHOT:
		err = cmd_snapshot(h, dev, &c);
		break;
	case UHMM_DMIRROR_EXCLUSIVE:
		err = cmd_exclusive(h, dev, &c);
		break;
	case UHMM_DMIRROR_CHECK_EXCLUSIVE:
		err = cmd_check_exclusive(h, dev, &c);
		break;
	default: /* UHMM_DMIRROR_RELEASE */
		err = dm_dev_release_locked(d);
		break;
	}
out:
	pthread_rwlock_unlock(&d->use_lock);
	if (!err)
		*cmd = c;
	return err;
}

UHMM_API int uhmm_dmirror_cmd(uhmm_dmirror *h, unsigned request,
			      struct uhmm_dmirror_cmd *cmd)
{
	int err = dm_handle_check(h);
	if (err)
		return err;
	if (!cmd)
		return -EFAULT;
	return dm_cmd(h, request, cmd);
}
