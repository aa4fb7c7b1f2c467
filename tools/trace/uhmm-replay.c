/* SPDX-License-Identifier: MIT */
/*
 * uhmm-replay - run the fault sequence of a trace against placement and
 * eviction policies in a simulation of device capacity, moving no data.
 *
 *   uhmm-replay [--dev-mib N] [--policy NAME|PATH.so]... [--json] FILE
 *
 * NAME: lru (the default policy: uhmm's own rules), mru, lfu, belady
 * (Belady's optimal eviction: the block used again furthest in the future
 * goes first; the lower bound of eviction).  PATH.so: a shared object that
 * exports `const struct uhmm_policy_ops uhmm_policy` (uhmm/policy.h); its
 * absent callbacks fall back to the defaults.  Without --policy: lru and
 * belady.
 *
 * What is simulated (docs/TRACING.md, "Replay"): the trace's events in
 * time order --
 *   - device faults, in the batches the device served them in: the pages
 *     not on the faulting device at the start of the batch are faults;
 *     dev_faults decides (default: migrate the page's 2 MiB block, as
 *     simdev's migrate-on-touch does);
 *   - CPU faults: one on a page that is on a device in the simulation
 *     brings home what cpu_fault says (default: the aligned fault-around
 *     block of the context's fault_around pages, no read-ahead);
 *   - migrations the application asked for (uhmm_migrate, and the
 *     evacuation at destroy): done as recorded;
 * in a device memory of the recorded size (or --dev-mib), in which a
 * migration that does not fit evicts whole 2 MiB blocks in evict_order's
 * order (default: least recently used, by the time of the last migration
 * to or device fault on the block), never a block of the request.  A
 * migration that cannot get room maps remotely (as simdev does).
 *
 * A policy that returns an error or an invalid decision is ejected: the
 * defaults take over, and the report says why.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <stdbool.h>

#include <uhmm/policy.h>

#include "trace_read.h"

#define PAGE ((uint64_t)4096)
#define BLOCK ((uint64_t)2 << 20)
#define BPAGES 512u

/* ---- the events ---------------------------------------------------------- */

enum { EV_DEVB, EV_CPU, EV_TO_DEV, EV_HOME };
struct ev {
	int kind;
	uint64_t time;
	unsigned dev;       /* EV_DEVB: faulting device; EV_TO_DEV: destination */
	size_t first, n;    /* EV_DEVB: records [first, first + n) of the trace */
	uint64_t addr, len; /* EV_CPU: the page; EV_TO_DEV/EV_HOME: span */
	bool write;
};

/* ---- blocks --------------------------------------------------------------- */

struct blk {
	uint64_t key;       /* block number + 1; 0: empty slot */
	unsigned dev;       /* the device its resident pages are on (0: none) */
	uint32_t npages;
	uint64_t bits[BPAGES / 64];
	uint64_t first_use, last_use, uses;
	uint32_t dirty;
	size_t pos;         /* index in its device's list */
	/* Belady: the events using it (device batches, migrations to a device). */
	size_t *use, nuse, cuse;
	size_t next;        /* cursor into use[] (events before it are past) */
};

struct map {
	struct blk *v;
	size_t cap, n;
};

static struct blk *map_get(struct map *m, uint64_t bno, bool create)
{
	if (create && (m->n + 1) * 2 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 1024;
		struct blk *nv = calloc(cap, sizeof(*nv));
		if (!nv) {
			fprintf(stderr, "uhmm-replay: out of memory\n");
			exit(1);
		}
		for (size_t i = 0; i < m->cap; i++) {
			if (!m->v[i].key)
				continue;
			size_t h = (m->v[i].key * 0x9e3779b97f4a7c15ull) & (cap - 1);
			while (nv[h].key)
				h = (h + 1) & (cap - 1);
			nv[h] = m->v[i];
		}
		free(m->v);
		m->v = nv;
		m->cap = cap;
	}
	if (!m->cap)
		return NULL;
	uint64_t key = bno + 1;
	size_t h = (key * 0x9e3779b97f4a7c15ull) & (m->cap - 1);
	while (m->v[h].key) {
		if (m->v[h].key == key)
			return &m->v[h];
		h = (h + 1) & (m->cap - 1);
	}
	if (!create)
		return NULL;
	m->v[h].key = key;
	m->n++;
	return &m->v[h];
}

