/* SPDX-License-Identifier: MIT */
/* A policy as a shared object (UHMM_POLICY): a CPU fault brings the
 * faulting page home alone.  Used by test_policy. */
#include <uhmm/policy.h>

static int cpu_fault(void *st, const struct uhmm_pol_cpu_fault *f, struct uhmm_pol_cpu_act *a)
{
	(void)st;
	a->lo = f->addr & ~(uint64_t)(4096u - 1);
	a->hi = a->lo + 4096u;
	a->ahead_lo = a->ahead_hi = 0;
	return 0;
}

__attribute__((visibility("default"))) const struct uhmm_policy_ops uhmm_policy = {
	.version = UHMM_POLICY_VERSION,
	.size = sizeof(struct uhmm_policy_ops),
	.name = "test-one-page",
	.cpu_fault = cpu_fault,
};
