/* SPDX-License-Identifier: MIT */
/*
 * uhmm-workloads - shared declarations.
 *
 * A workload generates its input from the seed, computes a CPU reference
 * (timed: the CPU-only run), runs its kernels on a simdev between
 * wl_phase_begin() and wl_phase_end() (timed, with uhmm's and simdev's
 * counters read on both sides), then verifies the result against the
 * reference and counts the mismatches in out->bad.  main.c runs the
 * workloads at each size and prints the table or JSON.
 */
#ifndef UHMM_WL_H
#define UHMM_WL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#define WL_PAGE 4096u
#define WL_HUGE (2u << 20)

/* Fault modes (--mode). */
enum wl_mode {
	WL_TOUCH = 0,    /* migrate on the device's first touch (simdev default) */
	WL_REMOTE = 1,   /* map system pages remotely (UHMM_SIMDEV_MAP_REMOTE) */
	WL_PREFETCH = 2, /* uhmm_migrate the inputs to the device first (what
			  * fits in half its memory), then migrate on touch */
};

/* One run of one workload. */
struct wl {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	uint64_t dev_bytes;  /* device memory */
	size_t bytes;        /* footprint asked for (managed bytes) */
	uint64_t seed;
	bool quick;
	enum wl_mode mode;
	/* Managed memory of the run (wl_arena), released by main.c. */
	char *arena;
	size_t arena_len, arena_used;
	/* Registered heap span (pointer-chasing workloads). */
	void *reg;
	size_t reg_len;
	/* Counters at wl_phase_begin. */
	struct uhmm_stats s0;
	struct uhmm_simdev_stats d0;
	struct uhmm_simdev_meminfo m0;
	uint64_t t0;
};

/* What a run reports. */
struct wl_out {
	uint64_t dev_ns;         /* device phase */
	uint64_t cpu_ns;         /* CPU-only reference */
	uint64_t footprint;      /* managed bytes the run used */
	uint64_t bad;            /* verification mismatches */
	int err;                 /* a call failed (negative errno) */
	/* Deltas over the device phase. */
	uint64_t dev_faults, fault_batches, dev_migrations, remote_maps, exclusive;
	uint64_t to_dev_pages, to_sys_pages, to_dev_bytes, to_sys_bytes;
	uint64_t evicted_pages, cpu_faults, link_model_ns;
	char note[96];
};

struct workload {
	const char *name;
	const char *group;
	const char *what;
	void (*run)(struct wl *w, struct wl_out *o);
};
extern const struct workload wl_all[];
extern const size_t wl_count;

/* Managed memory: @bytes (rounded up to 64) of the run's arena, zeroed,
 * 64-byte aligned; NULL (and o->err) when it does not fit. */
void *wl_arena(struct wl *w, struct wl_out *o, size_t bytes);
/* Managed bytes a run may still take from its arena. */
size_t wl_arena_left(const struct wl *w);

/* The device phase: applies the fault mode (advice over the arena and the
 * registered span; prefetch), reads the counters and starts the clock;
 * wl_phase_end stops it and fills the deltas of @o. */
void wl_phase_begin(struct wl *w);
void wl_phase_end(struct wl *w, struct wl_out *o);

/* uhmm_simdev_launch, recording a failure in o->err; returns the error. */
int wl_launch(struct wl *w, struct wl_out *o, uhmm_simdev_kernel fn, uint64_t grid,
	      void *arg);
/* Records a failed call (err < 0) once, with its name, in @o. */
void wl_fail(struct wl_out *o, const char *what, int err);

/* Registers the page-aligned span of the heap containing [lo, hi); the
 * device phase's advice covers it too; main.c unregisters it. */
int wl_register_span(struct wl *w, struct wl_out *o, uintptr_t lo, uintptr_t hi);

uint64_t wl_now_ns(void);

/* Deterministic input: splitmix64 of (seed, stream, i). */
static inline uint64_t wl_mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static inline uint64_t wl_rand(uint64_t seed, uint64_t stream, uint64_t i)
{
	return wl_mix(seed ^ wl_mix(stream * 0x632be59bd9b4e019ull + i));
}
/* A float in [0, 1) with 24 significant bits. */
static inline float wl_randf(uint64_t seed, uint64_t stream, uint64_t i)
{
	return (float)(wl_rand(seed, stream, i) >> 40) * (1.0f / 16777216.0f);
}
/* Sequential generator (xorshift64*), seeded from a hash. */
static inline uint64_t wl_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/*
 * Float and double accessors of simdev memory: simdev's own (inline on a
 * TLB hit, uhmm/simdev.h).  One small function per type, so that a
 * workload can be pointed at other accessors in one place.
 */
static inline float wl_ldf(uhmm_simdev_item *wi, const float *p)
{
	return uhmm_simdev_ldf32(wi, p);
}
static inline void wl_stf(uhmm_simdev_item *wi, float *p, float f)
{
	uhmm_simdev_stf32(wi, p, f);
}
static inline double wl_ldd(uhmm_simdev_item *wi, const double *p)
{
	return uhmm_simdev_ldf64(wi, p);
}
static inline void wl_std(uhmm_simdev_item *wi, double *p, double d)
{
	uhmm_simdev_stf64(wi, p, d);
}
static inline void *wl_ldp(uhmm_simdev_item *wi, void *const *p)
{
	return (void *)(uintptr_t)uhmm_simdev_ld64(wi, p);
}

/* Float comparison: equal within a relative @tol (or both tiny). */
static inline bool wl_close(double a, double b, double tol)
{
	double d = a - b, m = (a < 0 ? -a : a) > (b < 0 ? -b : b) ? (a < 0 ? -a : a)
							       : (b < 0 ? -b : b);
	if (d < 0)
		d = -d;
	return d <= tol * (m > 1e-30 ? m : 1e-30) || d < 1e-30;
}

/* The workloads (w_*.c). */
void wl_triad(struct wl *w, struct wl_out *o);
void wl_saxpy(struct wl *w, struct wl_out *o);
void wl_jacobi(struct wl *w, struct wl_out *o);
void wl_matmul(struct wl *w, struct wl_out *o);
void wl_bfs(struct wl *w, struct wl_out *o);
void wl_spmv(struct wl *w, struct wl_out *o);
void wl_gups(struct wl *w, struct wl_out *o);
void wl_kmeans(struct wl *w, struct wl_out *o);
void wl_list(struct wl *w, struct wl_out *o);
void wl_tree(struct wl *w, struct wl_out *o);
void wl_pingpong(struct wl *w, struct wl_out *o);
void wl_histogram(struct wl *w, struct wl_out *o);
void wl_hash(struct wl *w, struct wl_out *o);
void wl_hash1(struct wl *w, struct wl_out *o);
/* Frees the heap nodes of the chase workloads, once their span is
 * unregistered (main.c, after each run). */
void wl_chase_cleanup(void);

#endif /* UHMM_WL_H */