/* ---- a policy under simulation -------------------------------------------- */

enum { P_LRU, P_MRU, P_LFU, P_BELADY, P_SO };

struct result {
	uint64_t dev_faults, cpu_faults, mig_to_dev, mig_home, pages_to_dev, pages_home;
	uint64_t evictions, evicted_pages, remote_maps, hits;
};

struct sim {
	const char *name;
	int kind;
	const struct uhmm_policy_ops *ops; /* P_SO */
	void *st;
	char ejected[160];
	struct map blocks;
	struct blk **list[UHMM_TRACE_MAX_DEVS + 1]; /* blocks resident on a device */
	size_t nlist[UHMM_TRACE_MAX_DEVS + 1], caplist[UHMM_TRACE_MAX_DEVS + 1];
	uint64_t used[UHMM_TRACE_MAX_DEVS + 1], cap[UHMM_TRACE_MAX_DEVS + 1]; /* pages */
	size_t now_ev;  /* the event being simulated */
	uint64_t now;   /* its time */
	struct result r;
};

static const struct tfile *T;
static struct ev *E;
static size_t NE;
static uint32_t fault_around = 64;
static struct map uses; /* Belady's table: block -> events using it */

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p) {
		fprintf(stderr, "uhmm-replay: out of memory\n");
		exit(1);
	}
	return p;
}

static void eject(struct sim *s, const char *why)
{
	if (s->ejected[0] || s->kind != P_SO)
		return;
	snprintf(s->ejected, sizeof(s->ejected), "%s", why);
	fprintf(stderr, "uhmm-replay: policy %s ejected: %s; the defaults take over\n", s->name,
		why);
}

static bool uses_so(struct sim *s)
{
	return s->kind == P_SO && !s->ejected[0];
}

static bool page_on(const struct blk *b, unsigned i)
{
	return b->bits[i / 64] >> (i % 64) & 1;
}

static void list_add(struct sim *s, struct blk *b, unsigned dev)
{
	if (s->nlist[dev] == s->caplist[dev]) {
		s->caplist[dev] = s->caplist[dev] ? s->caplist[dev] * 2 : 64;
		s->list[dev] = xrealloc(s->list[dev], s->caplist[dev] * sizeof(*s->list[dev]));
	}
	b->pos = s->nlist[dev];
	s->list[dev][s->nlist[dev]++] = b;
}

static void list_del(struct sim *s, struct blk *b, unsigned dev)
{
	struct blk *last = s->list[dev][--s->nlist[dev]];
	s->list[dev][b->pos] = last;
	last->pos = b->pos;
}

static void note_migrated(struct sim *s, uint64_t addr, uint64_t len, unsigned from,
			  unsigned to)
{
	if (uses_so(s) && s->ops->migrated)
		s->ops->migrated(s->st, addr, len, from, to, s->now);
}

/* Pages of b in [lo, hi) (within b) on b->dev come home. Returns them. */
static uint64_t home_pages(struct sim *s, struct blk *b, uint64_t lo, uint64_t hi)
{
	if (!b || !b->dev)
		return 0;
	uint64_t base = (b->key - 1) * BLOCK, k = 0;
	unsigned dev = b->dev;
	for (uint64_t a = lo; a < hi; a += PAGE) {
		unsigned i = (unsigned)((a - base) / PAGE);
		if (page_on(b, i)) {
			b->bits[i / 64] &= ~(1ull << (i % 64));
			k++;
		}
	}
	b->npages -= (uint32_t)k;
	s->used[dev] -= k;
	if (!b->npages) {
		list_del(s, b, dev);
		b->dev = 0;
		b->dirty = 0;
	}
	if (k)
		note_migrated(s, lo, hi - lo, dev, 0);
	return k;
}

