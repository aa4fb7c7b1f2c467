/* SPDX-License-Identifier: MIT */
/* stats.c - reading and printing the counters; error strings.  No locks. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

UHMM_API int uhmm_stats_get(uhmm_ctx *ctx, struct uhmm_stats *out)
{
	if (!out)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	const uint64_t *src = (const uint64_t *)&ctx->stats;
	uint64_t *dst = (uint64_t *)out;
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	out->private_bytes = uhmm__umem_bytes();
	uhmm__ctx_exit(ctx);
	return 0;
}

UHMM_API int uhmm_stats_print(uhmm_ctx *ctx, void *fp)
{
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	uhmm__stats_print(ctx, fp);
	uhmm__ctx_exit(ctx);
	return 0;
}

/* Also used by uhmm_ctx_destroy() on a context no longer open to calls. */
void uhmm__stats_print(struct uhmm_ctx *ctx, void *fp)
{
	FILE *f = fp ? fp : stderr;
	struct uhmm_stats s;
	const uint64_t *src = (const uint64_t *)&ctx->stats;
	for (size_t i = 0; i < sizeof(s) / sizeof(uint64_t); i++)
		((uint64_t *)&s)[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	s.private_bytes = uhmm__umem_bytes();
#define P(field, what) fprintf(f, "  %-28s %12llu  %s\n", #field, \
			       (unsigned long long)s.field, what)
	fprintf(f, "uhmm statistics:\n");
	P(migrated_to_device_pages, "pages moved to devices");
	P(migrated_to_device_bytes, "bytes copied to devices");
	P(migrated_to_system_pages, "pages moved back");
	P(migrated_to_system_bytes, "bytes copied back");
	P(zero_filled_pages, "device pages zero-filled (no copy)");
	P(cpu_faults, "CPU faults served");
	P(cpu_faults_device, "... that brought data back");
	P(cpu_faults_waited, "... that waited on a busy page");
	P(fault_around_pages, "extra pages by fault-around");
	P(readahead_pages, "pages brought back by read-ahead");
	P(service_spin_hits, "messages found by the service thread's spin");
	P(copy_ns, "ns in copy engines");
	P(copy_batches, "copy batches");
	P(copy_errors, "copy batches with errors");
	P(pool_hits, "faults served by UFFDIO_MOVE");
	P(pool_misses, "faults served by UFFDIO_COPY");
	P(events_remove, "REMOVE events (madvise)");
	P(events_unmap, "UNMAP events (munmap)");
	P(events_remap, "REMAP events (mremap)");
	P(device_pages_freed_by_events, "device pages discarded by events");
	P(ranges_displaced, "ranges displaced by a late event");
	P(migrate_busy, "pages the kernel kept (EBUSY)");
	P(exclusive_grabs, "pages made device-exclusive");
	P(exclusive_revocations, "exclusive pages taken back");
	P(exclusive_revoke_ns, "ns revoking");
	P(invalidations, "invalidations sent to mirrors");
	P(range_fault_calls, "range faults");
	P(range_fault_pages, "pages walked by range faults");
	P(metadata_bytes, "page-state bytes");
	P(managed_pages, "pages managed");
	P(metadata_dir_bytes, "page-state directory bytes");
	P(evicted_pages, "pages evicted from full devices");
	P(evicted_bytes, "bytes evicted");
	P(evicted_blocks, "2 MiB blocks evicted from");
	P(evict_ns, "ns evicting");
	P(evict_busy, "victim pages skipped: busy");
	P(evict_backoffs, "requests that backed off: device full");
	P(private_bytes, "uhmm private bytes (process)");
	P(reserve_slots, "reserve slots (extent)");
	P(reserve_slots_used, "... in use or warm");
	P(policy_ejections, "plug-in policies ejected");
	P(prefetched_bytes, "bytes prefetched to devices");
	P(thrash_detections, "thrashing regions throttled");
	P(thrash_pins, "thrashing regions pinned to system memory");
	P(poisoned_pages, "pages lost on a device (poisoned)");
	P(dev_huge_units, "2 MiB blocks moved to a device as one unit");
	P(dev_huge_splits, "2 MiB device units split into 4 KiB pages");
	P(dup_made, "read-mostly duplicates made on devices");
	P(dup_dropped, "read-mostly duplicates dropped (collapse)");
	P(thp_available, "transparent huge pages available (0: 4 KiB only)");
	P(thp_moves_out, "2 MiB blocks moved out as one THP");
	P(thp_moves_in, "2 MiB blocks installed as one THP");
#undef P
}

