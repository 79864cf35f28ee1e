/* test_registry.c — the seed registry: the shipped schemas/lvd142m.yaml against Table 15 of the DINOv2 paper
 * (a copy written out below, and the file as PyYAML reads it), defaults, every malformation with its line,
 * slugs, row names and --only. argv[1] is the tests/ source directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "retrieve/registry.h"
#include "sha256.h"

static char g_shipped[4096]; /* tests/../schemas/lvd142m.yaml */
static char g_scratch[64];

/* ---- the shipped registry ---- */

/* Table 15 of the paper (docs/dinov2-recipe.md §1), typed out independently of the YAML file. */
typedef struct table15_row {
    const char *task, *dataset, *split;
    registry_method method;
    int64_t k, seeds, final;
} table15_row;

static const table15_row table15[] = {
    {"classification", "ImageNet-22k", "", REGISTRY_AS_IS, 0, 14197086, 14197086},
    {"classification", "ImageNet-22k", "", REGISTRY_SAMPLE, 4, 14197086, 56788344},
    {"classification", "ImageNet-1k", "train", REGISTRY_SAMPLE, 32, 1281167, 40997344},
    {"fine-grained", "Caltech 101", "train", REGISTRY_CLUSTER, 0, 3030, 1000000},
    {"fine-grained", "CUB-200-2011", "train", REGISTRY_CLUSTER, 0, 5994, 1000000},
    {"fine-grained", "DTD", "train1", REGISTRY_CLUSTER, 0, 1880, 1000000},
    {"fine-grained", "FGVC-Aircraft", "train", REGISTRY_CLUSTER, 0, 3334, 1000000},
    {"fine-grained", "Flowers-102", "train", REGISTRY_CLUSTER, 0, 1020, 1000000},
    {"fine-grained", "Food-101", "train", REGISTRY_CLUSTER, 0, 75750, 1000000},
    {"fine-grained", "Oxford-IIIT Pet", "trainval", REGISTRY_CLUSTER, 0, 3680, 1000000},
    {"fine-grained", "Stanford Cars", "train", REGISTRY_CLUSTER, 0, 8144, 1000000},
    {"fine-grained", "SUN397", "train1", REGISTRY_CLUSTER, 0, 19850, 1000000},
    {"fine-grained", "Pascal VOC 2007", "train", REGISTRY_CLUSTER, 0, 2501, 1000000},
    {"segmentation", "ADE20K", "train", REGISTRY_CLUSTER, 0, 20210, 1000000},
    {"segmentation", "Cityscapes", "train", REGISTRY_CLUSTER, 0, 2975, 1000000},
    {"segmentation", "Pascal VOC 2012 seg", "trainaug", REGISTRY_CLUSTER, 0, 1464, 1000000},
    {"depth", "Mapillary SLS", "train", REGISTRY_AS_IS, 0, 1434262, 1434262},
    {"depth", "KITTI", "train (Eigen)", REGISTRY_CLUSTER, 0, 23158, 1000000},
    {"depth", "NYU Depth V2", "train", REGISTRY_CLUSTER, 0, 24231, 1000000},
    {"depth", "SUN RGB-D", "train", REGISTRY_CLUSTER, 0, 4829, 1000000},
    {"retrieval", "Google Landmarks v2", "train clean", REGISTRY_AS_IS, 0, 1580470, 1580470},
    {"retrieval", "Google Landmarks v2", "train clean", REGISTRY_SAMPLE, 4, 1580470, 6321880},
    {"retrieval", "AmsterTime", "new", REGISTRY_CLUSTER, 0, 1231, 960000},
    {"retrieval", "AmsterTime", "old", REGISTRY_CLUSTER, 0, 1231, 830000},
    {"retrieval", "Met", "train", REGISTRY_CLUSTER, 0, 397121, 1000000},
    {"retrieval", "Revisiting Oxford", "base", REGISTRY_CLUSTER, 0, 4993, 1000000},
    {"retrieval", "Revisiting Paris", "base", REGISTRY_CLUSTER, 0, 6322, 1000000},
};
#define TABLE15_ROWS ((int)(sizeof table15 / sizeof table15[0]))