static void evict_block(struct sim *s, struct blk *b)
{
	uint64_t base = (b->key - 1) * BLOCK;
	uint64_t k = home_pages(s, b, base, base + BLOCK);
	s->r.evictions++;
	s->r.evicted_pages += k;
	s->r.mig_home++;
	s->r.pages_home += k;
}

/* Belady: the first event at or after @now that uses block @bno (the
 * current event's own blocks count as used now: nearest of all). */
static uint64_t next_use(uint64_t bno, size_t now)
{
	struct blk *u = map_get(&uses, bno, false);
	if (!u)
		return UINT64_MAX;
	while (u->next < u->nuse && u->use[u->next] < now)
		u->next++;
	return u->next < u->nuse ? u->use[u->next] : UINT64_MAX;
}

static const struct uhmm_pol_block *sort_cand;
static uint64_t *sort_key;
static int cmp_key(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	if (sort_key[a] != sort_key[b])
		return sort_key[a] < sort_key[b] ? -1 : 1;
	return sort_cand[a].addr < sort_cand[b].addr ? -1 : sort_cand[a].addr > sort_cand[b].addr;
}

/* Builtin orders: most preferred victim first. */
static void builtin_order(struct sim *s, int kind, struct blk **cb,
			  const struct uhmm_pol_block *c, size_t n, uint32_t *order)
{
	uint64_t *key = xrealloc(NULL, (n + 1) * sizeof(*key));
	for (size_t i = 0; i < n; i++) {
		order[i] = (uint32_t)i;
		switch (kind) {
		case P_MRU:
			key[i] = UINT64_MAX - c[i].last_use;
			break;
		case P_LFU:
			key[i] = c[i].uses;
			break;
		case P_BELADY:
			key[i] = UINT64_MAX - next_use(cb[i]->key - 1, s->now_ev);
			break;
		default:
			key[i] = c[i].last_use;
			break;
		}
	}
	sort_cand = c;
	sort_key = key;
	if (n > 1)
		qsort(order, n, sizeof(*order), cmp_key);
	free(key);
}

/* Make room for @need pages on @dev, never taking blocks that meet
 * [xlo, xhi).  Returns true if there is room. */
static bool make_room(struct sim *s, unsigned dev, uint64_t need, uint64_t xlo, uint64_t xhi)
{
	if (s->used[dev] + need <= s->cap[dev])
		return true;
	size_t n = 0;
	struct blk **cb = xrealloc(NULL, (s->nlist[dev] + 1) * sizeof(*cb));
	struct uhmm_pol_block *c = xrealloc(NULL, (s->nlist[dev] + 1) * sizeof(*c));
	uint32_t *order = xrealloc(NULL, (s->nlist[dev] + 1) * sizeof(*order));
	for (size_t i = 0; i < s->nlist[dev]; i++) {
		struct blk *b = s->list[dev][i];
		uint64_t base = (b->key - 1) * BLOCK;
		if (base < xhi && xlo < base + BLOCK)
			continue;
		cb[n] = b;
		c[n] = (struct uhmm_pol_block){ .addr = base, .last_use = b->last_use,
						.first_use = b->first_use, .uses = b->uses };
		n++;
	}
	/* The built-in order first (a plug-in finds it in order[]). */
	builtin_order(s, s->kind == P_SO ? P_LRU : s->kind, cb, c, n, order);
	if (uses_so(s) && s->ops->evict_order) {
		int err = s->ops->evict_order(s->st, dev, (s->used[dev] + need - s->cap[dev]) * PAGE,
					      c, n, order);
		bool ok = !err;
		if (ok) {
			uint8_t *seen = calloc(n + 1, 1);
			for (size_t i = 0; i < n && ok; i++) {
				ok = order[i] < n && !seen[order[i]];
				if (ok)
					seen[order[i]] = 1;
			}
			free(seen);
		}
		if (!ok) {
			eject(s, err ? "evict_order returned an error"
				     : "evict_order's order is not a permutation");
			builtin_order(s, P_LRU, cb, c, n, order);
		}
	}
	for (size_t i = 0; i < n && s->used[dev] + need > s->cap[dev]; i++)
		evict_block(s, cb[order[i]]);
	free(cb);
	free(c);
	free(order);
	return s->used[dev] + need <= s->cap[dev];
}

