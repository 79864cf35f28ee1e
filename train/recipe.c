/* recipe.c — lvd-train's configuration (see recipe.h): one table of keys, the YAML walk, overrides, dump. */
#include "recipe.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "err.h"

typedef enum kind { K_F64, K_I32, K_I64, K_BOOL, K_STR, K_PAIR, K_CENTERING } kind;

typedef struct key {
    const char *name;  /* dotted, as in the official YAML */
    kind k;
    size_t off;        /* into recipe */
    double min, max;   /* numbers (pairs: each element) */
    const char *const *choices; /* K_STR: NULL-terminated allowed values, or NULL for any */
} key;

#define OFF(f) offsetof(recipe, f)
#define INF HUGE_VAL

static const char *const ffn_choices[] = {"mlp", "swiglu", "swiglufused", NULL};
static const char *const scaling_choices[] = {"sqrt_wrt_1024", NULL};
static const char *const arch_choices[] = {"vit_small", "vit_base", "vit_large", "vit_giant2", "vit_tiny", "vit_pico",
                                           NULL};

/* In the order of ssl_default_config.yaml (recipe_dump writes this order), lvd's own keys last in their
 * section. */
static const key keys[] = {
    {"dino.loss_weight", K_F64, OFF(dino.loss_weight), 0, INF, NULL},
    {"dino.head_n_prototypes", K_I32, OFF(dino.head_n_prototypes), 1, 1 << 24, NULL},
    {"dino.head_bottleneck_dim", K_I32, OFF(dino.head_bottleneck_dim), 1, 1 << 16, NULL},
    {"dino.head_nlayers", K_I32, OFF(dino.head_nlayers), 1, 16, NULL},
    {"dino.head_hidden_dim", K_I32, OFF(dino.head_hidden_dim), 1, 1 << 16, NULL},
    {"dino.koleo_loss_weight", K_F64, OFF(dino.koleo_loss_weight), 0, INF, NULL},
    {"ibot.loss_weight", K_F64, OFF(ibot.loss_weight), 0, INF, NULL},
    {"ibot.mask_sample_probability", K_F64, OFF(ibot.mask_sample_probability), 0, 1, NULL},
    {"ibot.mask_ratio_min_max", K_PAIR, OFF(ibot.mask_ratio_min_max), 0, 1, NULL},
    {"ibot.separate_head", K_BOOL, OFF(ibot.separate_head), 0, 1, NULL},
    {"ibot.head_n_prototypes", K_I32, OFF(ibot.head_n_prototypes), 1, 1 << 24, NULL},
    {"ibot.head_bottleneck_dim", K_I32, OFF(ibot.head_bottleneck_dim), 1, 1 << 16, NULL},
    {"ibot.head_nlayers", K_I32, OFF(ibot.head_nlayers), 1, 16, NULL},
    {"ibot.head_hidden_dim", K_I32, OFF(ibot.head_hidden_dim), 1, 1 << 16, NULL},
    {"train.batch_size_per_gpu", K_I32, OFF(train.batch_size_per_gpu), 1, 1 << 20, NULL},
    {"train.saveckp_freq", K_I32, OFF(train.saveckp_freq), 1, 1 << 30, NULL},
    {"train.seed", K_I64, OFF(train.seed), 0, 9.2e18, NULL},
    {"train.num_workers", K_I32, OFF(train.num_workers), 0, 256, NULL},
    {"train.OFFICIAL_EPOCH_LENGTH", K_I32, OFF(train.official_epoch_length), 1, 1 << 30, NULL},
    {"train.centering", K_CENTERING, OFF(train.centering), 0, 1, NULL},
    {"train.threads", K_I32, OFF(train.threads), 0, 1024, NULL},
    {"train.recompute_blocks", K_I32, OFF(train.recompute_blocks), -1, 4096, NULL},
    {"student.arch", K_STR, OFF(student.arch), 0, 0, arch_choices},
    {"student.patch_size", K_I32, OFF(student.patch_size), 1, 1024, NULL},
    {"student.drop_path_rate", K_F64, OFF(student.drop_path_rate), 0, 1, NULL},
    {"student.layerscale", K_F64, OFF(student.layerscale), 0, INF, NULL},
    {"student.drop_path_uniform", K_BOOL, OFF(student.drop_path_uniform), 0, 1, NULL},
    {"student.pretrained_weights", K_STR, OFF(student.pretrained_weights), 0, 0, NULL},
    {"student.ffn_layer", K_STR, OFF(student.ffn_layer), 0, 0, ffn_choices},
    {"student.qkv_bias", K_BOOL, OFF(student.qkv_bias), 0, 1, NULL},
    {"student.proj_bias", K_BOOL, OFF(student.proj_bias), 0, 1, NULL},
    {"student.ffn_bias", K_BOOL, OFF(student.ffn_bias), 0, 1, NULL},
    {"student.num_register_tokens", K_I32, OFF(student.num_register_tokens), 0, 64, NULL},
    {"student.interpolate_antialias", K_BOOL, OFF(student.interpolate_antialias), 0, 1, NULL},
    {"student.interpolate_offset", K_F64, OFF(student.interpolate_offset), 0, 1, NULL},
    {"teacher.momentum_teacher", K_F64, OFF(teacher.momentum_teacher), 0, 1, NULL},
    {"teacher.final_momentum_teacher", K_F64, OFF(teacher.final_momentum_teacher), 0, 1, NULL},
    {"teacher.warmup_teacher_temp", K_F64, OFF(teacher.warmup_teacher_temp), 1e-6, INF, NULL},
    {"teacher.teacher_temp", K_F64, OFF(teacher.teacher_temp), 1e-6, INF, NULL},
    {"teacher.warmup_teacher_temp_epochs", K_I32, OFF(teacher.warmup_teacher_temp_epochs), 0, 1 << 30, NULL},
    {"optim.epochs", K_I32, OFF(optim.epochs), 1, 1 << 30, NULL},
    {"optim.weight_decay", K_F64, OFF(optim.weight_decay), 0, INF, NULL},
    {"optim.weight_decay_end", K_F64, OFF(optim.weight_decay_end), 0, INF, NULL},
    {"optim.base_lr", K_F64, OFF(optim.base_lr), 0, INF, NULL},
    {"optim.lr", K_F64, OFF(optim.lr), 0, INF, NULL},
    {"optim.warmup_epochs", K_I32, OFF(optim.warmup_epochs), 0, 1 << 30, NULL},
    {"optim.min_lr", K_F64, OFF(optim.min_lr), 0, INF, NULL},
    {"optim.clip_grad", K_F64, OFF(optim.clip_grad), 0, INF, NULL},
    {"optim.freeze_last_layer_epochs", K_I32, OFF(optim.freeze_last_layer_epochs), 0, 1 << 30, NULL},
    {"optim.scaling_rule", K_STR, OFF(optim.scaling_rule), 0, 0, scaling_choices},
    {"optim.patch_embed_lr_mult", K_F64, OFF(optim.patch_embed_lr_mult), 0, INF, NULL},
    {"optim.layerwise_decay", K_F64, OFF(optim.layerwise_decay), 0, INF, NULL},
    {"optim.adamw_beta1", K_F64, OFF(optim.adamw_beta1), 0, 1, NULL},
    {"optim.adamw_beta2", K_F64, OFF(optim.adamw_beta2), 0, 1, NULL},
    {"crops.global_crops_scale", K_PAIR, OFF(crops.global_crops_scale), 1e-9, 1, NULL},
    {"crops.local_crops_number", K_I32, OFF(crops.local_crops_number), 0, 64, NULL},
    {"crops.local_crops_scale", K_PAIR, OFF(crops.local_crops_scale), 1e-9, 1, NULL},
    {"crops.global_crops_size", K_I32, OFF(crops.global_crops_size), 1, 4096, NULL},
    {"crops.local_crops_size", K_I32, OFF(crops.local_crops_size), 1, 4096, NULL},
    {"crops.paper_probabilities", K_BOOL, OFF(crops.paper_probabilities), 0, 1, NULL},
    {"evaluation.eval_period_iterations", K_I32, OFF(evaluation.eval_period_iterations), 1, 1 << 30, NULL},
    {"distillation.enabled", K_BOOL, OFF(distillation.enabled), 0, 1, NULL},
    {"distillation.full_cfg_path", K_STR, OFF(distillation.full_cfg_path), 0, 0, NULL},
    {"distillation.checkpoint_path", K_STR, OFF(distillation.checkpoint_path), 0, 0, NULL},
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* Keys (or whole subtrees) of the official configuration that only the GPU code uses, or whose job lvd-train
 * does through its command line. */
static const char *const ignored_keys[] = {"compute_precision", "student.block_chunks", "train.cache_dataset",
                                           "train.dataset_path", "train.output_dir", "MODEL", NULL};

void recipe_defaults(recipe *r)
{
    memset(r, 0, sizeof *r);
    r->dino.loss_weight = 1.0;
    r->dino.head_n_prototypes = 65536;
    r->dino.head_bottleneck_dim = 256;
    r->dino.head_nlayers = 3;
    r->dino.head_hidden_dim = 2048;
    r->dino.koleo_loss_weight = 0.1;
    r->ibot.loss_weight = 1.0;
    r->ibot.mask_sample_probability = 0.5;
    r->ibot.mask_ratio_min_max[0] = 0.1;
    r->ibot.mask_ratio_min_max[1] = 0.5;
    r->ibot.separate_head = 0;
    r->ibot.head_n_prototypes = 65536;
    r->ibot.head_bottleneck_dim = 256;
    r->ibot.head_nlayers = 3;
    r->ibot.head_hidden_dim = 2048;
    r->train.batch_size_per_gpu = 64;
    r->train.saveckp_freq = 20;
    r->train.seed = 0;
    r->train.num_workers = 10;
    r->train.official_epoch_length = 1250;
    r->train.centering = RECIPE_CENTERING;
    r->train.threads = 0;
    r->train.recompute_blocks = -1;
    snprintf(r->student.arch, RECIPE_STR, "vit_large");
    r->student.patch_size = 16;
    r->student.drop_path_rate = 0.3;
    r->student.layerscale = 1.0e-05;
    r->student.drop_path_uniform = 1;
    snprintf(r->student.ffn_layer, RECIPE_STR, "mlp");
    r->student.qkv_bias = r->student.proj_bias = r->student.ffn_bias = 1;
    r->student.num_register_tokens = 0;
    r->student.interpolate_antialias = 0;
    r->student.interpolate_offset = 0.1;
    r->teacher.momentum_teacher = 0.992;
    r->teacher.final_momentum_teacher = 1;
    r->teacher.warmup_teacher_temp = 0.04;
    r->teacher.teacher_temp = 0.07;
    r->teacher.warmup_teacher_temp_epochs = 30;
    r->optim.epochs = 100;
    r->optim.weight_decay = 0.04;
    r->optim.weight_decay_end = 0.4;
    r->optim.base_lr = 0.004;
    r->optim.lr = 0.;
    r->optim.warmup_epochs = 10;
    r->optim.min_lr = 1.0e-06;
    r->optim.clip_grad = 3.0;
    r->optim.freeze_last_layer_epochs = 1;
    snprintf(r->optim.scaling_rule, RECIPE_STR, "sqrt_wrt_1024");
    r->optim.patch_embed_lr_mult = 0.2;
    r->optim.layerwise_decay = 0.9;
    r->optim.adamw_beta1 = 0.9;
    r->optim.adamw_beta2 = 0.999;
    r->crops.global_crops_scale[0] = 0.32;
    r->crops.global_crops_scale[1] = 1.0;
    r->crops.local_crops_number = 8;
    r->crops.local_crops_scale[0] = 0.05;
    r->crops.local_crops_scale[1] = 0.32;
    r->crops.global_crops_size = 224;
    r->crops.local_crops_size = 96;
    r->crops.paper_probabilities = 0;
    r->evaluation.eval_period_iterations = 12500;
    r->distillation.enabled = 0; /* full_cfg_path, checkpoint_path: "" (memset) */
}

static const key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

/* name is a section holding known keys ("optim") */
static int is_section(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < NKEYS; i++)
        if (!strncmp(keys[i].name, name, n) && keys[i].name[n] == '.')
            return 1;
    return 0;
}