static void load_ok(const char *path, registry *r)
{
    if (registry_load(path, r) != 0)
        fail_msg("registry_load %s: %s", path, lvd_errmsg());
}

static void test_shipped_is_table15(void **state)
{
    (void)state;
    assert_int_equal(TABLE15_ROWS, 27);
    registry r;
    load_ok(g_shipped, &r);
    assert_int_equal(r.nrows, 27);
    int64_t total = 0, seeds_total = 0;
    for (int i = 0; i < r.nrows; i++) {
        const registry_row *x = &r.rows[i];
        const table15_row *t = &table15[i];
        if (strcmp(x->task, t->task) || strcmp(x->dataset, t->dataset) || strcmp(x->split, t->split))
            fail_msg("row %d (%s): %s / %s / %s, Table 15 has %s / %s / %s", i, x->name, x->task, x->dataset,
                     x->split, t->task, t->dataset, t->split);
        assert_int_equal(x->method, t->method);
        assert_int_equal(x->k, t->k);
        assert_int_equal(x->paper_seeds, t->seeds);
        assert_int_equal(x->paper_final, t->final);
        total += x->paper_final;
        seeds_total += x->paper_seeds;
        /* The paper's cluster parameters on every cluster row, none on the others. */
        int cl = x->method == REGISTRY_CLUSTER;
        assert_int_equal(x->clusters, cl ? 100000 : 0);
        assert_int_equal(x->per_cluster, cl ? 10000 : 0);
        assert_int_equal(x->cap, cl ? 1000000 : 0);
        assert_int_equal(x->min_seeds, cl ? 3 : 0);
        /* A cluster row never gives more than its cap; an as-is row gives its seeds; a sample row at most
         * k per seed. */
        if (cl)
            assert_true(x->paper_final <= x->cap);
        if (x->method == REGISTRY_AS_IS)
            assert_int_equal(x->paper_final, x->paper_seeds);
        if (x->method == REGISTRY_SAMPLE)
            assert_true(x->paper_final <= x->k * x->paper_seeds);
        /* Every row names its collection; it is the dataset's slug, with the split only for AmsterTime, whose
         * two splits are two seed sets. */
        assert_int_equal(x->collection_given, 1);
        char want[512], both[512];
        if (strcmp(x->dataset, "AmsterTime") == 0) {
            snprintf(both, sizeof both, "%s %s", x->dataset, x->split);
            assert_true(registry_slug(both, want, sizeof want) > 0);
        } else {
            assert_true(registry_slug(x->dataset, want, sizeof want) > 0);
        }
        assert_string_equal(x->collection, want);
        assert_int_equal(registry_check_name(x->name), 0);
        assert_int_equal(registry_find(&r, x->name), i);
        assert_true(x->line > 1);
    }
    assert_int_equal(total, 142109386);
    /* Rows of one dataset share a collection exactly when they share its split. */
    for (int i = 0; i < r.nrows; i++)
        for (int j = i + 1; j < r.nrows; j++) {
            const registry_row *x = &r.rows[i], *y = &r.rows[j];
            int same_seeds = !strcmp(x->dataset, y->dataset) && !strcmp(x->split, y->split);
            assert_int_equal(same_seeds, !strcmp(x->collection, y->collection));
        }
    assert_string_equal(r.rows[registry_find(&r, "imagenet22k-sample")].collection, "imagenet-22k");
    assert_string_equal(r.rows[registry_find(&r, "imagenet22k-as-is")].collection, "imagenet-22k");
    assert_string_equal(r.rows[registry_find(&r, "amstertime-new")].collection, "amstertime-new");
    assert_string_equal(r.rows[registry_find(&r, "amstertime-old")].collection, "amstertime-old");
    printf("# 27 rows, %lld seed images, %lld final images\n", (long long)seeds_total, (long long)total);

    /* The text and digest are the file's bytes. */
    size_t len;
    uint8_t *bytes = scratch_slurp(g_shipped, &len);
    assert_int_equal(r.text_len, len);
    assert_memory_equal(r.text, bytes, len);
    assert_int_equal(r.text[len], '\0');
    char hex[SHA256_HEX];
    sha256_hex(bytes, len, hex);
    assert_string_equal(r.sha256, hex);
    assert_string_equal(r.path, g_shipped);
    free(bytes);
    registry_free(&r);
    assert_null(r.rows);
    registry_free(&r); /* twice is harmless */
}