/* Migrate the pages of [lo, hi) that are not on @dev there.  Returns the
 * pages moved (0: none needed, or no room: mapped remotely). */
static uint64_t to_device(struct sim *s, unsigned dev, uint64_t lo, uint64_t hi, bool write)
{
	uint64_t need = 0;
	for (uint64_t a = lo; a < hi; a += PAGE) {
		struct blk *b = map_get(&s->blocks, a / BLOCK, false);
		if (!b || b->dev != dev || !page_on(b, (unsigned)((a % BLOCK) / PAGE)))
			need++;
	}
	if (!need)
		return 0;
	/* A block's pages are on one device at a time: pages of the span's
	 * blocks on another device come home first. */
	for (uint64_t a = lo & ~(BLOCK - 1); a < hi; a += BLOCK) {
		struct blk *b = map_get(&s->blocks, a / BLOCK, false);
		if (b && b->dev && b->dev != dev) {
			uint64_t k = home_pages(s, b, a, a + BLOCK);
			s->r.mig_home++;
			s->r.pages_home += k;
		}
	}
	if (!make_room(s, dev, need, lo, hi)) {
		s->r.remote_maps++;
		return 0;
	}
	for (uint64_t a = lo; a < hi; a += PAGE) {
		struct blk *b = map_get(&s->blocks, a / BLOCK, true);
		unsigned i = (unsigned)((a % BLOCK) / PAGE);
		if (!b->dev) {
			b->dev = dev;
			b->npages = 0;
			b->first_use = s->now;
			b->uses = 0;
			b->dirty = 0;
			memset(b->bits, 0, sizeof(b->bits));
			list_add(s, b, dev);
		}
		if (!page_on(b, i)) {
			b->bits[i / 64] |= 1ull << (i % 64);
			b->npages++;
			s->used[dev]++;
		}
		b->last_use = s->now;
		if (write)
			b->dirty = 1;
	}
	/* A use: a migration of pages of it to the device. */
	for (uint64_t a = lo & ~(BLOCK - 1); a < hi; a += BLOCK)
		map_get(&s->blocks, a / BLOCK, false)->uses++;
	s->r.mig_to_dev++;
	s->r.pages_to_dev += need;
	note_migrated(s, lo, hi - lo, 0, dev);
	return need;
}

static unsigned loc_of(struct sim *s, uint64_t page)
{
	struct blk *b = map_get(&s->blocks, page / BLOCK, false);
	return b && b->dev && page_on(b, (unsigned)((page % BLOCK) / PAGE)) ? b->dev : 0;
}

static bool span_ok(uint64_t page, uint64_t lo, uint64_t hi)
{
	return lo <= page && page < hi && !(lo % PAGE) && !(hi % PAGE) &&
	       lo / BLOCK == (hi - 1) / BLOCK;
}

