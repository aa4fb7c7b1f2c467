/* SPDX-License-Identifier: MIT */
/*
 * thrash.c - the built-in policy's thrashing detection (UVM's
 * uvm_perf_thrashing, in outline).
 *
 * Every migration the mechanism reports (uhmm__pol_migrated) that takes a
 * 64 KiB region somewhere other than where its last move took it counts,
 * per region, as a move (more pages of a region following the first ones
 * are no thrash).  A region that moves `moves` times
 * within `window` is thrashing: the next device faults on it are throttled
 * (served `nap` later, so the CPU side gets its turn), and after
 * `pin_after` throttles it is pinned to system memory for `pin`: device
 * faults on its pages in system memory map them remotely instead of
 * migrating them (uhmm's devices cannot map another's private memory, so
 * the pin is always to the CPU).  A pinned region that stays quiet unpins
 * when the pin ends; if it thrashes again it is pinned again at once.
 *
 * Defaults: UVM's are 3 moves within 500 us and a pin after 10 throttles,
 * for GPU faults served in tens of microseconds.  A uhmm fault round trip
 * moving a 2 MiB block costs a few hundred: a CPU/device ping-pong over a
 * block (uhmm-bench --scenario policy) moved each region only twice in
 * 500 us, so nothing was ever pinned, and the throttles made it 2.3x
 * slower.  2 ms and a pin after 3 detections pinned it after 5 migrations
 * (200 without).
 *
 * State: an open-addressing table of regions seen moving, in uhmm's own
 * memory, under thr_lock (a leaf).  It grows when half full, dropping first
 * the regions whose window has long passed and that are neither throttled
 * nor pinned, so it holds about the regions moving now.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "policy/policy.h"

#define REGION_SHIFT 16 /* 64 KiB */

struct thr_ent {
	uint64_t key;          /* region index + 1; 0: empty */
	uint64_t win_start;    /* start of the current window, ns */
	uint64_t last_thrash;  /* when it last thrashed (throttle while recent) */
	uint64_t pinned_until;
	uint32_t moves, throttles;
	uint32_t last_to;      /* where the last move took it, + 1 */
};

static uint64_t env_u64(const char *name, uint64_t def, uint64_t max)
{
	const char *e = getenv(name);
	if (!e || !*e)
		return def;
	char *end;
	unsigned long long v = strtoull(e, &end, 0);
	return *end || v > max ? def : v;
}

void uhmm__thrash_init(struct uhmm_polctx *p)
{
	pthread_mutex_init(&p->thr_lock, NULL);
	p->thr_on = env_u64("UHMM_THRASH", 1, 1);
	p->thr_moves = (uint32_t)env_u64("UHMM_THRASH_MOVES", 3, 1000);
	if (p->thr_moves < 2)
		p->thr_moves = 2;
	p->thr_window_ns = env_u64("UHMM_THRASH_WINDOW_US", 2000, 60000000) * 1000;
	p->thr_pin_after = (uint32_t)env_u64("UHMM_THRASH_PIN_AFTER", 3, 1000);
	p->thr_pin_ns = env_u64("UHMM_THRASH_PIN_MS", 300, 600000) * 1000000;
	p->thr_nap_ns = env_u64("UHMM_THRASH_NAP_US", 100, 10000) * 1000;
}

void uhmm__thrash_fini(struct uhmm_polctx *p)
{
	uhmm__umem_free(p->thr);
	p->thr = NULL;
	p->thr_cap = p->thr_n = 0;
	pthread_mutex_destroy(&p->thr_lock);
}

static size_t slot_of(uint64_t key, size_t cap)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);
}

/* The entry of @key, or NULL; with @add, a new one (NULL if out of memory). */
static struct thr_ent *lookup_locked(struct uhmm_polctx *p, uint64_t key, bool add,
				     uint64_t now);