/* The shipped file as PyYAML (another YAML implementation) reads it gives the same rows. */
static void test_shipped_as_pyyaml_reads_it(void **state)
{
    (void)state;
    if (system("/usr/bin/python3 -c 'import yaml' >/dev/null 2>&1") != 0)
        skip();
    char script[256], out[16384], cmd[8192];
    scratch_join(script, sizeof script, g_scratch, "rows.py");
    static const char py[] = "import sys, yaml\n"
                             "d = yaml.safe_load(open(sys.argv[1]))\n"
                             "for r in d['rows']:\n"
                             "    print('|'.join(str(r.get(k, '')) for k in\n"
                             "        ('name', 'task', 'dataset', 'split', 'method', 'k', 'paper_seeds',\n"
                             "         'paper_final', 'collection')))\n";
    scratch_spit(script, py, strlen(py));
    snprintf(cmd, sizeof cmd, "'%s'", g_shipped);
    scratch_python(script, cmd, out, sizeof out);
    registry r;
    load_ok(g_shipped, &r);
    char *save = NULL, *line = strtok_r(out, "\n", &save);
    for (int i = 0; i < r.nrows; i++, line = strtok_r(NULL, "\n", &save)) {
        assert_non_null(line);
        const registry_row *x = &r.rows[i];
        char k[32] = "", want[1024];
        if (x->method == REGISTRY_SAMPLE)
            snprintf(k, sizeof k, "%lld", (long long)x->k);
        snprintf(want, sizeof want, "%s|%s|%s|%s|%s|%s|%lld|%lld|%s", x->name, x->task, x->dataset, x->split,
                 registry_method_name(x->method), k, (long long)x->paper_seeds, (long long)x->paper_final,
                 x->collection);
        assert_string_equal(line, want);
    }
    assert_null(line);
    registry_free(&r);
}

/* ---- the format ---- */

static void write_reg(const char *name, const char *text, char *path, size_t cap)
{
    scratch_join(path, cap, g_scratch, name);
    scratch_spit(path, text, strlen(text));
}