UHMM_API const char *uhmm_strerror(int err)
{
	if (err == INT_MIN)
		return "unknown error"; /* -err would overflow */
	/* Every code a call of uhmm's returns, in uhmm's words (each call's
	 * documentation says what it means there); others as libc says. */
	switch (err < 0 ? -err : err) {
	case 0: return "success";
	case EBADF: return "not a live uhmm context or device";
	case ECHILD: return "context belongs to the parent process (after fork)";
	case EFAULT: return "address range not managed or not mapped";
	case EEXIST: return "range overlaps a managed range";
	case EOPNOTSUPP: return "memory kind or kernel feature not supported";
	case ENOSYS: return "userfaultfd not available in this kernel";
	case EBUSY: return "page held by the kernel (pinned or shared)";
	case EADDRINUSE: return "memory managed by another uhmm context or userfaultfd";
	case EINVAL: return "invalid argument (range, flags, options or handle)";
	case ENOMEM: return "out of memory, or the device cannot hold the request";
	case EAGAIN: return "temporarily impossible (a thread or resource could not be had)";
	case EIO: return "a device failed to copy or return a page";
	case EPERM: return "not allowed by the mapping's protection";
	case EHWPOISON: return "page lost on a device (poisoned)";
	case ENOENT: return "no such object (file, symbol or page)";
	case ESTALE: return "the page changed while it was being served";
	case ENODEV: return "device gone or detached";
	case ECANCELED: return "canceled: the context was destroyed first";
	case ETIMEDOUT: return "timed out";
	case ENOSPC: return "a per-context limit was reached (devices, SIGBUS contexts)";
	case EMFILE: return "too many open files in this process";
	case ENFILE: return "too many open files in the system";
	case EACCES: return "permission denied";
	case ENOTTY: return "not supported by this kernel (ioctl unknown)";
	case ESHUTDOWN: return "the device is shutting down";
	case EISDIR: return "is a directory";
	default: return strerror(err < 0 ? -err : err);
	}
}

/*
 * Debugging aid for stress programs (tests/torture): print the faults the
 * service thread holds parked and the state of each one's page.  Reads
 * without locks; meant for a process that has stopped making progress.
 * Not part of the API (no header); declare it to use it.
 */
UHMM_API void uhmm__debug_dump_parked(uhmm_ctx *ctx, FILE *f)
{
	fprintf(f, "parked faults: %zu\n", ctx->nparked);
	for (size_t i = 0; i < ctx->nparked; i++) {
		uintptr_t a = ctx->parked[i].addr & ~(uintptr_t)(PAGE_SIZE - 1);
		fprintf(f, "  %#lx flags %#llx seq %u:", (unsigned long)a,
			(unsigned long long)ctx->parked[i].flags, ctx->parked[i].seq);
		struct uhmm_range *r = NULL;
		for (size_t k = 0; k < ctx->nranges; k++)
			if (ctx->ranges[k]->start <= a && a < range_end(ctx->ranges[k]))
				r = ctx->ranges[k];
		if (!r) {
			fprintf(f, " no range\n");
			continue;
		}
		const struct uhmm_page *p = range_page_peek(r, (a - r->start) >> PAGE_SHIFT);
		fprintf(f, " range %#lx+%zu pages, word %#x seq %u dpfn %llu\n",
			(unsigned long)r->start, r->npages,
			atomic_load_explicit(&p->word, memory_order_relaxed),
			atomic_load_explicit(&p->seq, memory_order_relaxed),
			(unsigned long long)atomic_load_explicit(&p->dpfn, memory_order_relaxed));
	}
}