/* name is an ignored key or inside an ignored subtree */
static int is_ignored(const char *name)
{
    for (const char *const *p = ignored_keys; *p; p++) {
        size_t n = strlen(*p);
        if (!strncmp(name, *p, n) && (name[n] == '\0' || name[n] == '.'))
            return 1;
    }
    return 0;
}

static void note_ignored(recipe *r, const char *name)
{
    /* Record the top ignored entry once: "compute_precision", not each of its leaves. */
    char top[128];
    snprintf(top, sizeof top, "%s", name);
    for (const char *const *p = ignored_keys; *p; p++) {
        size_t n = strlen(*p);
        if (!strncmp(name, *p, n) && (name[n] == '\0' || name[n] == '.')) {
            snprintf(top, sizeof top, "%s", *p);
            break;
        }
    }
    size_t tl = strlen(top);
    for (const char *at = r->ignored; (at = strstr(at, top)) != NULL; at += tl)
        if ((at == r->ignored || at[-1] == ' ') && (at[tl] == '\0' || at[tl] == ','))
            return;
    size_t used = strlen(r->ignored);
    snprintf(r->ignored + used, sizeof r->ignored - used, "%s%s", used ? ", " : "", top);
}

static unsigned long line_of(const yaml_node_t *n) { return (unsigned long)n->start_mark.line + 1; }

