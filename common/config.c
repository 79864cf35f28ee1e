/* config.c — options from a YAML file, expanded into argv ahead of the command line (see config.h). */
#include "config.h"

#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* A growable argv; v[n] is kept NULL so it is always a valid argv. */
typedef struct argvec {
    char **v;
    int n, cap;
} argvec;

static int argvec_push(argvec *a, const char *s, size_t len)
{
    if (a->n + 1 >= a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        char **p = realloc(a->v, (size_t)cap * sizeof *p);
        if (!p)
            return lvd_fail("out of memory");
        a->v = p;
        a->cap = cap;
    }
    char *copy = strndup(s, len);
    if (!copy)
        return lvd_fail("out of memory");
    a->v[a->n++] = copy;
    a->v[a->n] = NULL;
    return 0;
}

static int argvec_push_str(argvec *a, const char *s) { return argvec_push(a, s, strlen(s)); }

/* YAML 1.2 core schema booleans; only plain (unquoted) scalars count, so "true" in quotes is a string. */
static int scalar_bool(const yaml_node_t *n, int *value)
{
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = (const char *)n->data.scalar.value;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
        *value = 1;
        return 1;
    }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
        *value = 0;
        return 1;
    }
    return 0;
}

static int scalar_null(const yaml_node_t *n)
{
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = (const char *)n->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static unsigned long line_of(const yaml_node_t *n) { return (unsigned long)n->start_mark.line + 1; }

/* Appends the options of one mapping entry: "--name value", "--name" for true, one pair per sequence item. */
static int expand_entry(argvec *a, const char *path, yaml_document_t *doc, const yaml_node_t *key,
                        const yaml_node_t *val)
{
    if (key->type != YAML_SCALAR_NODE)
        return lvd_fail("%s:%lu: option names must be plain words", path, line_of(key));
    const char *raw = (const char *)key->data.scalar.value;
    const char *name = raw[0] == '-' && raw[1] == '-' ? raw + 2 : raw;
    if (!*name)
        return lvd_fail("%s:%lu: empty option name", path, line_of(key));
    /* "--" + name with '_' spelled '-' */
    size_t len = strlen(name);
    char *opt = malloc(len + 3);
    if (!opt)
        return lvd_fail("out of memory");
    memcpy(opt, "--", 2);
    for (size_t i = 0; i <= len; i++)
        opt[2 + i] = name[i] == '_' ? '-' : name[i];

    int rc = 0, b;
    if (val->type == YAML_MAPPING_NODE) {
        rc = lvd_fail("%s:%lu: option \"%s\": nested mappings are not supported", path, line_of(val), raw);
    } else if (val->type == YAML_SCALAR_NODE) {
        if (scalar_bool(val, &b))
            rc = b ? argvec_push_str(a, opt) : 0;
        else if (scalar_null(val))
            rc = lvd_fail("%s:%lu: option \"%s\" has no value (use true for a flag)", path, line_of(val), raw);
        else
            rc = (argvec_push_str(a, opt) < 0 || argvec_push(a, (const char *)val->data.scalar.value,
                                                            val->data.scalar.length) < 0)
                     ? -1
                     : 0;
    } else { /* sequence */
        for (yaml_node_item_t *it = val->data.sequence.items.start; rc == 0 && it < val->data.sequence.items.top;
             it++) {
            const yaml_node_t *item = yaml_document_get_node(doc, *it);
            if (!item || item->type != YAML_SCALAR_NODE)
                rc = lvd_fail("%s:%lu: option \"%s\": list items must be plain values", path,
                              item ? line_of(item) : line_of(val), raw);
            else
                rc = (argvec_push_str(a, opt) < 0 || argvec_push(a, (const char *)item->data.scalar.value,
                                                                item->data.scalar.length) < 0)
                         ? -1
                         : 0;
        }
    }
    free(opt);
    return rc;
}

/* Appends the options of one YAML file. */
static int expand_file(argvec *a, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail_errno("--config %s", path);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return lvd_fail("out of memory");
    }
    yaml_parser_set_input_file(&parser, f);
    int rc = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        if (parser.error == YAML_READER_ERROR)
            rc = lvd_fail("%s: %s", path, parser.problem ? parser.problem : "read error");
        else
            rc = lvd_fail("%s:%lu:%lu: %s%s%s", path, (unsigned long)parser.problem_mark.line + 1,
                          (unsigned long)parser.problem_mark.column + 1, parser.problem ? parser.problem : "syntax error",
                          parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        fclose(f);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    /* An empty file has no root; a file holding only a comment or "~" has a null scalar root. */
    if (root && !(root->type == YAML_SCALAR_NODE && scalar_null(root))) {
        if (root->type != YAML_MAPPING_NODE) {
            rc = lvd_fail("%s:%lu: expected a mapping of option names to values", path, line_of(root));
        } else {
            for (yaml_node_pair_t *p = root->data.mapping.pairs.start; rc == 0 && p < root->data.mapping.pairs.top;
                 p++)
                rc = expand_entry(a, path, &doc, yaml_document_get_node(&doc, p->key),
                                  yaml_document_get_node(&doc, p->value));
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

int config_expand_argv(int argc, char **argv, int *out_argc, char ***out_argv)
{
    argvec a = {0};
    /* argv[0], then every file's options in the order given, then the rest of the command line. Scanning
     * stops at "--": what follows is operands, not options. */
    int rc = argvec_push_str(&a, argc > 0 ? argv[0] : "");
    for (int i = 1; rc == 0 && i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                rc = lvd_fail("--config needs a file name");
            else
                rc = expand_file(&a, argv[++i]);
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            rc = argv[i][9] ? expand_file(&a, argv[i] + 9) : lvd_fail("--config needs a file name");
        }
    }
    int operands = 0;
    for (int i = 1; rc == 0 && i < argc; i++) {
        if (!operands && strcmp(argv[i], "--") == 0)
            operands = 1;
        if (!operands && strcmp(argv[i], "--config") == 0)
            i++;
        else if (!operands && strncmp(argv[i], "--config=", 9) == 0)
            continue;
        else
            rc = argvec_push_str(&a, argv[i]);
    }
    if (rc < 0) {
        config_free_argv(a.n, a.v);
        return -1;
    }
    *out_argc = a.n;
    *out_argv = a.v;
    return 0;
}

void config_free_argv(int argc, char **argv)
{
    if (!argv)
        return;
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
}