static void test_defaults_and_spellings(void **state)
{
    (void)state;
    static const char text[] = "# a registry of my own\n"
                               "defaults:\n"
                               "  clusters: 50\n"
                               "  per-cluster: 7\n"
                               "rows:\n"
                               "  - name: mine\n"                 /* line 6 */
                               "    method: cluster\n"
                               "    dataset: My Photos (2024)!\n"
                               "    min_seeds: 0\n"
                               "  - name: other.v2\n"             /* line 10 */
                               "    method: cluster\n"
                               "    dataset: x\n"
                               "    clusters: 9\n"
                               "    cap: 12\n"
                               "    split: ~\n"
                               "    task:\n"
                               "    collection: Café (seed)\n"
                               "  - {name: s, method: sample, k: 1, dataset: '--Ab__c--'}\n" /* line 18 */
                               "  - name: a\n"
                               "    method: as-is\n"
                               "    dataset: \"A\"\n";
    char path[256];
    write_reg("defaults.yaml", text, path, sizeof path);
    registry r;
    load_ok(path, &r);
    assert_int_equal(r.nrows, 4);
    const registry_row *a = &r.rows[0], *b = &r.rows[1], *s = &r.rows[2], *d = &r.rows[3];
    assert_int_equal(a->line, 6);
    assert_int_equal(b->line, 10);
    assert_int_equal(s->line, 18);
    /* defaults, then the paper's for what neither sets */
    assert_int_equal(a->clusters, 50);
    assert_int_equal(a->per_cluster, 7);
    assert_int_equal(a->cap, 1000000);
    assert_int_equal(a->min_seeds, 0);
    assert_string_equal(a->collection, "my-photos-2024");
    assert_int_equal(a->collection_given, 0);
    assert_int_equal(a->paper_seeds, REGISTRY_UNKNOWN);
    assert_int_equal(a->paper_final, REGISTRY_UNKNOWN);
    assert_string_equal(a->task, "");
    /* a row's own values win */
    assert_int_equal(b->clusters, 9);
    assert_int_equal(b->per_cluster, 7);
    assert_int_equal(b->cap, 12);
    assert_int_equal(b->min_seeds, 3);
    assert_string_equal(b->split, "");
    assert_string_equal(b->task, "");
    assert_string_equal(b->collection, "Café (seed)");
    assert_int_equal(b->collection_given, 1);
    /* sample rows: k, no cluster parameters */
    assert_int_equal(s->method, REGISTRY_SAMPLE);
    assert_int_equal(s->k, 1);
    assert_int_equal(s->clusters, 0);
    assert_string_equal(s->collection, "ab-c");
    assert_int_equal(d->method, REGISTRY_AS_IS);
    assert_string_equal(d->collection, "a");
    assert_string_equal(registry_method_name(d->method), "as_is");
    registry_free(&r);

    /* No defaults at all: the paper's. */
    write_reg("nodefaults.yaml", "rows:\n- {name: c, method: cluster, dataset: C}\n", path, sizeof path);
    load_ok(path, &r);
    assert_int_equal(r.rows[0].clusters, REGISTRY_DEFAULT_CLUSTERS);
    assert_int_equal(r.rows[0].per_cluster, REGISTRY_DEFAULT_PER_CLUSTER);
    assert_int_equal(r.rows[0].cap, REGISTRY_DEFAULT_CAP);
    assert_int_equal(r.rows[0].min_seeds, REGISTRY_DEFAULT_MIN_SEEDS);
    registry_free(&r);
}

typedef struct bad_case {
    const char *text;
    int line;         /* expected in "FILE:LINE: " */
    const char *what; /* a part of the message */
} bad_case;

#define ROW "rows:\n  - name: a\n    method: cluster\n    dataset: A\n" /* lines 1-4 */
#define SROW "rows:\n  - name: a\n    method: sample\n    dataset: A\n"

