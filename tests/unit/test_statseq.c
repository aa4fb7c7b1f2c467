/* SPDX-License-Identifier: MIT */
/*
 * test_statseq.c - the live view's seqlock (src/core/statfmt.h), both
 * sides as uhmm (statpub.c) and uhmm-stat (tools/stat/statread.h) use
 * them: a reader never takes a torn copy for a snapshot, and gives up
 * (bounded) on a segment whose writer never lets go of it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/statfmt.h"
#include "statread.h"
#include "testlib.h"

#define WORDS 512 /* a 4 KiB segment: the header and a payload */

size_t uhmm__stat_names_unknown(void);

static uint64_t seg[WORDS] __attribute__((aligned(64)));

/* A writer in the middle of a rewrite (seq odd): no snapshot. */
static void odd_seq_is_no_snapshot(void **state)
{
	(void)state;
	static uint64_t out[WORDS];
	struct uhmm_stat_hdr *h = (void *)seg;
	memset(seg, 0, sizeof(seg));
	uhmm_stat_seq_write_begin(h);
	assert_int_equal(uhmm_stat_seq_read(seg, out, WORDS, NULL, NULL), 0);
	uhmm_stat_seq_write_end(h);
	assert_int_equal(uhmm_stat_seq_read(seg, out, WORDS, NULL, NULL), 1);
	assert_int_equal(atomic_load(&((struct uhmm_stat_hdr *)out)->seq), 2);
}

/* A rewrite that began and ended during the copy: the copy is refused. */
static void rewrite(void *arg)
{
	struct uhmm_stat_hdr *h = arg;
	uhmm_stat_seq_write_begin(h);
	uint64_t v = 7;
	uhmm_stat_words_store(&seg[WORDS - 1], &v, 1);
	uhmm_stat_seq_write_end(h);
}

static void rewrite_during_copy_is_detected(void **state)
{
	(void)state;
	static uint64_t out[WORDS];
	memset(seg, 0, sizeof(seg));
	assert_int_equal(uhmm_stat_seq_read(seg, out, WORDS, rewrite, seg), 0);
	assert_int_equal(uhmm_stat_seq_read(seg, out, WORDS, NULL, NULL), 1);
	assert_int_equal(out[WORDS - 1], 7);
}

/* A segment file whose seq stays odd (its writer died while writing):
 * statread_snapshot gives up with -EAGAIN instead of waiting forever. */
static void dead_writer_is_busy_not_a_hang(void **state)
{
	(void)state;
	char dir[] = "/tmp/uhmm-statseq-XXXXXX", path[256];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/1.1", dir);
	static uint64_t buf[WORDS];
	memset(buf, 0, sizeof(buf));
	struct uhmm_stat_hdr *h = (void *)buf;
	memcpy(h->magic, UHMM_STAT_MAGIC, 8);
	h->version = UHMM_STAT_VERSION;
	h->hdr_size = sizeof(*h);
	h->seg_size = sizeof(buf);
	atomic_store(&h->seq, 5);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, sizeof(buf), 1, f), 1);
	fclose(f);
	struct statseg s;
	assert_int_equal(statread_open(&s, path), 0);
	assert_int_equal(statread_snapshot(&s), -EAGAIN);
	statread_close(&s);
	/* Even, but its layout points past the file: refused, not read. */
	atomic_store(&h->seq, 6);
	h->nstats = 1000;
	h->stats_off = sizeof(*h);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, sizeof(buf), 1, f), 1);
	fclose(f);
	assert_int_equal(statread_open(&s, path), 0);
	assert_int_equal(statread_snapshot(&s), -EPROTO);
	statread_close(&s);
	unlink(path);
	rmdir(dir);
}

/* A writer rewriting the payload as fast as it can, every word of a
 * rewrite the same value: each snapshot a reader takes meanwhile has all
 * its payload words equal (no torn copy), and their values never go back. */
static _Atomic bool stop;

static void *writer(void *arg)
{
	(void)arg;
	static uint64_t stage[WORDS];
	struct uhmm_stat_hdr *h = (void *)seg;
	for (uint64_t v = 1; !atomic_load(&stop); v++) {
		for (size_t i = 0; i < WORDS; i++)
			stage[i] = v;
		uhmm_stat_seq_write_begin(h);
		uhmm_stat_words_store(&seg[UHMM_STAT_SEQ_FIRST_WORD],
				      &stage[UHMM_STAT_SEQ_FIRST_WORD],
				      WORDS - UHMM_STAT_SEQ_FIRST_WORD);
		uhmm_stat_seq_write_end(h);
	}
	return NULL;
}

static void reader_against_a_writer(void **state)
{
	(void)state;
	static uint64_t out[WORDS];
	memset(seg, 0, sizeof(seg));
	atomic_store(&stop, false);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer, NULL), 0);
	uint64_t last = 0;
	size_t good = 0;
	for (int i = 0; i < 20000; i++) {
		if (!uhmm_stat_seq_read(seg, out, WORDS, NULL, NULL))
			continue;
		good++;
		uint64_t v = out[UHMM_STAT_SEQ_FIRST_WORD];
		for (size_t k = UHMM_STAT_SEQ_FIRST_WORD; k < WORDS; k++)
			if (out[k] != v)
				fail_msg("torn snapshot: word %zu is %llu, word 4 %llu", k,
					 (unsigned long long)out[k], (unsigned long long)v);
		assert_true(v >= last);
		last = v;
	}
	atomic_store(&stop, true);
	pthread_join(t, NULL);
	/* The writer gone, the last rewrite reads whole. */
	assert_int_equal(uhmm_stat_seq_read(seg, out, WORDS, NULL, NULL), 1);
	assert_true(out[WORDS - 1] >= last && out[WORDS - 1] == out[UHMM_STAT_SEQ_FIRST_WORD]);
	print_message("%zu snapshots of 20000 tries\n", good);
}

/* Every counter of struct uhmm_stats is published under its name (a
 * counter added to uhmm.h needs its line in statpub.c's table). */
static void every_counter_has_a_name(void **state)
{
	(void)state;
	assert_int_equal(uhmm__stat_names_unknown(), 0);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(odd_seq_is_no_snapshot),
	cmocka_unit_test(rewrite_during_copy_is_detected),
	cmocka_unit_test(dead_writer_is_busy_not_a_hang),
	cmocka_unit_test(reader_against_a_writer),
	cmocka_unit_test(every_counter_has_a_name),
};

UHMM_TEST_MAIN(tests)