static void dev_batch(struct sim *s, const struct ev *e)
{
	size_t n = 0;
	struct uhmm_pol_dev_fault *f = xrealloc(NULL, (e->n + 1) * sizeof(*f));
	struct uhmm_pol_dev_act *act = xrealloc(NULL, (e->n + 1) * sizeof(*act));
	for (size_t k = 0; k < e->n; k++) {
		const struct uhmm_trace_rec *r = &T->v[e->first + k].r;
		uint64_t page = r->addr & ~(PAGE - 1);
		unsigned where = loc_of(s, page);
		if (where == e->dev) {
			s->r.hits++;
			continue;
		}
		if (n && f[n - 1].addr == page)
			continue;
		/* The span it may move with: its block (the trace does not
		 * say which parts of it are managed, nor the advice). */
		uint64_t blk = page & ~(BLOCK - 1);
		f[n++] = (struct uhmm_pol_dev_fault){ .addr = page, .lo = blk, .hi = blk + BLOCK,
						      .access = r->a ? r->a : 1, .where = where };
	}
	s->r.dev_faults += n;
	/* The built-in decisions: migrate each page's span. */
	for (size_t i = 0; i < n; i++)
		act[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE, .lo = f[i].lo,
						    .hi = f[i].hi };
	if (n && uses_so(s) && s->ops->dev_faults) {
		int err = s->ops->dev_faults(s->st, e->dev, f, n, act);
		bool ok = !err;
		for (size_t i = 0; i < n && ok; i++)
			ok = act[i].action == UHMM_POL_MAP_REMOTE ||
			     ((act[i].action == UHMM_POL_MIGRATE ||
			       (act[i].action == UHMM_POL_DUPLICATE &&
				f[i].access == UHMM_POL_READ)) &&
			      span_ok(f[i].addr, act[i].lo, act[i].hi) && act[i].lo >= f[i].lo &&
			      act[i].hi <= f[i].hi);
		if (!ok) {
			eject(s, err ? "dev_faults returned an error" : "dev_faults: invalid decision");
			for (size_t i = 0; i < n; i++)
				act[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE,
								    .lo = f[i].lo, .hi = f[i].hi };
		}
	}
	for (size_t i = 0; i < n; i++) {
		/* (A duplicate is simulated as a migration: the device
		 * holds the pages and they take its room.) */
		if (act[i].action == UHMM_POL_MIGRATE || act[i].action == UHMM_POL_DUPLICATE)
			to_device(s, e->dev, act[i].lo, act[i].hi, f[i].access >= UHMM_POL_WRITE);
		else
			s->r.remote_maps++;
	}
	free(f);
	free(act);
}

/* The run of pages on @dev around @page within [lo, hi) comes home. */
static uint64_t home_run(struct sim *s, unsigned dev, uint64_t page, uint64_t lo, uint64_t hi)
{
	uint64_t a = page, b = page + PAGE;
	while (a > lo && loc_of(s, a - PAGE) == dev)
		a -= PAGE;
	while (b < hi && loc_of(s, b) == dev)
		b += PAGE;
	uint64_t k = 0;
	for (uint64_t x = a & ~(BLOCK - 1); x < b; x += BLOCK) {
		uint64_t l = a > x ? a : x, h = b < x + BLOCK ? b : x + BLOCK;
		k += home_pages(s, map_get(&s->blocks, x / BLOCK, false), l, h);
	}
	return k;
}

/* The range a CPU fault's page is in: the trace does not record ranges,
 * so the replay offers the whole user address space. */
#define RANGE_END (1ull << 47)