static const bad_case bad_cases[] = {
    /* the method */
    {"rows:\n  - name: a\n    method: knn\n    dataset: A\n", 3, "method 'knn' is not as_is, sample or cluster"},
    {"rows:\n  - name: a\n    method: [sample]\n    dataset: A\n", 3,
     "method must be as_is, sample or cluster, not a list"},
    {"rows:\n  - name: a\n    dataset: A\n", 2, "row 'a' has no method"},
    /* k */
    {SROW "    k: 0\n", 5, "k must be >= 1, not 0"},
    {SROW "    k: -3\n", 5, "k must be >= 1, not -3"},
    {SROW, 2, "sample row 'a' needs k"},
    {SROW "    k:\n", 5, "k has no value"},
    {SROW "    k: four\n", 5, "k must be an integer (decimal digits), not 'four'"},
    {SROW "    k: 2.5\n", 5, "not '2.5'"},
    {SROW "    k: '4'\n", 5, "not the quoted text '4'"},
    {SROW "    k: 010\n", 5, "leading zero"},
    {SROW "    k: 0x10\n", 5, "not '0x10'"},
    {SROW "    k: 99999999999999999999\n", 5, "out of range"},
    {SROW "    k: [4]\n", 5, "k must be an integer, not a list"},
    {ROW "    k: 4\n", 5, "k is for sample rows; row 'a' is cluster"},
    {"rows:\n  - name: a\n    method: as_is\n    dataset: A\n    k: 4\n", 5, "row 'a' is as_is"},
    /* cluster parameters */
    {SROW "    k: 4\n    clusters: 10\n", 6, "clusters is for cluster rows; row 'a' is sample"},
    {"rows:\n  - name: a\n    method: as_is\n    dataset: A\n    min_seeds: 1\n", 5, "min_seeds is for cluster rows"},
    {ROW "    clusters: 0\n", 5, "clusters must be >= 1, not 0"},
    {ROW "    per_cluster: 0\n", 5, "per_cluster must be >= 1"},
    {ROW "    cap: 0\n", 5, "cap must be >= 1"},
    {ROW "    min_seeds: -1\n", 5, "min_seeds must be >= 0, not -1"},
    {ROW "    cap: 1e6\n", 5, "cap must be an integer"},
    {ROW "    paper_final: -5\n", 5, "paper_final must be >= 0"},
    {ROW "    paper_seeds: many\n", 5, "paper_seeds must be an integer"},
    {"defaults:\n  clusters: 10\n  cap: 0\n" ROW, 3, "cap must be >= 1"},
    {"defaults:\n  clusters: 10\n  k: 4\n" ROW, 3, "unknown key 'k' in defaults"},
    {"defaults:\n  clusters: 1\n  clusters: 2\n" ROW, 3, "key 'clusters' given twice in defaults (first on line 2)"},
    {"defaults: [1]\n" ROW, 1, "defaults must be a mapping"},
    /* keys */
    {ROW "    colection: x\n", 5, "unknown key 'colection' in a row"},
    {ROW "    dataset: B\n", 5, "key 'dataset' given twice in a row (first on line 4)"},
    {ROW "    [x]: 1\n", 5, "keys of a row are words, not a list"},
    {"rows:\n  - method: as_is\n    dataset: A\n", 2, "row has no name"},
    {"rows:\n  - name: a\n    method: as_is\n", 2, "row 'a' has no dataset"},
    {"rows:\n  - name:\n    method: as_is\n    dataset: A\n", 2, "name has no value"},
    {"version: 1\n" ROW, 1, "unknown key 'version' in the registry (the keys are defaults, rows)"},
    {ROW "rows: []\n", 5, "key 'rows' given twice"},
    /* names */
    {ROW "  - name: a\n    method: as_is\n    dataset: B\n", 5, "row name 'a' is taken by the row on line 2"},
    {ROW "  - name: b\n    method: as_is\n    dataset: B\n  - {name: b, method: as_is, dataset: C}\n"
         "  - {name: a, method: as_is, dataset: D}\n",
     8, "row name 'b' is taken by the row on line 5"},
    {"rows:\n  - name: Big\n    method: as_is\n    dataset: A\n", 2, "row name 'Big' is not allowed"},
    {"rows:\n  - name: a,b\n    method: as_is\n    dataset: A\n", 2, "row name 'a,b' is not allowed"},
    {"rows:\n  - name: -a\n    method: as_is\n    dataset: A\n", 2, "row name '-a' is not allowed"},
    {"rows:\n  - name: 'a b'\n    method: as_is\n    dataset: A\n", 2, "is not allowed"},
    {"rows:\n  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n    method: as_is\n"
     "    dataset: A\n",
     2, "name is 65 bytes long, at most 64"},
    /* text values and collections */
    {ROW "    collection: a/b\n", 5, "collection name 'a/b' is not allowed (it contains '/')"},
    {ROW "    collection: ..\n", 5, "collection name '..' is not allowed"},
    {ROW "    collection: ''\n", 5, "collection name '' is not allowed (it is empty)"},
    {ROW "    collection: ~\n", 5, "collection has no value"},
    {"rows:\n  - name: a\n    method: as_is\n    dataset: '+++'\n", 4, "dataset '+++' gives no collection name"},
    {"rows:\n  - name: a\n    method: as_is\n    dataset: \"A\\tB\"\n", 4, "contains the control character U+0009"},
    {"rows:\n  - name: a\n    method: as_is\n    dataset: {x: 1}\n", 4, "dataset must be text, not a mapping"},
    {ROW "    split: [a, b]\n", 5, "split must be text, not a list"},
    /* a long value is shown cut, and not inside a character: 'x' and 31 two-byte characters, cut at byte 60 */
    {"rows:\n  - name: a\n    method: xééééééééééééééééééééééééééééééé\n    dataset: A\n", 3,
     "method 'xééééééééééééééééééééééééééééé...' is not"},
    /* structure */
    {"", 1, "the registry is empty"},
    {"# only a comment\n\n", 1, "the registry is empty"},
    {"- name: a\n  method: as_is\n  dataset: A\n", 1, "the registry must be a mapping"},
    {"defaults:\n  cap: 5\n", 1, "the registry has no rows:"},
    {"rows: []\n", 1, "rows is empty"},
    {"\nrows:\n", 2, "rows is empty"},
    {"rows:\n  name: a\n", 2, "rows must be a list of rows, not a mapping"},
    {ROW "  - just-a-name\n", 5, "a row is a mapping of keys to values, not 'just-a-name'"},
    {ROW "  - [a, b]\n", 5, "a row is a mapping of keys to values, not a list"},
    {ROW "---\n" ROW, 6, "a second YAML document"},
    /* YAML syntax, at libyaml's line */
    {ROW "    task: a: b\n", 5, "mapping values are not allowed"},
    {"rows:\n  - {name: a, method: as_is,\n\n    dataset: A\n", 5, "did not find expected"},
    {ROW "    task: \"open\n    split: x\n", 7, "found unexpected end of stream"},
    {ROW "    task: caf\xe9\n", 5, "UTF-8"},
};

