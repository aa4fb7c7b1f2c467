/* SPDX-License-Identifier: MIT */
/*
 * uhmm-topo - print the topology of a context's devices as a matrix, in
 * the manner of `nvidia-smi topo -m` (uhmm/topology.h).
 *
 * It creates a context with N simdevs (their link presets, memory and
 * coherence chosen by the options), queries uhmm_topology() and prints:
 * the link matrix between every pair and to the CPU, the devices' memory,
 * and every pair's bandwidth and latency.
 *
 *   uhmm-topo [-n N] [-l PRESET[,PRESET...]] [-c all|I[,I...]] [-m MiB]
 *             [-d I=DAX]...
 *
 *   -n N       simdevs (1..16; default 2)
 *   -l LIST    link preset of each device in turn (the last one repeats;
 *              uhmm-topo -L lists them); default: UHMM_SIMDEV_LINK or none
 *   -c LIST    devices (0-based) whose memory is coherent, or "all"
 *   -m MiB     memory of each device, a multiple of 2 (default 64)
 *   -d I=DAX   device I's memory on the DAX device DAX in system-ram mode
 *              (uhmm_simdev_opts.dax; its NUMA node is shown with its name)
 *   -L         list the link presets and exit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/topology.h>
#include <uhmm/uhmm.h>

#define MAXDEV 16

static void usage(FILE *f)
{
	fprintf(f, "usage: uhmm-topo [-n N] [-l PRESET[,PRESET...]] [-c all|I[,I...]] "
		   "[-m MiB] [-d I=DAX]... [-L]\n");
}

/* The matrix's code of a link: X self, SYS through system memory, else
 * the direct path's kind. */
static const char *code(const struct uhmm_link_desc *l)
{
	switch (l->kind) {
	case UHMM_LINK_SELF:
		return "X";
	case UHMM_LINK_SYSTEM:
		return "SYS";
	case UHMM_LINK_NVLINK:
		return "NV";
	case UHMM_LINK_PCIE:
		return "PIX";
	case UHMM_LINK_C2C:
		return "C2C";
	case UHMM_LINK_MEMCPY:
		return "MEM";
	case UHMM_LINK_OTHER:
		return "OTH";
	default:
		return "?";
	}
}

static void fmt_bw(char *buf, size_t n, double gbps)
{
	if (gbps == 0)
		snprintf(buf, n, "-");
	else
		snprintf(buf, n, "%.0f", gbps);
}

static void fmt_lat(char *buf, size_t n, uint64_t ns)
{
	if (ns == 0)
		snprintf(buf, n, "-");
	else
		snprintf(buf, n, "%.1f", (double)ns / 1000.0);
}

static void fmt_bytes(char *buf, size_t n, uint64_t b)
{
	if (b >= (1ull << 30) && !(b & ((1ull << 30) - 1)))
		snprintf(buf, n, "%llu GiB", (unsigned long long)(b >> 30));
	else if (b >= (1ull << 20))
		snprintf(buf, n, "%.1f MiB", (double)b / (1 << 20));
	else
		snprintf(buf, n, "%llu KiB", (unsigned long long)(b >> 10));
}

