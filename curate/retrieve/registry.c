/* registry.c — the seed registry: a YAML file read whole, validated row by row into registry_row (registry.h). */
#include "registry.h"

#include "catalog.h"
#include "err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

_Static_assert(REGISTRY_COLLECTION_MAX == CATALOG_NAME_MAX, "a registry holds any collection name the catalog does");

/* The keys a row may have. The first four are also the keys of `defaults`. */
enum {
    K_CLUSTERS, K_PER_CLUSTER, K_CAP, K_MIN_SEEDS,
    K_NAME, K_METHOD, K_DATASET, K_TASK, K_SPLIT, K_COLLECTION, K_K, K_PAPER_SEEDS, K_PAPER_FINAL,
    K_COUNT
};
#define K_DEFAULTS_COUNT 4
static const char *const key_names[K_COUNT] = {
    "clusters", "per_cluster", "cap", "min_seeds",
    "name", "method", "dataset", "task", "split", "collection", "k", "paper_seeds", "paper_final",
};
static const int64_t paper_defaults[K_DEFAULTS_COUNT] = {REGISTRY_DEFAULT_CLUSTERS, REGISTRY_DEFAULT_PER_CLUSTER,
                                                          REGISTRY_DEFAULT_CAP, REGISTRY_DEFAULT_MIN_SEEDS};
static const int64_t minimum[K_DEFAULTS_COUNT] = {1, 1, 1, 0};

static const char *const method_names[] = {"as_is", "sample", "cluster"};

const char *registry_method_name(registry_method m)
{
    return (unsigned)m < sizeof method_names / sizeof method_names[0] ? method_names[m] : "?";
}

/* What the validation of one file needs: its name for messages and the loaded document. */
typedef struct reg_ctx {
    const char *path;
    yaml_document_t *doc;
} reg_ctx;

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

/* A value for a message: at most 60 bytes of it, control bytes shown as \xNN, "..." when cut. cap >= 8. */
static void quote(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    /* Each step adds at most 4 bytes, so "..." and the NUL still fit after the last one. */
    for (; i < len && i < 60 && o + 8 < cap; i++) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x20 || b == 0x7f)
            o += (size_t)snprintf(out + o, cap - o, "\\x%02X", b);
        else
            out[o++] = (char)b;
    }
    if (i < len) {
        /* not in the middle of a UTF-8 sequence (its bytes were copied one for one) */
        while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) {
            i--;
            o--;
        }
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static const char *node_kind(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a value";
}

/* YAML's null (an empty, "~" or "null" plain scalar): a key without a value. */
static int scalar_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = (const char *)n->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* 1 if the scalar equals word with '-' read as '_' (keys and method names are spelled either way). */
static int scalar_is(const yaml_node_t *n, const char *word)
{
    size_t len = strlen(word);
    if (n->data.scalar.length != len)
        return 0;
    const char *s = (const char *)n->data.scalar.value;
    for (size_t i = 0; i < len; i++)
        if ((s[i] == '-' ? '_' : s[i]) != word[i])
            return 0;
    return 1;
}

/* Collects a mapping's values by key into vals[0..nkeys) (key_names order), refusing keys that are not
 * plain scalars, unknown keys and keys given twice. where: "a row", "defaults" or "the registry" for
 * messages; valid: the key list the message offers. */
static int collect_keys(const reg_ctx *c, const yaml_node_t *map, int nkeys, const char *const *names,
                        const char *where, const char *valid, const yaml_node_t **vals, const yaml_node_t **keys)
{
    for (int i = 0; i < nkeys; i++)
        vals[i] = keys[i] = NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (k->type != YAML_SCALAR_NODE)
            return lvd_fail("%s:%d: keys of %s are words, not %s", c->path, line_of(k), where, node_kind(k));
        int id = -1;
        for (int i = 0; i < nkeys && id < 0; i++)
            if (scalar_is(k, names[i]))
                id = i;
        if (id < 0) {
            char shown[96];
            quote((const char *)k->data.scalar.value, k->data.scalar.length, shown, sizeof shown);
            return lvd_fail("%s:%d: unknown key '%s' in %s (the keys are %s)", c->path, line_of(k), shown, where,
                            valid);
        }
        if (keys[id])
            return lvd_fail("%s:%d: key '%s' given twice in %s (first on line %d)", c->path, line_of(k),
                            names[id], where, line_of(keys[id]));
        keys[id] = k;
        vals[id] = v;
    }
    return 0;
}