static void test_bad_registries(void **state)
{
    (void)state;
    size_t n = sizeof bad_cases / sizeof bad_cases[0];
    for (size_t i = 0; i < n; i++) {
        char name[32], path[256], prefix[300];
        snprintf(name, sizeof name, "bad-%02zu.yaml", i);
        write_reg(name, bad_cases[i].text, path, sizeof path);
        registry r;
        if (registry_load(path, &r) == 0)
            fail_msg("case %zu loaded, expected \"%s\":\n%s", i, bad_cases[i].what, bad_cases[i].text);
        const char *msg = lvd_errmsg();
        snprintf(prefix, sizeof prefix, "%s:%d: ", path, bad_cases[i].line);
        if (strncmp(msg, prefix, strlen(prefix)) != 0 || !strstr(msg, bad_cases[i].what))
            fail_msg("case %zu: \"%s\", expected \"%s...%s\"", i, msg, prefix, bad_cases[i].what);
        registry_free(&r);
    }
    printf("# %zu malformed registries refused with their lines\n", n);
}

/* A missing file, a directory and a file too large are refused naming the file. */
static void test_unreadable(void **state)
{
    (void)state;
    char path[256];
    registry r;
    scratch_join(path, sizeof path, g_scratch, "missing.yaml");
    assert_int_equal(registry_load(path, &r), -1);
    assert_non_null(strstr(lvd_errmsg(), path));
    assert_non_null(strstr(lvd_errmsg(), "No such file"));
    registry_free(&r);

    assert_int_equal(registry_load(g_scratch, &r), -1);
    assert_non_null(strstr(lvd_errmsg(), g_scratch));
    registry_free(&r);

    scratch_join(path, sizeof path, g_scratch, "huge.yaml");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fseek(f, REGISTRY_FILE_MAX, SEEK_SET), 0);
    assert_int_equal(fputc('\n', f), '\n');
    assert_int_equal(fclose(f), 0);
    assert_int_equal(registry_load(path, &r), -1);
    assert_non_null(strstr(lvd_errmsg(), "too large for a registry"));
    registry_free(&r);
    remove(path);
}