static void cpu_fault(struct sim *s, const struct ev *e)
{
	unsigned where = loc_of(s, e->addr);
	if (!where)
		return;
	s->r.cpu_faults++;
	uint64_t fa = (uint64_t)fault_around * PAGE;
	/* The built-in decision: the aligned fault-around block, no
	 * read-ahead (live, read-ahead follows sequential faults: not
	 * simulated). */
	struct uhmm_pol_cpu_act act = { .lo = e->addr - e->addr % fa };
	act.hi = act.lo + fa;
	if (uses_so(s) && s->ops->cpu_fault) {
		struct uhmm_pol_cpu_fault f = { .addr = e->addr, .range_start = 0,
						.range_end = RANGE_END, .time_ns = s->now,
						.where = where, .write = e->write };
		struct uhmm_pol_cpu_act a = act;
		int err = s->ops->cpu_fault(s->st, &f, &a);
		bool ok = !err && a.lo <= e->addr && e->addr < a.hi && !(a.lo % PAGE) &&
			  !(a.hi % PAGE) && a.hi - a.lo <= BLOCK && a.hi <= RANGE_END &&
			  !(a.ahead_lo % PAGE) && !(a.ahead_hi % PAGE) && a.ahead_lo <= a.ahead_hi &&
			  a.ahead_hi - a.ahead_lo <= (256ull << 20) && a.ahead_hi <= RANGE_END &&
			  a.ahead_stream < UHMM_POL_STREAMS;
		if (ok)
			act = a;
		else
			eject(s, err ? "cpu_fault returned an error" : "cpu_fault: invalid decision");
	}
	uint64_t k = home_run(s, where, e->addr, act.lo, act.hi);
	s->r.mig_home += k != 0;
	s->r.pages_home += k;
	for (uint64_t a = act.ahead_lo & ~(BLOCK - 1); a < act.ahead_hi; a += BLOCK) {
		struct blk *x = map_get(&s->blocks, a / BLOCK, false);
		if (!x || !x->dev)
			continue;
		uint64_t lo = act.ahead_lo > a ? act.ahead_lo : a;
		uint64_t hi = act.ahead_hi < a + BLOCK ? act.ahead_hi : a + BLOCK;
		k = home_pages(s, x, lo, hi);
		s->r.mig_home += k != 0;
		s->r.pages_home += k;
	}
}

static void forced_home(struct sim *s, const struct ev *e)
{
	for (uint64_t a = e->addr & ~(BLOCK - 1); a < e->addr + e->len; a += BLOCK) {
		struct blk *b = map_get(&s->blocks, a / BLOCK, false);
		uint64_t lo = e->addr > a ? e->addr : a;
		uint64_t hi = e->addr + e->len < a + BLOCK ? e->addr + e->len : a + BLOCK;
		uint64_t k = home_pages(s, b, lo, hi);
		s->r.mig_home += k != 0;
		s->r.pages_home += k;
	}
}

static void run(struct sim *s, uint64_t dev_bytes)
{
	for (unsigned d = 1; d <= UHMM_TRACE_MAX_DEVS; d++)
		s->cap[d] = (dev_bytes ? dev_bytes : T->hdr.dev[d - 1].mem_bytes) / PAGE;
	if (s->kind == P_SO && s->ops->init) {
		int err = 0;
		s->st = s->ops->init(NULL, &err);
		if (!s->st && err) {
			fprintf(stderr, "uhmm-replay: policy %s refused to start (%d)\n", s->name, err);
			exit(1);
		}
	}
	for (size_t i = 0; i < NE; i++) {
		const struct ev *e = &E[i];
		s->now_ev = i;
		s->now = e->time;
		switch (e->kind) {
		case EV_DEVB:
			dev_batch(s, e);
			break;
		case EV_CPU:
			cpu_fault(s, e);
			break;
		case EV_TO_DEV:
			to_device(s, e->dev, e->addr, e->addr + e->len, false);
			break;
		case EV_HOME:
			forced_home(s, e);
			break;
		}
	}
	if (s->kind == P_SO && s->ops->exit)
		s->ops->exit(s->st);
}

/* ---- building the event list ------------------------------------------------ */

static void add_use(uint64_t bno, size_t ev)
{
	struct blk *u = map_get(&uses, bno, true);
	if (u->nuse && u->use[u->nuse - 1] == ev)
		return;
	if (u->nuse == u->cuse) {
		u->cuse = u->cuse ? u->cuse * 2 : 8;
		u->use = xrealloc(u->use, u->cuse * sizeof(*u->use));
	}
	u->use[u->nuse++] = ev;
}