/* An integer value >= min: a plain scalar of decimal digits, optionally signed (so that a negative value is
 * told it is below the minimum rather than not a number). */
static int value_int(const reg_ctx *c, const yaml_node_t *v, const char *key, int64_t min, int64_t *out)
{
    if (v->type != YAML_SCALAR_NODE)
        return lvd_fail("%s:%d: %s must be an integer, not %s", c->path, line_of(v), key, node_kind(v));
    const char *s = (const char *)v->data.scalar.value;
    size_t len = v->data.scalar.length;
    char shown[96];
    quote(s, len, shown, sizeof shown);
    if (scalar_null(v))
        return lvd_fail("%s:%d: %s has no value (an integer >= %" PRId64 ")", c->path, line_of(v), key, min);
    if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return lvd_fail("%s:%d: %s must be an integer, not the quoted text '%s'", c->path, line_of(v), key, shown);
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (i == len)
        return lvd_fail("%s:%d: %s must be an integer, not '%s'", c->path, line_of(v), key, shown);
    for (size_t j = i; j < len; j++)
        if (s[j] < '0' || s[j] > '9')
            return lvd_fail("%s:%d: %s must be an integer (decimal digits), not '%s'", c->path, line_of(v), key,
                            shown);
    /* YAML 1.1 readers (PyYAML) take 010 for octal 8: a leading zero would mean different numbers to
     * different tools. */
    if (s[i] == '0' && len > i + 1)
        return lvd_fail("%s:%d: %s '%s' has a leading zero", c->path, line_of(v), key, shown);
    errno = 0;
    long long x = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return lvd_fail("%s:%d: %s '%s' is out of range", c->path, line_of(v), key, shown);
    if (x < min)
        return lvd_fail("%s:%d: %s must be >= %" PRId64 ", not %lld", c->path, line_of(v), key, min, x);
    *out = (int64_t)x;
    return 0;
}

/* A text value of at most max bytes without control characters into out (max + 1 bytes). A null value is
 * "" with *given 0; required keys refuse it. */
static int value_text(const reg_ctx *c, const yaml_node_t *v, const char *key, size_t max, int required,
                      char *out, int *given)
{
    if (v->type != YAML_SCALAR_NODE)
        return lvd_fail("%s:%d: %s must be text, not %s", c->path, line_of(v), key, node_kind(v));
    if (scalar_null(v)) {
        if (required)
            return lvd_fail("%s:%d: %s has no value", c->path, line_of(v), key);
        out[0] = '\0';
        *given = 0;
        return 0;
    }
    const char *s = (const char *)v->data.scalar.value;
    size_t len = v->data.scalar.length;
    if (len > max)
        return lvd_fail("%s:%d: %s is %zu bytes long, at most %zu", c->path, line_of(v), key, len, max);
    /* libyaml has checked the UTF-8; an escape in a quoted scalar ("\t", "\0") can still give a control
     * character, which has no place in a label or a collection name. */
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x20 || b == 0x7f) {
            char shown[96];
            quote(s, len, shown, sizeof shown);
            return lvd_fail("%s:%d: %s '%s' contains the control character U+%04X", c->path, line_of(v), key,
                            shown, b);
        }
    }
    memcpy(out, s, len);
    out[len] = '\0';
    *given = 1;
    return 0;
}

int registry_check_name(const char *name)
{
    size_t n = strlen(name);
    int ok = n >= 1 && n <= REGISTRY_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        char ch = name[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        ok = alnum || (i > 0 && (ch == '-' || ch == '_' || ch == '.'));
    }
    if (ok)
        return 0;
    char shown[96];
    quote(name, n, shown, sizeof shown);
    return lvd_fail("row name '%s' is not allowed: a row name is 1 to %d of a-z, 0-9, '-', '_' and '.', starting "
                    "with a letter or digit",
                    shown, REGISTRY_NAME_MAX);
}