/* A registry in memory reads as the same file does, and its messages carry the name it is given. */
static void test_parse_in_memory(void **state)
{
    (void)state;
    size_t len;
    uint8_t *bytes = scratch_slurp(g_shipped, &len);
    registry a, b;
    load_ok(g_shipped, &a);
    if (registry_parse("built-in lvd142m.yaml", (const char *)bytes, len, &b) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_string_equal(b.path, "built-in lvd142m.yaml");
    assert_string_equal(a.sha256, b.sha256);
    assert_int_equal(a.nrows, b.nrows);
    assert_memory_equal(a.rows, b.rows, (size_t)a.nrows * sizeof *a.rows);
    registry_free(&a);
    registry_free(&b);
    free(bytes);

    static const char bad[] = "rows:\n  - {name: a, method: sample, dataset: A}\n";
    assert_int_equal(registry_parse("mem", bad, sizeof bad - 1, &b), -1);
    assert_string_equal(lvd_errmsg(), "mem:2: sample row 'a' needs k (pool neighbours per seed image, >= 1)");
    registry_free(&b);
}

/* ---- slugs, names, --only ---- */

static void test_slug(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"ImageNet-22k", "imagenet-22k"},
        {"Oxford-IIIT Pet", "oxford-iiit-pet"},
        {"Pascal VOC 2012 (seg.)", "pascal-voc-2012-seg"},
        {"  --Hello,   World!!  ", "hello-world"},
        {"SUN397", "sun397"},
        {"Café crème", "caf-cr-me"}, /* bytes other than ASCII letters and digits are separators */
        {"a", "a"},
        {"", ""},
        {"---", ""},
    };
    char out[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = registry_slug(cases[i][0], out, sizeof out);
        assert_int_equal(n, (int)strlen(cases[i][1]));
        assert_string_equal(out, cases[i][1]);
    }
    /* exactly fitting, then one byte short */
    assert_int_equal(registry_slug("Ab Cd", out, 6), 5);
    assert_string_equal(out, "ab-cd");
    assert_int_equal(registry_slug("Ab Cd", out, 5), -1);
    assert_non_null(strstr(lvd_errmsg(), "longer than 4 bytes"));
}

static void test_check_name(void **state)
{
    (void)state;
    static const char *const good[] = {"a", "imagenet22k-sample", "0x", "v1.2_b-c"};
    static const char *const bad[] = {"", "A", "-a", ".a", "_a", "a b", "a,b", "a/b", "é"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(registry_check_name(good[i]), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(registry_check_name(bad[i]), -1);
        assert_non_null(strstr(lvd_errmsg(), "a row name is 1 to 64"));
    }
    char longest[REGISTRY_NAME_MAX + 2];
    memset(longest, 'x', sizeof longest);
    longest[REGISTRY_NAME_MAX] = '\0';
    assert_int_equal(registry_check_name(longest), 0);
    longest[REGISTRY_NAME_MAX] = 'x';
    longest[REGISTRY_NAME_MAX + 1] = '\0';
    assert_int_equal(registry_check_name(longest), -1);
}

static void test_select(void **state)
{
    (void)state;
    registry r;
    load_ok(g_shipped, &r);
    uint8_t keep[27];
    assert_int_equal(registry_select(&r, NULL, keep), 27);
    for (int i = 0; i < 27; i++)
        assert_int_equal(keep[i], 1);

    assert_int_equal(registry_select(&r, "kitti", keep), 1);
    for (int i = 0; i < 27; i++)
        assert_int_equal(keep[i], i == registry_find(&r, "kitti"));

    /* blanks, repeats; the rows keep the file's order whatever the list's */
    assert_int_equal(registry_select(&r, "rparis, imagenet22k-as-is ,rparis", keep), 2);
    int sel = 0;
    for (int i = 0; i < 27; i++)
        sel += keep[i];
    assert_int_equal(sel, 2);
    assert_int_equal(keep[0], 1);
    assert_int_equal(keep[26], 1);

    assert_int_equal(registry_select(&r, "kitti,nope", keep), -1);
    const char *msg = lvd_errmsg();
    assert_non_null(strstr(msg, "no row 'nope'"));
    assert_non_null(strstr(msg, g_shipped));
    assert_non_null(strstr(msg, "imagenet22k-as-is, imagenet22k-sample, imagenet1k-sample,"));
    assert_non_null(strstr(msg, "roxford, rparis"));

    static const char *const empty[] = {"", "kitti,", ",kitti", "kitti,,met", " , "};
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        assert_int_equal(registry_select(&r, empty[i], keep), -1);
        assert_non_null(strstr(lvd_errmsg(), "an empty row name"));
    }
    registry_free(&r);
}