static int parse_f64(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
        *out = 1;
        return 0;
    }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
        *out = 0;
        return 0;
    }
    return -1;
}

/* Sets key k of r from node v of doc; where = "file:line" for messages. */
static int set_node(recipe *r, const key *k, yaml_document_t *doc, yaml_node_t *v, const char *where)
{
    char *base = (char *)r + k->off;
    if (k->k == K_PAIR) {
        if (v->type != YAML_SEQUENCE_NODE ||
            v->data.sequence.items.top - v->data.sequence.items.start != 2)
            return lvd_fail("%s: %s: expected a list of two numbers, e.g. [0.1, 0.5]", where, k->name);
        double pair[2];
        for (int i = 0; i < 2; i++) {
            yaml_node_t *it = yaml_document_get_node(doc, v->data.sequence.items.start[i]);
            if (!it || it->type != YAML_SCALAR_NODE || parse_f64((const char *)it->data.scalar.value, &pair[i]) != 0)
                return lvd_fail("%s: %s: item %d is not a number", where, k->name, i + 1);
            if (pair[i] < k->min || pair[i] > k->max)
                return lvd_fail("%s: %s: %g is outside [%g, %g]", where, k->name, pair[i], k->min, k->max);
        }
        if (pair[0] > pair[1])
            return lvd_fail("%s: %s: [%g, %g]: the first value is larger than the second", where, k->name, pair[0],
                            pair[1]);
        memcpy(base, pair, sizeof pair);
        return 0;
    }
    if (v->type != YAML_SCALAR_NODE)
        return lvd_fail("%s: %s: expected a single value, not a %s", where, k->name,
                        v->type == YAML_MAPPING_NODE ? "mapping" : "list");
    const char *s = (const char *)v->data.scalar.value;
    double d;
    int64_t i;
    int b;
    switch (k->k) {
    case K_F64:
        if (parse_f64(s, &d) != 0)
            return lvd_fail("%s: %s: '%s' is not a number", where, k->name, s);
        if (d < k->min || d > k->max)
            return lvd_fail("%s: %s: %g is outside [%g, %g]", where, k->name, d, k->min, k->max);
        *(double *)base = d;
        return 0;
    case K_I32:
    case K_I64:
        if (parse_i64(s, &i) != 0)
            return lvd_fail("%s: %s: '%s' is not an integer", where, k->name, s);
        if ((double)i < k->min || (double)i > k->max)
            return lvd_fail("%s: %s: %lld is outside [%.0f, %.0f]", where, k->name, (long long)i, k->min, k->max);
        if (k->k == K_I32)
            *(int32_t *)base = (int32_t)i;
        else
            *(int64_t *)base = i;
        return 0;
    case K_BOOL:
        if (parse_bool(s, &b) != 0)
            return lvd_fail("%s: %s: '%s' is not true or false", where, k->name, s);
        *(int *)base = b;
        return 0;
    case K_CENTERING:
        if (!strcmp(s, "centering"))
            *(recipe_centering *)base = RECIPE_CENTERING;
        else if (!strcmp(s, "sinkhorn_knopp"))
            *(recipe_centering *)base = RECIPE_SINKHORN_KNOPP;
        else
            return lvd_fail("%s: %s: '%s' is not centering or sinkhorn_knopp", where, k->name, s);
        return 0;
    case K_STR:
        if (strlen(s) >= RECIPE_STR)
            return lvd_fail("%s: %s: longer than %d bytes", where, k->name, RECIPE_STR - 1);
        if (k->choices) {
            const char *const *c = k->choices;
            while (*c && strcmp(*c, s))
                c++;
            if (!*c) {
                char list[256] = "";
                for (c = k->choices; *c; c++)
                    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", c == k->choices ? "" : ", ", *c);
                return lvd_fail("%s: %s: '%s' is not one of %s", where, k->name, s, list);
            }
        }
        snprintf(base, RECIPE_STR, "%s", s);
        return 0;
    case K_PAIR:
        break;
    }
    return lvd_fail("%s: %s: unsupported value", where, k->name);
}