static bool grow_locked(struct uhmm_polctx *p, uint64_t now)
{
	size_t cap = p->thr_cap ? p->thr_cap : 64;
	/* Count what is worth keeping: grow only if that needs it. */
	size_t keep = 0;
	for (size_t i = 0; i < p->thr_cap; i++) {
		struct thr_ent *e = &p->thr[i];
		keep += e->key && (now - e->win_start < 4 * p->thr_window_ns ||
				   e->throttles || e->pinned_until > now);
	}
	while (keep * 2 >= cap)
		cap *= 2;
	struct thr_ent *old = p->thr;
	size_t ocap = p->thr_cap;
	struct thr_ent *t = uhmm__umem_calloc(cap, sizeof(*t));
	if (!t)
		return false;
	p->thr = t;
	p->thr_cap = cap;
	p->thr_n = 0;
	for (size_t i = 0; i < ocap; i++) {
		struct thr_ent *e = &old[i];
		if (!e->key || !(now - e->win_start < 4 * p->thr_window_ns || e->throttles ||
				 e->pinned_until > now))
			continue;
		struct thr_ent *n = lookup_locked(p, e->key, true, now);
		*n = *e;
	}
	uhmm__umem_free(old);
	return true;
}

static struct thr_ent *lookup_locked(struct uhmm_polctx *p, uint64_t key, bool add,
				     uint64_t now)
{
	if (!p->thr_cap) {
		if (!add || !grow_locked(p, now))
			return NULL;
	}
	for (;;) {
		size_t i = slot_of(key, p->thr_cap);
		for (;;) {
			struct thr_ent *e = &p->thr[i];
			if (e->key == key)
				return e;
			if (!e->key)
				break;
			i = (i + 1) & (p->thr_cap - 1);
		}
		if (!add)
			return NULL;
		if ((p->thr_n + 1) * 2 > p->thr_cap) {
			if (!grow_locked(p, now))
				return NULL;
			continue;
		}
		struct thr_ent *e = &p->thr[i];
		memset(e, 0, sizeof(*e));
		e->key = key;
		p->thr_n++;
		return e;
	}
}

void uhmm__thrash_moved(struct uhmm_ctx *ctx, uint64_t addr, uint64_t len, uhmm_loc to,
			uint64_t now)
{
	struct uhmm_polctx *p = &ctx->pol;
	if (!p->thr_on || !len)
		return;
	uint64_t r0 = addr >> REGION_SHIFT, r1 = (addr + len - 1) >> REGION_SHIFT;
	uint64_t throttles = 0, pins = 0;
	pthread_mutex_lock(&p->thr_lock);
	for (uint64_t r = r0; r <= r1; r++) {
		struct thr_ent *e = lookup_locked(p, r + 1, true, now);
		if (!e)
			break; /* out of memory: detection is best effort */
		/* Only a move back counts: more pages of a region going
		 * where the region went (a scan, a prefetch) are no thrash. */
		if (e->last_to == to + 1)
			continue;
		e->last_to = to + 1;
		if (!e->moves || now - e->win_start > p->thr_window_ns) {
			e->win_start = now;
			e->moves = 1;
			continue;
		}
		if (++e->moves < p->thr_moves)
			continue;
		/* Thrashing. */
		e->moves = 0;
		e->last_thrash = now;
		throttles++;
		if (++e->throttles >= p->thr_pin_after) {
			e->throttles = 0;
			e->pinned_until = now + p->thr_pin_ns;
			pins++;
		}
	}
	pthread_mutex_unlock(&p->thr_lock);
	if (throttles)
		STAT_ADD(ctx, thrash_detections, throttles);
	if (pins)
		STAT_ADD(ctx, thrash_pins, pins);
}

/* What the built-in policy does of a device fault on @addr: 0 nothing,
 * else a nap (ns) before serving it, or UINT64_MAX: pinned to the CPU. */
uint64_t uhmm__thrash_state(struct uhmm_polctx *p, uint64_t addr, uint64_t now)
{
	if (!p->thr_on)
		return 0;
	uint64_t res = 0;
	pthread_mutex_lock(&p->thr_lock);
	struct thr_ent *e = lookup_locked(p, (addr >> REGION_SHIFT) + 1, false, now);
	if (e) {
		if (e->pinned_until > now)
			res = UINT64_MAX;
		else if (e->last_thrash && now - e->last_thrash < p->thr_window_ns)
			res = p->thr_nap_ns;
	}
	pthread_mutex_unlock(&p->thr_lock);
	return res;
}