/* Many rows: every name listed would not fit a message; the list is cut, not the message. Duplicates among
 * them are still found. */
static void test_many_rows(void **state)
{
    (void)state;
    enum { N = 3000 };
    size_t cap = (size_t)N * 64 + 64, o = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    o += (size_t)snprintf(text + o, cap - o, "rows:\n");
    for (int i = 0; i < N; i++)
        o += (size_t)snprintf(text + o, cap - o, "- {name: row-%d, method: as_is, dataset: D%d}\n", i, i % 7);
    char path[256];
    write_reg("many.yaml", text, path, sizeof path);
    registry r;
    load_ok(path, &r);
    assert_int_equal(r.nrows, N);
    assert_string_equal(r.rows[N - 1].collection, "d3"); /* 2999 % 7 */
    uint8_t *keep = malloc(N);
    assert_non_null(keep);
    assert_int_equal(registry_select(&r, "row-2999,x", keep), -1);
    assert_non_null(strstr(lvd_errmsg(), "row-0, row-1, "));
    assert_non_null(strstr(lvd_errmsg(), "..."));
    assert_int_equal(registry_select(&r, "row-2999,row-7", keep), 2);
    free(keep);
    registry_free(&r);

    /* the same name on lines 2002 and 2902 (row-2000 again) */
    o = (size_t)snprintf(text, cap, "rows:\n");
    for (int i = 0; i < N; i++)
        o += (size_t)snprintf(text + o, cap - o, "- {name: row-%d, method: as_is, dataset: D}\n", i == 2900 ? 2000 : i);
    write_reg("many-dup.yaml", text, path, sizeof path);
    assert_int_equal(registry_load(path, &r), -1);
    char want[400];
    snprintf(want, sizeof want, "%s:2902: row name 'row-2000' is taken by the row on line 2002", path);
    assert_string_equal(lvd_errmsg(), want);
    registry_free(&r);
    free(text);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(g_scratch, sizeof g_scratch, "registry");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(g_scratch);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TESTS_SOURCE_DIR\n", argv[0]);
        return 2;
    }
    snprintf(g_shipped, sizeof g_shipped, "%s/../schemas/lvd142m.yaml", argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_is_table15), cmocka_unit_test(test_shipped_as_pyyaml_reads_it),
        cmocka_unit_test(test_defaults_and_spellings), cmocka_unit_test(test_bad_registries),
        cmocka_unit_test(test_unreadable), cmocka_unit_test(test_parse_in_memory), cmocka_unit_test(test_slug),
        cmocka_unit_test(test_check_name), cmocka_unit_test(test_select),
        cmocka_unit_test(test_many_rows),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