int registry_slug(const char *name, char *out, size_t cap)
{
    size_t len = 0;
    int gap = 0;
    for (const char *p = name; *p; p++) {
        char ch = *p;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))) {
            gap = 1;
            continue;
        }
        size_t need = (gap && len > 0) ? 2 : 1;
        if (len + need + 1 > cap) {
            char shown[96];
            quote(name, strlen(name), shown, sizeof shown);
            return lvd_fail("the slug of '%s' is longer than %zu bytes", shown, cap ? cap - 1 : 0);
        }
        if (need == 2)
            out[len++] = '-';
        out[len++] = ch;
        gap = 0;
    }
    if (cap)
        out[len] = '\0';
    return (int)len;
}

/* One row mapping into *row; dflt: the cluster parameters of `defaults` (paper's where not given). */
static int parse_row(const reg_ctx *c, const yaml_node_t *map, const int64_t dflt[K_DEFAULTS_COUNT],
                     registry_row *row)
{
    static const char valid[] = "name, method, dataset, task, split, collection, k, clusters, per_cluster, cap, "
                                "min_seeds, paper_seeds, paper_final";
    const int line = line_of(map);
    if (map->type == YAML_SEQUENCE_NODE)
        return lvd_fail("%s:%d: a row is a mapping of keys to values, not a list", c->path, line);
    if (map->type == YAML_SCALAR_NODE) {
        char shown[96];
        quote((const char *)map->data.scalar.value, map->data.scalar.length, shown, sizeof shown);
        return lvd_fail("%s:%d: a row is a mapping of keys to values, not '%s'", c->path, line, shown);
    }
    const yaml_node_t *v[K_COUNT], *k[K_COUNT];
    if (collect_keys(c, map, K_COUNT, key_names, "a row", valid, v, k) != 0)
        return -1;
    memset(row, 0, sizeof *row);
    row->line = line;
    int given;

    if (!v[K_NAME])
        return lvd_fail("%s:%d: row has no name", c->path, line);
    if (value_text(c, v[K_NAME], "name", REGISTRY_NAME_MAX, 1, row->name, &given) != 0)
        return -1;
    if (registry_check_name(row->name) != 0)
        return lvd_fail_ctx("%s:%d", c->path, line_of(v[K_NAME]));

    if (!v[K_METHOD])
        return lvd_fail("%s:%d: row '%s' has no method (as_is, sample or cluster)", c->path, line, row->name);
    const yaml_node_t *m = v[K_METHOD];
    int method = -1;
    if (m->type == YAML_SCALAR_NODE)
        for (int i = 0; i < 3 && method < 0; i++)
            if (scalar_is(m, method_names[i]))
                method = i;
    if (method < 0 && m->type != YAML_SCALAR_NODE)
        return lvd_fail("%s:%d: row '%s': method must be as_is, sample or cluster, not %s", c->path, line_of(m),
                        row->name, node_kind(m));
    if (method < 0) {
        char shown[96];
        quote((const char *)m->data.scalar.value, m->data.scalar.length, shown, sizeof shown);
        return lvd_fail("%s:%d: row '%s': method '%s' is not as_is, sample or cluster", c->path, line_of(m),
                        row->name, shown);
    }
    row->method = (registry_method)method;

    if (!v[K_DATASET])
        return lvd_fail("%s:%d: row '%s' has no dataset", c->path, line, row->name);
    if (value_text(c, v[K_DATASET], "dataset", REGISTRY_TEXT_MAX, 1, row->dataset, &given) != 0)
        return -1;
    if (v[K_TASK] && value_text(c, v[K_TASK], "task", REGISTRY_TEXT_MAX, 0, row->task, &given) != 0)
        return -1;
    if (v[K_SPLIT] && value_text(c, v[K_SPLIT], "split", REGISTRY_TEXT_MAX, 0, row->split, &given) != 0)
        return -1;

    if (v[K_COLLECTION]) {
        if (value_text(c, v[K_COLLECTION], "collection", REGISTRY_COLLECTION_MAX, 1, row->collection, &given) != 0)
            return -1;
        if (catalog_check_collection_name(row->collection) != 0)
            return lvd_fail_ctx("%s:%d", c->path, line_of(v[K_COLLECTION]));
        row->collection_given = 1;
    } else {
        /* The slug is never longer than the dataset name, which fits. */
        int n = registry_slug(row->dataset, row->collection, sizeof row->collection);
        if (n < 0)
            return lvd_fail_ctx("%s:%d", c->path, line_of(v[K_DATASET]));
        if (n == 0)
            return lvd_fail("%s:%d: row '%s': dataset '%s' gives no collection name (no ASCII letter or digit to "
                            "make a slug of); set collection",
                            c->path, line_of(v[K_DATASET]), row->name, row->dataset);
    }

    /* k belongs to sample rows and the cluster parameters to cluster rows: on another row it is a mistake
     * (most likely a wrong method), not something to ignore. */
    if (row->method == REGISTRY_SAMPLE) {
        if (!v[K_K])
            return lvd_fail("%s:%d: sample row '%s' needs k (pool neighbours per seed image, >= 1)", c->path, line,
                            row->name);
        if (value_int(c, v[K_K], "k", 1, &row->k) != 0)
            return -1;
    } else if (v[K_K]) {
        return lvd_fail("%s:%d: k is for sample rows; row '%s' is %s", c->path, line_of(k[K_K]), row->name,
                        method_names[row->method]);
    }
    int64_t *cl[K_DEFAULTS_COUNT] = {&row->clusters, &row->per_cluster, &row->cap, &row->min_seeds};
    for (int i = 0; i < K_DEFAULTS_COUNT; i++) {
        if (row->method != REGISTRY_CLUSTER) {
            if (v[i])
                return lvd_fail("%s:%d: %s is for cluster rows; row '%s' is %s", c->path, line_of(k[i]),
                                key_names[i], row->name, method_names[row->method]);
            continue;
        }
        *cl[i] = dflt[i];
        if (v[i] && value_int(c, v[i], key_names[i], minimum[i], cl[i]) != 0)
            return -1;
    }

    row->paper_seeds = row->paper_final = REGISTRY_UNKNOWN;
    if (v[K_PAPER_SEEDS] && value_int(c, v[K_PAPER_SEEDS], "paper_seeds", 0, &row->paper_seeds) != 0)
        return -1;
    if (v[K_PAPER_FINAL] && value_int(c, v[K_PAPER_FINAL], "paper_final", 0, &row->paper_final) != 0)
        return -1;
    return 0;
}

