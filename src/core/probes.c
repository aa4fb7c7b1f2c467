/* SPDX-License-Identifier: MIT */
/*
 * probes.c - the USDT probes' sites and semaphores (probes.h).  Every
 * probe of the library is here, so the ELF notes list each once, and the
 * semaphores sit together in .probes, where sys/sdt.h wants them.
 */
#define _GNU_SOURCE
#include <time.h>

#include "core/internal.h"
#include "core/probes.h"

#ifdef UHMM_USDT
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

#define UHMM__PROBE_SEMA_DEF(name)                                               \
	__extension__ volatile unsigned short uhmm_##name##_semaphore                \
		__attribute__((section(".probes"), used));
UHMM_PROBE_LIST(UHMM__PROBE_SEMA_DEF)

static uint64_t since(uint64_t t0)
{
	if (!t0)
		return 0;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	return now > t0 ? now - t0 : 0;
}

void uhmm__pr_cpu_fault_start(uintptr_t addr, bool write, unsigned mode)
{
	STAP_PROBE3(uhmm, cpu_fault_start, addr, (int)write, mode);
}

void uhmm__pr_cpu_fault_done(uintptr_t addr, bool write, uint32_t word, uint64_t t0,
			     unsigned mode)
{
	/* Where the page was when the fault was served: 0 system memory
	 * (filled), else the device's id (it came home, or was revoked). */
	unsigned where = pg_loc(word) == LOC_CPU ? 0 : pg_dev(word);
	STAP_PROBE5(uhmm, cpu_fault_done, addr, (int)write, where, since(t0), mode);
}

void uhmm__pr_migrate_start(uintptr_t addr, size_t bytes, unsigned from, unsigned to,
			    unsigned cause)
{
	STAP_PROBE5(uhmm, migrate_start, addr, bytes, from, to, cause);
}

void uhmm__pr_migrate_done(uintptr_t addr, size_t span, size_t pages, unsigned from,
			   unsigned to, unsigned cause, uint64_t t0)
{
	STAP_PROBE8(uhmm, migrate_done, addr, span, from, to, pages, pages * 4096, since(t0),
		    cause);
}

void uhmm__pr_evict(unsigned dev, uintptr_t addr, size_t bytes)
{
	STAP_PROBE3(uhmm, evict, dev, addr, bytes);
}

void uhmm__pr_invalidate(uintptr_t start, uintptr_t end, unsigned reason)
{
	STAP_PROBE3(uhmm, invalidate, start, end, reason);
}

void uhmm__pr_dev_fault(unsigned dev, uintptr_t addr, unsigned access, bool first)
{
	STAP_PROBE4(uhmm, dev_fault, dev, addr, access, (int)first);
}

void uhmm__pr_dev_fault_batch(unsigned dev, size_t faults, size_t unique)
{
	STAP_PROBE3(uhmm, dev_fault_batch, dev, faults, unique);
}

void uhmm__pr_exclusive_grab(unsigned dev, uintptr_t addr, size_t pages, int result)
{
	STAP_PROBE4(uhmm, exclusive_grab, dev, addr, pages, result);
}

void uhmm__pr_exclusive_revoke(unsigned dev, uintptr_t addr)
{
	STAP_PROBE2(uhmm, exclusive_revoke, dev, addr);
}

void uhmm__pr_prefetch(uintptr_t addr, size_t len, unsigned dst)
{
	STAP_PROBE3(uhmm, prefetch, addr, len, dst);
}

void uhmm__pr_advice(uintptr_t addr, size_t len, unsigned advice, unsigned dev)
{
	STAP_PROBE4(uhmm, advice, addr, len, advice, dev);
}

void uhmm__pr_policy_eject(const char *policy, const char *callback, const char *why)
{
	STAP_PROBE3(uhmm, policy_eject, policy, callback, why);
}

void uhmm__pr_poison(unsigned dev, uint64_t dpfn, uintptr_t addr)
{
	STAP_PROBE3(uhmm, poison, dev, dpfn, addr);
}

void uhmm__pr_dup_made(unsigned dev, uintptr_t addr, size_t pages)
{
	STAP_PROBE3(uhmm, dup_made, dev, addr, pages);
}

void uhmm__pr_dup_collapse(uintptr_t addr, size_t pages)
{
	STAP_PROBE2(uhmm, dup_collapse, addr, pages);
}

void uhmm__pr_access_counter(unsigned dev, uintptr_t addr, size_t len, uint64_t count,
			     unsigned action)
{
	STAP_PROBE5(uhmm, access_counter, dev, addr, len, count, action);
}

void uhmm__pr_thp_move(uintptr_t addr, bool in)
{
	STAP_PROBE2(uhmm, thp_move, addr, (int)in);
}
#endif