/* Applies mapping node m at dotted prefix (NULL at the top). */
static int walk(recipe *r, const char *path, yaml_document_t *doc, yaml_node_t *m, const char *prefix)
{
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key), *vn = yaml_document_get_node(doc, p->value);
        char where[4200];
        snprintf(where, sizeof where, "%s:%lu", path, kn ? line_of(kn) : 0UL);
        if (!kn || kn->type != YAML_SCALAR_NODE)
            return lvd_fail("%s: keys must be plain words", where);
        char name[512];
        if (snprintf(name, sizeof name, "%s%s%s", prefix ? prefix : "", prefix ? "." : "",
                     (const char *)kn->data.scalar.value) >= (int)sizeof name)
            return lvd_fail("%s: key too long", where);
        if (is_ignored(name)) {
            note_ignored(r, name);
            continue;
        }
        const key *k = find_key(name);
        if (k) {
            if (set_node(r, k, doc, vn, where) != 0)
                return -1;
            continue;
        }
        if (vn && vn->type == YAML_MAPPING_NODE && is_section(name)) {
            if (walk(r, path, doc, vn, name) != 0)
                return -1;
            continue;
        }
        return lvd_fail("%s: unknown key '%s'%s", where, name,
                        is_section(name) ? " (a section: give a mapping of its keys)" : "");
    }
    return 0;
}