/* A row's name and file position, ordered by name then position: equal names end up next to each other. */
typedef struct name_pos {
    const char *name;
    int idx;
} name_pos;

static int by_name(const void *a, const void *b)
{
    const name_pos *x = a, *y = b;
    int d = strcmp(x->name, y->name);
    return d ? d : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Two rows of one name: reports the pair whose second row comes first in the file. O(n log n), since a
 * registry of your own may hold many rows. */
static int check_unique_names(const char *path, const registry_row *rows, int n)
{
    name_pos *np = malloc((size_t)n * sizeof *np);
    if (!np)
        return lvd_fail("out of memory");
    for (int i = 0; i < n; i++)
        np[i] = (name_pos){rows[i].name, i};
    qsort(np, (size_t)n, sizeof *np, by_name);
    int first = -1, second = -1;
    for (int i = 1; i < n; i++)
        if (!strcmp(np[i - 1].name, np[i].name) && (second < 0 || np[i].idx < second)) {
            first = np[i - 1].idx;
            second = np[i].idx;
        }
    free(np);
    if (second < 0)
        return 0;
    return lvd_fail("%s:%d: row name '%s' is taken by the row on line %d", path, rows[second].line,
                    rows[second].name, rows[first].line);
}

/* The top-level mapping: defaults, then every row. */
static int parse_document(const reg_ctx *c, const yaml_node_t *root, registry *r)
{
    static const char *const top_names[] = {"defaults", "rows"};
    if (!root || scalar_null(root))
        return lvd_fail("%s:%d: the registry is empty (expected a mapping with rows: and optionally defaults:)",
                        c->path, root ? line_of(root) : 1);
    if (root->type != YAML_MAPPING_NODE)
        return lvd_fail("%s:%d: the registry must be a mapping with rows: and optionally defaults:, not %s",
                        c->path, line_of(root), node_kind(root));
    const yaml_node_t *top[2], *topk[2];
    if (collect_keys(c, root, 2, top_names, "the registry", "defaults, rows", top, topk) != 0)
        return -1;

    int64_t dflt[K_DEFAULTS_COUNT];
    memcpy(dflt, paper_defaults, sizeof dflt);
    const yaml_node_t *d = top[0];
    if (d && !scalar_null(d)) {
        if (d->type != YAML_MAPPING_NODE)
            return lvd_fail("%s:%d: defaults must be a mapping (of clusters, per_cluster, cap, min_seeds), not %s",
                            c->path, line_of(d), node_kind(d));
        const yaml_node_t *v[K_DEFAULTS_COUNT], *k[K_DEFAULTS_COUNT];
        if (collect_keys(c, d, K_DEFAULTS_COUNT, key_names, "defaults", "clusters, per_cluster, cap, min_seeds", v,
                         k) != 0)
            return -1;
        for (int i = 0; i < K_DEFAULTS_COUNT; i++)
            if (v[i] && value_int(c, v[i], key_names[i], minimum[i], &dflt[i]) != 0)
                return -1;
    }

    const yaml_node_t *rows = top[1];
    if (!rows)
        return lvd_fail("%s:%d: the registry has no rows: (a list of rows)", c->path, line_of(root));
    if (scalar_null(rows))
        return lvd_fail("%s:%d: rows is empty", c->path, line_of(rows));
    if (rows->type != YAML_SEQUENCE_NODE)
        return lvd_fail("%s:%d: rows must be a list of rows, not %s", c->path, line_of(rows), node_kind(rows));
    ptrdiff_t n = rows->data.sequence.items.top - rows->data.sequence.items.start;
    if (n == 0)
        return lvd_fail("%s:%d: rows is empty", c->path, line_of(rows));
    if (n > REGISTRY_ROWS_MAX)
        return lvd_fail("%s:%d: %td rows, at most %d", c->path, line_of(rows), n, REGISTRY_ROWS_MAX);
    r->rows = calloc((size_t)n, sizeof *r->rows);
    if (!r->rows)
        return lvd_fail("out of memory");
    for (ptrdiff_t i = 0; i < n; i++) {
        const yaml_node_t *item = yaml_document_get_node(c->doc, rows->data.sequence.items.start[i]);
        if (parse_row(c, item, dflt, &r->rows[i]) != 0)
            return -1;
        r->nrows = (int)i + 1;
    }
    return check_unique_names(c->path, r->rows, r->nrows);
}

/* libyaml's failure as "FILE:LINE: problem (context)". A reader error (bad UTF-8, a control character) has a
 * byte offset instead of a mark: its line is counted in text. */
static int yaml_error(const char *path, const yaml_parser_t *p, const char *text)
{
    if (p->error == YAML_MEMORY_ERROR)
        return lvd_fail("out of memory");
    const char *problem = p->problem ? p->problem : "syntax error";
    if (p->error == YAML_READER_ERROR) {
        int line = 1;
        for (size_t i = 0; i < p->problem_offset && text[i]; i++)
            line += text[i] == '\n';
        return lvd_fail("%s:%d: %s (byte %zu)", path, line, problem, p->problem_offset + 1);
    }
    if (p->context)
        return lvd_fail("%s:%lu: %s (%s on line %lu)", path, (unsigned long)p->problem_mark.line + 1, problem,
                        p->context, (unsigned long)p->context_mark.line + 1);
    return lvd_fail("%s:%lu: %s", path, (unsigned long)p->problem_mark.line + 1, problem);
}

/* The whole file, at most REGISTRY_FILE_MAX bytes, NUL-terminated. Read until EOF rather than by its size, so
 * a pipe (--registry /dev/stdin) works too. */
static int read_whole(const char *path, char **text, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail_errno("%s", path);
    size_t cap = 64 << 10, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : lvd_fail("out of memory");
    while (rc == 0) {
        if (n + 1 == cap) {
            if (cap > REGISTRY_FILE_MAX) {
                rc = lvd_fail("%s: over %d bytes, too large for a registry", path, REGISTRY_FILE_MAX);
                break;
            }
            char *p = realloc(buf, cap * 2);
            if (!p) {
                rc = lvd_fail("out of memory");
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = lvd_fail_errno("%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (rc == 0 && n > REGISTRY_FILE_MAX)
        rc = lvd_fail("%s: over %d bytes, too large for a registry", path, REGISTRY_FILE_MAX);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

/* Validates r->text (r->path, text, text_len set) into r's rows. */
static int parse_text(registry *r)
{
    const char *path = r->path;
    sha256_hex(r->text, r->text_len, r->sha256);

    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return lvd_fail("out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)r->text, r->text_len);
    yaml_document_t doc;
    int rc;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = yaml_error(path, &parser, r->text);
        yaml_parser_delete(&parser);
        return rc;
    }
    reg_ctx c = {path, &doc};
    rc = parse_document(&c, yaml_document_get_root_node(&doc), r);
    if (rc == 0) {
        /* A second document ("---" and more) would be silently dropped: refuse it, and a syntax error in it. */
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            rc = yaml_error(path, &parser, r->text);
        } else {
            yaml_node_t *root2 = yaml_document_get_root_node(&next);
            if (root2)
                rc = lvd_fail("%s:%d: a second YAML document; a registry is one document", path, line_of(root2));
            yaml_document_delete(&next);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int registry_load(const char *path, registry *r)
{
    memset(r, 0, sizeof *r);
    r->path = strdup(path);
    if (!r->path)
        return lvd_fail("out of memory");
    if (read_whole(path, &r->text, &r->text_len) != 0)
        return -1;
    return parse_text(r);
}

int registry_parse(const char *path, const char *text, size_t len, registry *r)
{
    memset(r, 0, sizeof *r);
    if (len > REGISTRY_FILE_MAX)
        return lvd_fail("%s: over %d bytes, too large for a registry", path, REGISTRY_FILE_MAX);
    r->path = strdup(path);
    r->text = malloc(len + 1);
    if (!r->path || !r->text)
        return lvd_fail("out of memory");
    memcpy(r->text, text, len);
    r->text[len] = '\0';
    r->text_len = len;
    return parse_text(r);
}

void registry_free(registry *r)
{
    if (!r)
        return;
    free(r->path);
    free(r->text);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

int registry_find(const registry *r, const char *name)
{
    for (int i = 0; i < r->nrows; i++)
        if (!strcmp(r->rows[i].name, name))
            return i;
    return -1;
}

/* "a, b, c" of the row names, cut with ", ..." to fit cap bytes. */
static void list_names(const registry *r, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < r->nrows; i++) {
        size_t need = strlen(r->rows[i].name) + (i ? 2 : 0);
        if (o + need + 6 > cap) {
            snprintf(out + o, cap - o, "%s...", i ? ", " : "");
            return;
        }
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", r->rows[i].name);
    }
}

int registry_select(const registry *r, const char *only, uint8_t *keep)
{
    if (!only) {
        memset(keep, 1, (size_t)r->nrows);
        return r->nrows;
    }
    memset(keep, 0, (size_t)r->nrows);
    int selected = 0;
    const char *p = only;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (a == b)
            return lvd_fail("--only '%s': an empty row name (give ROW,ROW,... of %s)", only, r->path);
        int found = -1;
        for (int i = 0; i < r->nrows && found < 0; i++)
            if ((size_t)(b - a) == strlen(r->rows[i].name) && !memcmp(a, r->rows[i].name, (size_t)(b - a)))
                found = i;
        if (found < 0) {
            char names[700], shown[96];
            list_names(r, names, sizeof names);
            quote(a, (size_t)(b - a), shown, sizeof shown);
            return lvd_fail("--only: no row '%s' in %s; its rows are %s", shown, r->path, names);
        }
        if (!keep[found])
            selected++;
        keep[found] = 1;
        if (!*end)
            break;
        p = end + 1;
    }
    return selected;
}
