/* bconfig.c — lvd-balance's YAML configuration: see bconfig.h. */
#include "bconfig.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "err.h"

/* Keys of the reference's launcher that only size GPU / Slurm jobs. */
static const char *const resource_keys[] = {"ngpus_per_node", "nnodes", "ncpus_per_gpu", "slurm_partition",
                                            "slurm_time", "slurm_qos", "slurm_account", "exp_dir", "timeout",
                                            "use_torchrun", "checkpoint_period"};

void bconfig_default(bconfig *c)
{
    memset(c, 0, sizeof *c);
    c->hk.n_iters = 50;
    c->hk.seed = 1234;
    for (int l = 0; l < HKM_MAX_LEVELS; l++)
        c->hk.level[l] = (hkm_level_opts){.k = 0, .n_splits = 1, .n_resampling_steps = 0, .sample_size = 1,
                                          .strategy = 'c'};
    c->multiplier = 1;
    c->sampling = 'r';
    snprintf(c->from, sizeof c->from, "dedup");
    snprintf(c->dtype, sizeof c->dtype, "float32");
    snprintf(c->high_precision, sizeof c->high_precision, "float64");
}

static int line_of(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

static const char *text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* An integer scalar (digit groups "_" allowed) into *v within [lo, hi]. */
static int get_int(const char *path, const char *key, const yaml_node_t *n, int64_t lo, int64_t hi, int64_t *v)
{
    if (n->type != YAML_SCALAR_NODE)
        return lvd_fail("%s:%d: %s must be an integer", path, line_of(n), key);
    char buf[64];
    size_t o = 0;
    for (const char *p = text(n); *p && o + 1 < sizeof buf; p++)
        if (*p != '_')
            buf[o++] = *p;
    buf[o] = 0;
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (o == 0 || *end || errno)
        return lvd_fail("%s:%d: %s must be an integer (got \"%.40s\")", path, line_of(n), key, text(n));
    if (x < lo || x > hi)
        return lvd_fail("%s:%d: %s must be in [%" PRId64 ", %" PRId64 "] (got %lld)", path, line_of(n), key, lo, hi,
                        x);
    *v = x;
    return 0;
}

/* A list of at most HKM_MAX_LEVELS integers >= lo into v; *len its length. */
static int get_list(const char *path, const char *key, yaml_document_t *doc, const yaml_node_t *n, int64_t lo,
                    int64_t *v, int *len)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return lvd_fail("%s:%d: %s must be a list (one value per level)", path, line_of(n), key);
    int m = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++, m++) {
        if (m == HKM_MAX_LEVELS)
            return lvd_fail("%s:%d: %s has more than %d values", path, line_of(n), key, HKM_MAX_LEVELS);
        if (get_int(path, key, yaml_document_get_node(doc, *it), lo, INT32_MAX, &v[m]) != 0)
            return -1;
    }
    *len = m;
    return 0;
}

/* A scalar among choices (a NULL-terminated list) into out (cap bytes). */
static int get_choice(const char *path, const char *key, const yaml_node_t *n, const char *const *choices,
                      char *out, size_t cap)
{
    if (n->type == YAML_SCALAR_NODE)
        for (const char *const *c = choices; *c; c++)
            if (strcmp(text(n), *c) == 0) {
                snprintf(out, cap, "%s", *c);
                return 0;
            }
    char all[128] = "";
    for (const char *const *c = choices; *c; c++)
        snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", c == choices ? "" : "|", *c);
    return lvd_fail("%s:%d: %s must be %s", path, line_of(n), key, all);
}

static int is_null(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && (strcmp(text(n), "null") == 0 || strcmp(text(n), "~") == 0 ||
                                           (n->data.scalar.length == 0 && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE));
}

enum { L_CLUSTERS, L_SPLITS, L_STEPS, L_SIZE, L_N };