static int load_text(recipe *r, const char *path, const unsigned char *text, size_t len)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return lvd_fail("%s: out of memory", path);
    yaml_parser_set_input_string(&parser, text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = lvd_fail("%s:%lu: %s", path, (unsigned long)parser.problem_mark.line + 1,
                          parser.problem ? parser.problem : "YAML error");
        yaml_parser_delete(&parser);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = 0;
    if (root && root->type != YAML_MAPPING_NODE)
        rc = lvd_fail("%s:%lu: the configuration must be a mapping of sections", path, line_of(root));
    else if (root)
        rc = walk(r, path, &doc, root, NULL);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int recipe_load_file(recipe *r, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail_errno("%s", path);
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (!buf)
        return lvd_fail("%s: out of memory", path);
    if (err) {
        free(buf);
        return lvd_fail("%s: read error", path);
    }
    int rc = load_text(r, path, buf, n);
    free(buf);
    return rc;
}

int recipe_set(recipe *r, const char *assignment, const char *where)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return lvd_fail("%s: '%s': expected key=value (e.g. optim.base_lr=0.001)", where, assignment);
    char name[512];
    size_t kl = (size_t)(eq - assignment);
    if (kl >= sizeof name)
        return lvd_fail("%s: key too long", where);
    memcpy(name, assignment, kl);
    name[kl] = '\0';
    if (is_ignored(name)) {
        note_ignored(r, name);
        return 0;
    }
    const key *k = find_key(name);
    if (!k)
        return lvd_fail("%s: unknown key '%s'", where, name);
    /* Read the value as a YAML document: a scalar or a flow sequence. */
    const char *val = eq + 1;
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return lvd_fail("out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)val, strlen(val));
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_parser_delete(&parser);
        return lvd_fail("%s: %s: cannot read value '%s'", where, name, val);
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc;
    if (!root)
        rc = lvd_fail("%s: %s: empty value", where, name);
    else
        rc = set_node(r, k, &doc, root, where);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int recipe_finish(recipe *r, int32_t ranks)
{
    if (ranks < 1)
        return lvd_fail("recipe: %d ranks", (int)ranks);
    if (r->crops.local_crops_size > r->crops.global_crops_size)
        return lvd_fail("crops.local_crops_size %d is larger than crops.global_crops_size %d",
                        (int)r->crops.local_crops_size, (int)r->crops.global_crops_size);
    if (r->crops.global_crops_size % r->student.patch_size || r->crops.local_crops_size % r->student.patch_size)
        return lvd_fail("crops: global_crops_size %d and local_crops_size %d must be multiples of "
                        "student.patch_size %d", (int)r->crops.global_crops_size, (int)r->crops.local_crops_size,
                        (int)r->student.patch_size);
    /* Without ibot.separate_head, dinov2 uses the DINO head for iBOT too: ibot.head_* are then unused. */
    if (r->optim.warmup_epochs > r->optim.epochs)
        return lvd_fail("optim.warmup_epochs %d is more than optim.epochs %d", (int)r->optim.warmup_epochs,
                        (int)r->optim.epochs);
    if (r->distillation.enabled && !r->distillation.checkpoint_path[0])
        return lvd_fail("distillation.enabled needs distillation.checkpoint_path (the teacher run's "
                        "training_state.safetensors)");
    if (r->optim.lr == 0.0)
        r->optim.lr = r->optim.base_lr * sqrt((double)r->train.batch_size_per_gpu * (double)ranks / 1024.0);
    return 0;
}

const char *recipe_ignored(const recipe *r) { return r->ignored; }

/* Appends printf text to buf at *n; -1 when it does not fit. */
static int put(char *buf, size_t cap, size_t *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int put(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *n, *n < cap ? cap - *n : 0, fmt, ap);
    va_end(ap);
    if (w < 0 || *n + (size_t)w >= cap)
        return -1;
    *n += (size_t)w;
    return 0;
}

int recipe_dump(const recipe *r, char *buf, size_t cap)
{
    size_t n = 0;
    char section[64] = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const key *k = &keys[i];
        const char *dot = strchr(k->name, '.');
        size_t sl = (size_t)(dot - k->name);
        if (strlen(section) != sl || strncmp(section, k->name, sl)) {
            snprintf(section, sizeof section, "%.*s", (int)sl, k->name);
            if (put(buf, cap, &n, "%s:\n", section) != 0)
                return -1;
        }
        const char *leaf = dot + 1;
        const char *base = (const char *)r + k->off;
        int rc = 0;
        switch (k->k) {
        case K_F64: rc = put(buf, cap, &n, "  %s: %.17g\n", leaf, *(const double *)base); break;
        case K_I32: rc = put(buf, cap, &n, "  %s: %d\n", leaf, (int)*(const int32_t *)base); break;
        case K_I64: rc = put(buf, cap, &n, "  %s: %lld\n", leaf, (long long)*(const int64_t *)base); break;
        case K_BOOL: rc = put(buf, cap, &n, "  %s: %s\n", leaf, *(const int *)base ? "true" : "false"); break;
        case K_CENTERING:
            rc = put(buf, cap, &n, "  %s: %s\n", leaf,
                     *(const recipe_centering *)base == RECIPE_SINKHORN_KNOPP ? "sinkhorn_knopp" : "centering");
            break;
        case K_PAIR: {
            const double *p = (const double *)base;
            rc = put(buf, cap, &n, "  %s: [%.17g, %.17g]\n", leaf, p[0], p[1]);
            break;
        }
        case K_STR: {
            /* double-quoted YAML scalar: escape backslash and quote */
            rc = put(buf, cap, &n, "  %s: \"", leaf);
            for (const char *s = base; !rc && *s; s++)
                rc = (*s == '"' || *s == '\\') ? put(buf, cap, &n, "\\%c", *s) : put(buf, cap, &n, "%c", *s);
            if (!rc)
                rc = put(buf, cap, &n, "\"\n");
            break;
        }
        }
        if (rc != 0)
            return -1;
    }
    return (int)n;
}
