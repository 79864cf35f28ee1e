/* test_graph.c — union-find, components, spanning-forest weakest links, kept images, benchmark rules and
 * pHash pairs on small graphs whose answers are worked out by hand in the comments. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "dedup/graph.h"
#include "dedup/unionfind.h"

static void test_unionfind(void **state)
{
    (void)state;
    unionfind u;
    assert_int_equal(uf_init(&u, 6), 0);
    assert_int_equal(uf_union(&u, 4, 5), 1);
    assert_int_equal(uf_union(&u, 5, 2), 1);
    assert_int_equal(uf_union(&u, 2, 4), 0); /* already joined */
    assert_int_equal(uf_min(&u, 5), 2);
    assert_int_equal(uf_size(&u, 4), 3);
    assert_int_equal(uf_min(&u, 0), 0);
    assert_int_equal(uf_size(&u, 1), 1);
    assert_true(uf_find(&u, 2) == uf_find(&u, 5));
    assert_true(uf_find(&u, 0) != uf_find(&u, 1));
    uf_free(&u);
}

/* Nodes 0..6. Chain 0-1 0.9, 1-2 0.7, 0-2 absent (below threshold): one component, weakest link 1-2 0.7.
 * Triangle 3-4 0.95, 4-5 0.8, 3-5 0.65: the spanning forest skips 3-5, so the weakest link is 4-5 0.8.
 * Node 6 alone. Scores (pixels): node 2 largest in the chain, node 5 largest in the triangle. */
static void test_components_and_weakest(void **state)
{
    (void)state;
    dg_edge e[] = {{.a = 1, .b = 2, .sim = 0.7}, {.a = 3, .b = 5, .sim = 0.65}, {.a = 0, .b = 1, .sim = 0.9},
                   {.a = 4, .b = 5, .sim = 0.8}, {.a = 3, .b = 4, .sim = 0.95}};
    int64_t score[7] = {10, 10, 50, 10, 10, 40, 5};
    uint8_t hb[7] = {0};
    double bs[7] = {0};
    dg_input in = {.n = 7, .score = score, .has_bench = hb, .bench_sim = bs, .bench_rule = DG_RULE_COMPONENT};
    dg_result r;
    assert_int_equal(dg_compute(&in, e, 5, &r), 0);
    int32_t comp[7] = {0, 0, 0, 3, 3, 3, 6};
    for (int i = 0; i < 7; i++)
        assert_int_equal(r.comp[i], comp[i]);
    assert_int_equal(r.size[0], 3);
    assert_int_equal(r.size[3], 3);
    assert_int_equal(r.size[6], 1);
    assert_true(e[r.weakest[0]].a == 1 && e[r.weakest[0]].b == 2);
    assert_true(e[r.weakest[3]].a == 4 && e[r.weakest[3]].b == 5);
    assert_int_equal(r.weakest[6], -1);
    assert_true(e[r.strongest[3]].sim == 0.95);
    assert_int_equal(r.kept[0], 2);
    assert_int_equal(r.kept[3], 5);
    assert_int_equal(r.kept[6], 6);
    assert_int_equal(r.decision[2], DG_KEPT);
    assert_int_equal(r.decision[0], DG_DUPLICATE);
    assert_int_equal(r.decision[1], DG_DUPLICATE);
    assert_int_equal(r.removed_dup[3], 2);
    /* Strongest edge of node 2 is 1-2 (its only one); of node 5, 4-5 0.8 (not 3-5 0.65). */
    assert_true(e[r.edge[2]].sim == 0.7);
    assert_true(e[r.edge[5]].sim == 0.8);
    assert_int_equal(r.edge[6], -1);
    dg_result_free(&r);
}

/* Benchmarks: node 1 matches (0.5), node 3 matches (0.47) and node 4 (0.49) too; components {0,1}, {2}, {3,4}.
 * Component rule: 0 and 1 go (attributed to 1), 3 and 4 go (attributed to 4, the stronger match); 2 stays.
 * Image rule: 1, 3 and 4 go; 0 is kept. */
static void test_benchmark_rules(void **state)
{
    (void)state;
    int64_t score[5] = {0, 0, 0, 0, 0};
    uint8_t hb[5] = {0, 1, 0, 1, 1};
    double bs[5] = {0, 0.5, 0, 0.47, 0.49};
    for (int rule = 0; rule < 2; rule++) {
        dg_edge e[] = {{.a = 0, .b = 1, .sim = 0.9}, {.a = 3, .b = 4, .sim = 0.8}};
        dg_input in = {.n = 5, .score = score, .has_bench = hb, .bench_sim = bs, .bench_rule = rule};
        dg_result r;
        assert_int_equal(dg_compute(&in, e, 2, &r), 0);
        assert_int_equal(r.best_bench[3], 4);
        assert_int_equal(r.decision[2], DG_KEPT);
        if (rule == DG_RULE_COMPONENT) {
            assert_int_equal(r.decision[0], DG_BENCHMARK);
            assert_int_equal(r.bench_via[0], 1);
            assert_int_equal(r.bench_via[3], 3);
            assert_int_equal(r.kept[0], -1);
            assert_int_equal(r.removed_bench[3], 2);
        } else {
            assert_int_equal(r.decision[0], DG_KEPT);
            assert_int_equal(r.decision[1], DG_BENCHMARK);
            assert_int_equal(r.kept[0], 0);
            assert_int_equal(r.kept[3], -1);
        }
        dg_result_free(&r);
    }
}

static void test_bad_edge(void **state)
{
    (void)state;
    int64_t score[2] = {0, 0};
    uint8_t hb[2] = {0, 0};
    double bs[2] = {0, 0};
    dg_edge e[] = {{.a = 1, .b = 0, .sim = 0.9}};
    dg_input in = {.n = 2, .score = score, .has_bench = hb, .bench_sim = bs};
    dg_result r;
    assert_int_equal(dg_compute(&in, e, 1, &r), -1);
}

/* pHash: nodes 0 and 3 equal, node 1 two bits from them, node 2 far, node 4 without a hash. */
static void test_phash_pairs(void **state)
{
    (void)state;
    uint64_t h[5] = {0xF0F0F0F0F0F0F0F0ull, 0xF0F0F0F0F0F0F0F3ull, 0x0F0F0F0F0F0F0F0Full, 0xF0F0F0F0F0F0F0F0ull, 0};
    uint8_t has[5] = {1, 1, 1, 1, 0};
    dg_edge *p;
    int64_t n;
    assert_int_equal(dg_phash_pairs(h, has, 5, 0, &p, &n), 0);
    assert_int_equal(n, 1);
    assert_true(p[0].a == 0 && p[0].b == 3 && p[0].phash_dist == 0);
    free(p);
    assert_int_equal(dg_phash_pairs(h, has, 5, 2, &p, &n), 0);
    assert_int_equal(n, 2); /* 0-3 (equal) and 0-1 (lowest node of the equal pair to node 1) */
    assert_true(p[0].a == 0 && p[0].b == 1 && p[0].phash_dist == 2); /* sorted by pair */
    assert_true(p[1].a == 0 && p[1].b == 3 && p[1].phash_dist == 0);
    free(p);
    assert_int_equal(dg_phash_pairs(h, has, 5, 1, &p, &n), 0);
    assert_int_equal(n, 1);
    free(p);
    assert_int_equal(dg_phash_pairs(h, has, 5, 11, &p, &n), -1);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unionfind),       cmocka_unit_test(test_components_and_weakest),
        cmocka_unit_test(test_benchmark_rules), cmocka_unit_test(test_bad_edge),
        cmocka_unit_test(test_phash_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