int main(int argc, char **argv)
{
	unsigned ndev = 2;
	const char *links_arg = NULL, *coh_arg = NULL;
	unsigned long mem_mib = 64;
	const char *dax[MAXDEV] = { 0 };
	int c;
	while ((c = getopt(argc, argv, "n:l:c:m:d:Lh")) != -1) {
		switch (c) {
		case 'd': {
			char *end;
			unsigned long i = strtoul(optarg, &end, 0);
			if (end == optarg || *end != '=' || i >= MAXDEV || !end[1]) {
				fprintf(stderr, "uhmm-topo: -d %s: not I=DAX\n", optarg);
				return 2;
			}
			dax[i] = end + 1;
			break;
		}
		case 'n':
			ndev = (unsigned)strtoul(optarg, NULL, 0);
			break;
		case 'l':
			links_arg = optarg;
			break;
		case 'c':
			coh_arg = optarg;
			break;
		case 'm':
			mem_mib = strtoul(optarg, NULL, 0);
			break;
		case 'L':
			for (unsigned i = 0; uhmm_simdev_link_name(i); i++) {
				struct uhmm_simdev_link l;
				if (uhmm_simdev_link_preset(uhmm_simdev_link_name(i), &l) == 0)
					printf("%-8s %s\n", l.name, l.what);
			}
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (ndev < 1 || ndev > MAXDEV || mem_mib == 0 || mem_mib % 2) {
		usage(stderr);
		return 2;
	}
	for (unsigned i = ndev; i < MAXDEV; i++)
		if (dax[i]) {
			fprintf(stderr, "uhmm-topo: -d: no device %u\n", i);
			return 2;
		}

	/* Options of each device. */
	char *links[MAXDEV] = { 0 }, *links_copy = NULL;
	bool coherent[MAXDEV] = { 0 };
	if (links_arg) {
		char *copy = links_copy = strdup(links_arg), *save = NULL;
		unsigned i = 0;
		for (char *t = strtok_r(copy, ",", &save); t && i < MAXDEV;
		     t = strtok_r(NULL, ",", &save))
			links[i++] = t;
		for (; i > 0 && i < MAXDEV; i++)
			links[i] = links[i - 1];
	}
	if (coh_arg) {
		if (!strcmp(coh_arg, "all")) {
			for (unsigned i = 0; i < MAXDEV; i++)
				coherent[i] = true;
		} else {
			char *copy = strdup(coh_arg), *save = NULL;
			for (char *t = strtok_r(copy, ",", &save); t;
			     t = strtok_r(NULL, ",", &save)) {
				unsigned long i = strtoul(t, NULL, 0);
				if (i >= ndev) {
					fprintf(stderr, "uhmm-topo: -c: no device %lu\n", i);
					return 2;
				}
				coherent[i] = true;
			}
			free(copy);
		}
	}

	uhmm_ctx *ctx;
	int err = uhmm_ctx_create(NULL, &ctx);
	if (err) {
		fprintf(stderr, "uhmm-topo: uhmm_ctx_create: %s\n", uhmm_strerror(err));
		return 1;
	}
	uhmm_device *made[MAXDEV] = { 0 };
	for (unsigned i = 0; i < ndev; i++) {
		struct uhmm_simdev_opts o;
		uhmm_simdev_opts_init(&o);
		o.mem_bytes = (uint64_t)mem_mib << 20;
		o.link = links[i];
		o.coherent = coherent[i];
		o.dax = dax[i];
		err = uhmm_simdev_create(ctx, &o, &made[i]);
		if (err) {
			fprintf(stderr, "uhmm-topo: simdev %u (%s%s%s%s): %s\n", i,
				links[i] ? links[i] : "default link",
				coherent[i] ? ", coherent" : "", dax[i] ? ", on " : "",
				dax[i] ? dax[i] : "",
				dax[i] && err == -ENODEV ? "no such DAX device"
				: dax[i] && err == -EOPNOTSUPP
					? "DAX device not in system-ram mode"
					: uhmm_strerror(err));
			uhmm_ctx_destroy(ctx);
			free(links_copy);
			return 1;
		}
	}

	struct uhmm_topo_dev devs[MAXDEV];
	struct uhmm_topo_link mat[MAXDEV * MAXDEV];
	long n = uhmm_topology(ctx, devs, MAXDEV, mat);
	if (n < 0) {
		fprintf(stderr, "uhmm-topo: uhmm_topology: %s\n", uhmm_strerror((int)n));
		uhmm_ctx_destroy(ctx);
		free(links_copy);
		return 1;
	}
	if (n > MAXDEV)
		n = MAXDEV;

	/* The matrix. */
	printf("%-10s", "");
	for (long j = 0; j < n; j++)
		printf(" %-9.9s", devs[j].name);
	printf(" %-9s %s\n", "CPU", "NUMA");
	for (long i = 0; i < n; i++) {
		printf("%-10.10s", devs[i].name);
		for (long j = 0; j < n; j++)
			printf(" %-9s", code(&mat[i * MAXDEV + j].link));
		/* The DAX device it stands on, if -d named one. */
		const char *on = NULL;
		for (unsigned k = 0; k < ndev; k++)
			if (made[k] == devs[i].dev)
				on = dax[k];
		char numa[64];
		if (devs[i].numa_node >= 0 && on)
			snprintf(numa, sizeof(numa), "%d (%s)", devs[i].numa_node, on);
		else if (devs[i].numa_node >= 0)
			snprintf(numa, sizeof(numa), "%d", devs[i].numa_node);
		else
			snprintf(numa, sizeof(numa), "N/A");
		printf(" %-9s %s\n", uhmm_link_kind_name(devs[i].host.kind), numa);
	}
	printf("\nLegend:\n"
	       "  X    = self\n"
	       "  SYS  = no peer access: traffic goes through system memory\n"
	       "  NV   = peer access over an NVLink-class fabric\n"
	       "  PIX  = peer access over PCIe (P2P through a switch)\n"
	       "  C2C  = a cache-coherent chip-to-chip link\n"
	       "  MEM  = no link modelled: the same memory, copied at memcpy speed\n"
	       "  OTH  = a link of the backend's own figures\n"
	       "  CPU column: the kind of the device's link to the CPU\n");

	/* The devices. */
	printf("\n%-10s %-3s %-8s %-10s %-10s %-8s %-9s %-6s\n", "Device", "id", "Memory",
	       "Size", "In use", "Host", "GB/s", "lat us");
	for (long i = 0; i < n; i++) {
		char sz[32], use[32], bw[16], lat[16];
		fmt_bytes(sz, sizeof(sz), devs[i].mem_bytes);
		fmt_bytes(use, sizeof(use), devs[i].bytes_in_use);
		fmt_bw(bw, sizeof(bw), devs[i].host.bandwidth_gbps);
		fmt_lat(lat, sizeof(lat), devs[i].host.latency_ns);
		printf("%-10.10s %-3u %-8s %-10s %-10s %-8s %-9s %-6s\n", devs[i].name,
		       devs[i].id, devs[i].mem_kind == UHMM_MEM_COHERENT ? "coherent" : "private",
		       devs[i].mem_bytes ? sz : "?", use,
		       devs[i].host.name[0] ? devs[i].host.name : "?", bw, lat);
	}

	/* The pairs. */
	if (n > 1) {
		printf("\n%-10s %-10s %-8s %-5s %-9s %-6s\n", "From", "To", "Link", "Peer",
		       "GB/s", "lat us");
		for (long i = 0; i < n; i++) {
			for (long j = 0; j < n; j++) {
				if (i == j)
					continue;
				const struct uhmm_topo_link *l = &mat[i * MAXDEV + j];
				char bw[16], lat[16];
				fmt_bw(bw, sizeof(bw), l->link.bandwidth_gbps);
				fmt_lat(lat, sizeof(lat), l->link.latency_ns);
				printf("%-10.10s %-10.10s %-8s %-5s %-9s %-6s\n", devs[i].name,
				       devs[j].name, l->link.name,
				       l->flags & UHMM_TOPO_PEER_ACCESS ? "yes" : "no", bw, lat);
			}
		}
		printf("(GB/s per direction, 10^9 B/s; '-': unlimited or not modelled)\n");
	}
	uhmm_ctx_destroy(ctx);
	free(links_copy);
	return 0;
}