static void build_events(void)
{
	E = xrealloc(NULL, (T->n + 1) * sizeof(*E));
	for (size_t i = 0; i < T->n; i++) {
		const struct trec *x = &T->v[i];
		const struct uhmm_trace_rec *r = &x->r;
		struct ev e = { .time = r->time };
		if (r->kind == UHMM_TR_DEV_FAULT) {
			/* One batch: from a first fault, the following faults of
			 * the same thread and device that are not first. */
			struct ev *last = NE ? &E[NE - 1] : NULL;
			if (!r->c && last && last->kind == EV_DEVB && last->dev == r->b &&
			    T->v[last->first + last->n - 1].tid == x->tid &&
			    last->first + last->n == i) {
				last->n++;
				add_use(r->addr / BLOCK, NE - 1);
				continue;
			}
			e.kind = EV_DEVB;
			e.dev = r->b;
			e.first = i;
			e.n = 1;
			add_use(r->addr / BLOCK, NE);
		} else if (r->kind == UHMM_TR_CPU_FAULT) {
			e.kind = EV_CPU;
			e.addr = r->addr & ~(PAGE - 1);
			e.write = r->a;
		} else if (r->kind == UHMM_TR_MIGRATE &&
			   (r->c == UHMM_TR_CAUSE_CALL || r->c == UHMM_TR_CAUSE_PREFETCH)) {
			e.kind = r->b ? EV_TO_DEV : EV_HOME;
			e.dev = r->b;
			e.addr = r->addr;
			e.len = r->span;
			if (r->b)
				for (uint64_t a = r->addr & ~(BLOCK - 1); a < r->addr + r->span; a += BLOCK)
					add_use(a / BLOCK, NE);
		} else {
			continue;
		}
		E[NE++] = e;
	}
}

/* ---- main ------------------------------------------------------------------- */

static void report_text(const struct sim *s)
{
	const struct result *r = &s->r;
	printf("%-10s dev_faults %" PRIu64 "  cpu_faults %" PRIu64 "  to_device %" PRIu64
	       " (%" PRIu64 " B)  to_system %" PRIu64 " (%" PRIu64 " B)  evictions %" PRIu64
	       " (%" PRIu64 " B)  remote %" PRIu64 "%s%s\n",
	       s->name, r->dev_faults, r->cpu_faults, r->mig_to_dev, r->pages_to_dev * PAGE,
	       r->mig_home, r->pages_home * PAGE, r->evictions, r->evicted_pages * PAGE,
	       r->remote_maps, s->ejected[0] ? "  ejected: " : "", s->ejected);
}

static void report_json(const struct sim *s, bool last)
{
	const struct result *r = &s->r;
	printf("    {\"policy\": \"%s\", \"dev_faults\": %" PRIu64 ", \"cpu_faults\": %" PRIu64
	       ", \"migrations_to_device\": %" PRIu64 ", \"bytes_to_device\": %" PRIu64
	       ", \"migrations_to_system\": %" PRIu64 ", \"bytes_to_system\": %" PRIu64
	       ", \"evictions\": %" PRIu64 ", \"evicted_bytes\": %" PRIu64
	       ", \"bytes_moved\": %" PRIu64 ", \"remote_maps\": %" PRIu64
	       ", \"ejected\": \"%s\"}%s\n",
	       s->name, r->dev_faults, r->cpu_faults, r->mig_to_dev, r->pages_to_dev * PAGE,
	       r->mig_home, r->pages_home * PAGE, r->evictions, r->evicted_pages * PAGE,
	       (r->pages_to_dev + r->pages_home) * PAGE, r->remote_maps, s->ejected,
	       last ? "" : ",");
}