static int apply(const char *path, yaml_document_t *doc, bconfig *c)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root)
        return lvd_fail("%s: empty configuration", path);
    if (root->type != YAML_MAPPING_NODE)
        return lvd_fail("%s:%d: the configuration must be a mapping of keys", path, line_of(root));
    static const char *const list_keys[L_N] = {"n_clusters", "n_splits", "n_resampling_steps", "sample_size"};
    int64_t lists[L_N][HKM_MAX_LEVELS];
    int len[L_N] = {-1, -1, -1, -1}, line[L_N] = {0};
    int64_t n_levels = -1;
    int levels_line = 0;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
        if (k->type != YAML_SCALAR_NODE)
            return lvd_fail("%s:%d: keys must be plain names", path, line_of(k));
        const char *key = text(k);
        int64_t x;
        int done = 0;
        for (int i = 0; i < L_N; i++)
            if (strcmp(key, list_keys[i]) == 0) {
                if (get_list(path, key, doc, v, i == L_STEPS ? 0 : 1, lists[i], &len[i]) != 0)
                    return -1;
                line[i] = line_of(v);
                done = 1;
            }
        if (done)
            continue;
        if (strcmp(key, "n_levels") == 0) {
            if (get_int(path, key, v, 1, HKM_MAX_LEVELS, &n_levels) != 0)
                return -1;
            levels_line = line_of(v);
        } else if (strcmp(key, "n_iters") == 0) {
            if (get_int(path, key, v, 0, 100000, &x) != 0)
                return -1;
            c->hk.n_iters = (int32_t)x;
        } else if (strcmp(key, "target_size") == 0) {
            if (get_int(path, key, v, 0, INT64_MAX, &x) != 0)
                return -1;
            c->target_size = x;
        } else if (strcmp(key, "multiplier") == 0) {
            if (get_int(path, key, v, 1, 1000000, &x) != 0)
                return -1;
            c->multiplier = (int32_t)x;
        } else if (strcmp(key, "seed") == 0) {
            if (get_int(path, key, v, 0, INT64_MAX, &x) != 0)
                return -1;
            c->hk.seed = (uint64_t)x;
        } else if (strcmp(key, "threads") == 0) {
            if (get_int(path, key, v, 0, 4096, &x) != 0)
                return -1;
            c->hk.threads = (int32_t)x;
        } else if (strcmp(key, "sampling_strategy") == 0) {
            char s[16];
            if (get_choice(path, key, v, (const char *const[]){"c", "r", "closest", "random", NULL}, s, sizeof s))
                return -1;
            for (int l = 0; l < HKM_MAX_LEVELS; l++)
                c->hk.level[l].strategy = s[0];
        } else if (strcmp(key, "sampling") == 0) {
            char s[16];
            if (get_choice(path, key, v, (const char *const[]){"r", "c", NULL}, s, sizeof s))
                return -1;
            c->sampling = s[0];
        } else if (strcmp(key, "from") == 0) {
            if (get_choice(path, key, v, (const char *const[]){"dedup", "retrieve", NULL}, c->from, sizeof c->from))
                return -1;
        } else if (strcmp(key, "dtype") == 0) {
            if (get_choice(path, key, v, (const char *const[]){"float32", "float64", "float16", NULL}, c->dtype,
                           sizeof c->dtype))
                return -1;
        } else if (strcmp(key, "high_precision") == 0) {
            if (get_choice(path, key, v, (const char *const[]){"float64", "float32", NULL}, c->high_precision,
                           sizeof c->high_precision))
                return -1;
        } else if (strcmp(key, "subset_indices_path") == 0) {
            if (!is_null(v))
                return lvd_fail("%s:%d: subset_indices_path must be null: lvd chooses the pool with `from` "
                                "(dedup|retrieve)",
                                path, line_of(v));
        } else {
            int res = 0;
            for (size_t i = 0; i < sizeof resource_keys / sizeof *resource_keys; i++)
                res |= strcmp(key, resource_keys[i]) == 0;
            if (!res)
                return lvd_fail("%s:%d: unknown key %s", path, line_of(k), key);
            size_t o = strlen(c->ignored);
            snprintf(c->ignored + o, sizeof c->ignored - o, "%s%s", o ? ", " : "", key);
        }
    }
    if (n_levels < 0)
        return lvd_fail("%s: n_levels is missing", path);
    if (len[L_CLUSTERS] < 0)
        return lvd_fail("%s: n_clusters is missing", path);
    for (int i = 0; i < L_N; i++) {
        if (len[i] < 0)
            continue; /* the default for every level */
        if (len[i] != n_levels)
            return lvd_fail("%s:%d: %s has %d values for n_levels %" PRId64 " (line %d)", path, line[i],
                            list_keys[i], len[i], n_levels, levels_line);
        for (int l = 0; l < n_levels; l++) {
            hkm_level_opts *lo = &c->hk.level[l];
            int32_t v = (int32_t)lists[i][l];
            if (i == L_CLUSTERS)
                lo->k = v;
            else if (i == L_SPLITS)
                lo->n_splits = v;
            else if (i == L_STEPS)
                lo->n_resampling_steps = v;
            else
                lo->sample_size = v;
        }
    }
    c->hk.n_levels = (int32_t)n_levels;
    return 0;
}

int bconfig_load(const char *path, bconfig *c)
{
    bconfig_default(c);
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail_errno("%s", path);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return lvd_fail("%s: cannot start the YAML parser", path);
    }
    yaml_parser_set_input_file(&parser, f);
    int rc;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = lvd_fail("%s:%lu: %s", path, (unsigned long)parser.problem_mark.line + 1,
                      parser.problem ? parser.problem : "YAML error");
    } else {
        rc = apply(path, &doc, c);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}
