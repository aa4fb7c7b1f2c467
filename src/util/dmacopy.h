/* SPDX-License-Identifier: MIT */
/*
 * util/dmacopy.h - the copy a DMA engine would make, on the CPU.
 *
 * A DMA engine writes memory without filling the CPU's caches; a copy
 * through the caches (glibc's memcpy keeps to cached stores up to a
 * threshold of several MiB) reads each destination line before it
 * overwrites it.  For UHMM_DMA_NT_BYTES or more, 16-byte aligned
 * destinations and lengths a multiple of 128, this copies with
 * non-temporal stores (SSE2, every x86-64): 1.7-2x memcpy on cold 2 MiB
 * chunks on the 2-vCPU VM of docs/PERFORMANCE.md.  Smaller or unaligned
 * copies, and other architectures, use memcpy.  simdev's copy engines move
 * their data with it (src/simdev/copy.c), and uhmm-bench measures the
 * machine's copy ceiling with it (tools/bench/s_oversub.c).
 */
#ifndef UHMM_UTIL_DMACOPY_H
#define UHMM_UTIL_DMACOPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

#define UHMM_DMA_NT_BYTES (64u << 10)

static inline void uhmm__dma_copy(void *dst, const void *src, size_t len)
{
#if defined(__x86_64__) && defined(__SSE2__)
	if (len >= UHMM_DMA_NT_BYTES && !((uintptr_t)dst & 15) && !(len & 127)) {
		__m128i *d = (__m128i *)dst;
		const __m128i *s = (const __m128i *)src;
		for (size_t i = 0; i < len / 16; i += 8) {
			__m128i a0 = _mm_loadu_si128(s + i), a1 = _mm_loadu_si128(s + i + 1);
			__m128i a2 = _mm_loadu_si128(s + i + 2), a3 = _mm_loadu_si128(s + i + 3);
			__m128i a4 = _mm_loadu_si128(s + i + 4), a5 = _mm_loadu_si128(s + i + 5);
			__m128i a6 = _mm_loadu_si128(s + i + 6), a7 = _mm_loadu_si128(s + i + 7);
			_mm_stream_si128(d + i, a0);
			_mm_stream_si128(d + i + 1, a1);
			_mm_stream_si128(d + i + 2, a2);
			_mm_stream_si128(d + i + 3, a3);
			_mm_stream_si128(d + i + 4, a4);
			_mm_stream_si128(d + i + 5, a5);
			_mm_stream_si128(d + i + 6, a6);
			_mm_stream_si128(d + i + 7, a7);
		}
		/* Ordered before whatever publishes the data (a lock's
		 * release does not order streaming stores). */
		_mm_sfence();
		return;
	}
#endif
	memcpy(dst, src, len);
}

#endif