static int usage(void)
{
	fprintf(stderr, "usage: uhmm-replay [--dev-mib N] [--policy lru|mru|lfu|belady|PATH.so]... "
			"[--json] FILE\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *pol[64];
	size_t npol = 0;
	uint64_t dev_bytes = 0;
	bool json = false;
	const char *file = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--dev-mib") && i + 1 < argc) {
			char *end;
			unsigned long long v = strtoull(argv[++i], &end, 0);
			if (*end || !v || v > (1ull << 30))
				return usage();
			dev_bytes = (uint64_t)v << 20;
		} else if (!strcmp(argv[i], "--policy") && i + 1 < argc) {
			if (npol == 64)
				return usage();
			pol[npol++] = argv[++i];
		} else if (argv[i][0] == '-' || file) {
			return usage();
		} else {
			file = argv[i];
		}
	}
	if (!file)
		return usage();
	if (!npol) {
		pol[npol++] = "lru";
		pol[npol++] = "belady";
	}
	static struct tfile t;
	char err[512];
	if (tfile_load(file, &t, err, sizeof(err))) {
		fprintf(stderr, "uhmm-replay: %s\n", err);
		return 1;
	}
	if (t.truncated)
		fprintf(stderr, "uhmm-replay: %s: truncated after %zu records\n", file, t.n);
	T = &t;
	if (t.hdr.fault_around)
		fault_around = t.hdr.fault_around;
	build_events();
	if (!dev_bytes)
		for (unsigned d = 1; d <= UHMM_TRACE_MAX_DEVS; d++)
			if (t.hdr.dev[d - 1].id && !t.hdr.dev[d - 1].mem_bytes) {
				fprintf(stderr, "uhmm-replay: device %u's memory size is not in the "
						"trace: give --dev-mib\n", d);
				return 1;
			}
	struct sim *sims = calloc(npol, sizeof(*sims));
	if (!sims)
		return 1;
	for (size_t p = 0; p < npol; p++) {
		struct sim *s = &sims[p];
		s->name = pol[p];
		if (!strcmp(pol[p], "lru")) {
			s->kind = P_LRU;
		} else if (!strcmp(pol[p], "mru")) {
			s->kind = P_MRU;
		} else if (!strcmp(pol[p], "lfu")) {
			s->kind = P_LFU;
		} else if (!strcmp(pol[p], "belady")) {
			s->kind = P_BELADY;
		} else {
			s->kind = P_SO;
			void *h = dlopen(pol[p], RTLD_NOW | RTLD_LOCAL);
			const struct uhmm_policy_ops *ops = h ? dlsym(h, "uhmm_policy") : NULL;
			if (!ops) {
				fprintf(stderr, "uhmm-replay: %s: %s\n", pol[p],
					h ? "no symbol uhmm_policy" : dlerror());
				return 1;
			}
			/* As uhmm_policy_set(): version 1, the whole version-1
			 * struct (a larger one, from a newer header, is read
			 * as far as this one goes). */
			if (ops->version != UHMM_POLICY_VERSION ||
			    ops->size < sizeof(struct uhmm_policy_ops)) {
				fprintf(stderr, "uhmm-replay: %s: policy version %u size %u not "
						"supported\n", pol[p], ops->version, ops->size);
				return 1;
			}
			s->ops = ops;
			if (ops->name)
				s->name = ops->name;
		}
		/* Belady's cursors are per run. */
		for (size_t i = 0; i < uses.cap; i++)
			uses.v[i].next = 0;
		run(s, dev_bytes);
	}
	if (json) {
		printf("{\n  \"trace\": \"%s\",\n  \"records\": %zu,\n  \"dev_bytes\": %" PRIu64
		       ",\n  \"policies\": [\n",
		       file, t.n, dev_bytes);
		for (size_t p = 0; p < npol; p++)
			report_json(&sims[p], p + 1 == npol);
		printf("  ]\n}\n");
	} else {
		for (size_t p = 0; p < npol; p++)
			report_text(&sims[p]);
	}
	for (size_t p = 0; p < npol; p++) {
		free(sims[p].blocks.v);
		for (unsigned d = 0; d <= UHMM_TRACE_MAX_DEVS; d++)
			free(sims[p].list[d]);
	}
	free(sims);
	for (size_t i = 0; i < uses.cap; i++)
		free(uses.v[i].use);
	free(uses.v);
	free(E);
	tfile_free(&t);
	return 0;
}
