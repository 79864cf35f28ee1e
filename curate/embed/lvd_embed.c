/* lvd-embed — turns the decoded working images of a work directory into L2-normalised embeddings, one
 * (rows, dim) .npy file at a time under WORK/embeddings/<name>/<collection>/, with catalog rows mapping
 * (model, image) to (file, row). Or imports embeddings computed elsewhere (--import).
 *
 * Pipeline: the main thread selects the next batch of images from the catalog and hands it to the loader
 * thread (common/embed_loader.h), which reads, decodes and preprocesses it (with a few helper threads) while the main
 * thread runs the previous batch through the ViT: two input buffers, double buffering. Rows go to the
 * embedding store (vectors.h), which writes each file whole before committing its catalog rows and keeps
 * the identity of every model name.
 *
 * --import (import.h) adds one file's rows for one collection per run; a name created by --import
 * collects the rows of any number of such runs (pool and benchmark collections under one model name, as
 * lvd-dedup needs) and keeps the identity of its first file (embed_import_register).
 *
 * curate/embed/ (the ViT itself is common/vit.h, shared with lvd-vit and the trainer; the loader thread
 * common/embed_loader.h and DINOv2's evaluation transform common/preprocess.h are shared with lvd-eval):
 *   lvd_embed.c    options, batching, --import, --part/--merge
 *   pooling.[ch]   the features kept of one image (cls, mean of the patch tokens, cls+mean)
 *   vectors.[ch]   the embedding store: .npy files, their catalog rows, model names and identities
 *   import.[ch]    rows computed elsewhere (--import E.npy --keys K.txt) into the store
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "cli.h"
#include "import.h"
#include "embed_loader.h"
#include "vectors.h"
#include "opts.h"
#include "pooling.h"
#include "progress.h"
#include "sha256.h"
#include "stage.h"
#include "vit.h"
#include "vit_io.h"

#define PROG "lvd-embed"
#define MAX_COLL 64
#define NAME_MAX_LEN 100

static const char usage[] =
    "Usage: lvd-embed --work DIR --model M.safetensors [--name NAME] [options]\n"
    "       lvd-embed --work DIR --collection C --import E.npy --keys K.txt --name NAME\n"
    "       lvd-embed --work DIR --merge\n"
    "Embeds every decoded working image (decode status ok) that has no embedding for this model yet, with\n"
    "DINOv2's evaluation transform (resize the shorter side, bicubic; center crop; ImageNet normalisation),\n"
    "and writes L2-normalised rows to WORK/embeddings/NAME/COLLECTION/part-NNNNNN.npy.\n\n"
    "  --model FILE            ViT checkpoint (safetensors, DINOv2 key names)\n"
    "  --name NAME             model name: directory under embeddings/ and catalog key (default: the\n"
    "                          checkpoint's file name without .safetensors); letters, digits, . _ -\n"
    "  --collection NAME       only images of this collection (repeatable; default: all collections)\n"
    "  --resize N              shorter side before cropping (256)\n"
    "  --crop N                center crop side, a multiple of the patch size (224)\n"
    "  --pool cls|mean|cls+mean  features: normed CLS token (cls), mean of the normed patch tokens (mean),\n"
    "                          or their concatenation [cls, mean] (cls+mean); every row is L2-normalised\n"
    "  --dtype float16|float32 dtype of the .npy files (float16)\n"
    "  --batch N               images per forward pass (32)\n"
    "  --threads N             threads of the ViT (number of CPUs)\n"
    "  --loaders N             threads reading and preprocessing the next batch (1 per 2 CPUs, at least 1)\n"
    "  --file-rows N           rows per .npy file (8192); a file and its catalog rows are committed together\n"
    "  --import E.npy          import a (rows, dim) float16/float32 array computed elsewhere: row i belongs to\n"
    "  --keys K.txt            the member of --collection whose key is line i of K.txt (each key once: an\n"
    "                          unknown or repeated key is an error); rows that are not unit length are\n"
    "                          normalised (and counted); needs no --model. A NAME created by\n"
    "                          --import takes further imports of the same dim (other collections, new members):\n"
    "                          images that already have a row of NAME are skipped (\"already present\")\n"
    "  --force                 embed everything again (with --import: replace the rows of the collection's\n"
    "                          images); also lets NAME move to another model (other weights or preprocessing,\n"
    "                          imported <-> checkpoint, another dim): the name's old catalog rows are dropped\n"
    "                          and its .npy files are rewritten from part 0 (files past the new last part are\n"
    "                          left unreferenced)\n"
    "  --part I/N              partitioned run, I in 0..N-1 (see lvd-crawl --help); parts write\n"
    "                          part-pIofN-NNNNNN.npy\n"
    CLI_STAGE_HELP
    "  --config FILE.yaml  --json  --quiet | --verbose  --version  --help\n"
    "A model's identity is the SHA-256 of its weights plus its preprocessing; a NAME already recorded with\n"
    "another identity is an error unless --force. An imported NAME's identity is the SHA-256 of the file that\n"
    "created it: later imports add rows and keep it (an --import --force that replaces rows derives a new one).\n"
    "--import into a NAME embedded with --model, or --model into an imported NAME, is an error unless --force.\n";

enum {
    OPT_COLLECTION = OPT_FIRST_STAGE_OPTION, OPT_MODEL, OPT_NAME, OPT_RESIZE, OPT_CROP, OPT_POOL, OPT_DTYPE,
    OPT_BATCH, OPT_THREADS, OPT_LOADERS, OPT_FILE_ROWS, OPT_IMPORT, OPT_KEYS
};

/* In embed_pool_kind order. */
static const char *const pool_names[] = {"cls", "mean", "cls+mean", NULL};
static const char *const dtype_names[] = {"float16", "float32", NULL};

/* ---------------------------------------------------------------------------------------------------------
 * Embedding with a model
 */

typedef struct embedder {
    embed_out o;
    vit_model *m;
    vit_run *run_full, *run_tail;
    int32_t tail_n;
    int32_t batch;
    uint32_t resize, crop;
    embed_pool_kind pool;
    catalog *src;        /* where images come from */
    embed_loader ld;
    float *feat;         /* one row scratch */
    uint64_t failed;
    int64_t *failed_ids; /* sorted: images that failed this run, not tried again for another collection */
    size_t failed_cap;
    progress prog;
} embedder;

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The next images of collection coll_id after *last without a row for this model: up to batch of them in s.
 * Returns the count (0 at the end) or -1. */
static int fetch_batch(embedder *e, int64_t coll_id, int64_t *last, embed_load_slot *s)
{
    static const char *sql =
        "SELECT d.image_id, i.sha256, sh.path, d.offset, d.size FROM decodes d"
        " JOIN images i ON i.id = d.image_id JOIN shards sh ON sh.id = d.shard_id"
        " WHERE d.image_id > ?2 AND d.status = 'ok'"
        " AND EXISTS (SELECT 1 FROM members m WHERE m.image_id = d.image_id AND m.collection_id = ?1)"
        " AND NOT EXISTS (SELECT 1 FROM embeddings x WHERE x.model_id = ?3 AND x.image_id = d.image_id)"
        " ORDER BY d.image_id LIMIT ?4";
    int partitioned = e->o.st->part.count > 1;
    s->n = 0;
    for (;;) {
        sqlite3_stmt *st = catalog_stmt(e->src, sql);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, coll_id);
        sqlite3_bind_int64(st, 2, *last);
        sqlite3_bind_int64(st, 3, partitioned ? e->o.main_skip_id : e->o.model_id);
        sqlite3_bind_int(st, 4, e->batch * 4);
        int rows = 0, rc;
        while (s->n < e->batch && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            rows++;
            int64_t id = sqlite3_column_int64(st, 0);
            *last = id;
            const char *sha = (const char *)sqlite3_column_text(st, 1);
            if (e->failed && bsearch(&id, e->failed_ids, e->failed, sizeof *e->failed_ids, cmp_id))
                continue;
            if (partitioned) {
                if (!part_owns(&e->o.st->part, sha, strlen(sha)))
                    continue;
                int h = embed_have_row(&e->o, id);
                if (h < 0) {
                    sqlite3_reset(st);
                    return -1;
                }
                if (h)
                    continue;
            }
            embed_load_item *it = &s->items[s->n++];
            it->image_id = id;
            snprintf(it->path, sizeof it->path, "%s/%s", e->o.st->work, (const char *)sqlite3_column_text(st, 2));
            it->offset = (uint64_t)sqlite3_column_int64(st, 3);
            it->size = (uint64_t)sqlite3_column_int64(st, 4);
            it->error[0] = '\0';
        }
        sqlite3_reset(st);
        if (s->n == e->batch || rows == 0)
            return s->n;
    }
}

/* Images the run will embed, for the progress line (one part only: parts filter by hash). An image in two
 * collections counts once. */
static int count_pending(embedder *e, const int64_t *coll_ids, int nc, uint64_t *total)
{
    *total = 0;
    for (int i = 0; i < nc; i++) {
        sqlite3_stmt *st = catalog_stmt(
            e->src, "SELECT count(*) FROM decodes d WHERE d.status = 'ok'"
                    " AND EXISTS (SELECT 1 FROM members m WHERE m.image_id = d.image_id AND m.collection_id = ?1)"
                    " AND NOT EXISTS (SELECT 1 FROM members m2 WHERE m2.image_id = d.image_id"
                    "                 AND m2.collection_id IN (SELECT value FROM json_each(?3)))"
                    " AND NOT EXISTS (SELECT 1 FROM embeddings x WHERE x.model_id = ?2 AND x.image_id = d.image_id)");
        if (!st)
            return -1;
        char prev[MAX_COLL * 24 + 4];
        size_t n = (size_t)snprintf(prev, sizeof prev, "[");
        for (int j = 0; j < i; j++)
            n += (size_t)snprintf(prev + n, sizeof prev - n, "%s%" PRId64, j ? "," : "", coll_ids[j]);
        snprintf(prev + n, sizeof prev - n, "]");
        sqlite3_bind_int64(st, 1, coll_ids[i]);
        sqlite3_bind_int64(st, 2, e->o.model_id);
        sqlite3_bind_text(st, 3, prev, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *total += (uint64_t)sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            return lvd_fail("%s: counting images to embed: %s", catalog_path(e->src), sqlite3_errmsg(catalog_db(e->src)));
    }
    return 0;
}

/* Runs the ready slot through the model and adds one pooled, normalised row per image that loaded. */
static int embed_slot(embedder *e, embed_load_slot *s)
{
    for (int i = 0; i < s->n; i++)
        if (!s->items[i].ok) {
            log_warn("image %" PRId64 " not embedded: %s", s->items[i].image_id, s->items[i].error);
            if (e->failed == e->failed_cap) {
                size_t cap = e->failed_cap ? 2 * e->failed_cap : 64;
                int64_t *nf = realloc(e->failed_ids, cap * sizeof *nf);
                if (!nf)
                    return lvd_fail("out of memory");
                e->failed_ids = nf;
                e->failed_cap = cap;
            }
            size_t at = 0;
            while (at < e->failed && e->failed_ids[at] < s->items[i].image_id)
                at++;
            memmove(e->failed_ids + at + 1, e->failed_ids + at, (e->failed - at) * sizeof *e->failed_ids);
            e->failed_ids[at] = s->items[i].image_id;
            e->failed++;
        }
    vit_run *r = e->run_full;
    if (s->n != e->batch) {
        if (!e->run_tail || e->tail_n != s->n) {
            vit_run_free(e->run_tail);
            e->run_tail = NULL;
            vit_run_opts ro = {.batch = s->n, .height = (int32_t)e->crop, .width = (int32_t)e->crop};
            if (vit_run_create(e->m, &ro, &e->run_tail) != 0)
                return -1;
            e->tail_n = s->n;
        }
        r = e->run_tail;
    }
    if (vit_forward(e->m, r, s->x, NULL, 0.0f, 0) != 0)
        return -1;
    const float *cls = vit_out_cls(r), *patch = vit_out_patch(r);
    const int32_t D = e->m->cfg.dim, np = (int32_t)((e->crop / (uint32_t)e->m->cfg.patch) *
                                                   (e->crop / (uint32_t)e->m->cfg.patch));
    for (int i = 0; i < s->n; i++) {
        if (!s->items[i].ok)
            continue;
        float *f = e->feat;
        embed_pool(f, e->pool, cls + (size_t)i * D, patch + (size_t)i * np * D, np, D);
        embed_l2_normalise(f, e->o.dim);
        if (embed_out_add(&e->o, s->items[i].image_id, f) != 0)
            return -1;
    }
    return 0;
}

/* Embeds every pending image of one collection, double buffered. */
static int embed_collection(embedder *e, int64_t coll_id, const char *coll_name)
{
    if (embed_out_begin_collection(&e->o, coll_name) != 0)
        return -1;
    embed_loader *l = &e->ld;
    int64_t last = 0;
    /* Slots are used in turn across collections: start where the loader will look next (it is idle). */
    int k = embed_loader_next(l);
    uint64_t before = e->o.written + (uint64_t)e->o.n;
    int n = fetch_batch(e, coll_id, &last, &l->slots[k]);
    if (n < 0)
        return -1;
    if (n > 0)
        embed_loader_queue(l, k);
    int rc = 0;
    while (n > 0) {
        embed_load_slot *next = &l->slots[k ^ 1];
        int nn = fetch_batch(e, coll_id, &last, next);
        if (nn < 0)
            rc = -1;
        if (nn > 0)
            embed_loader_queue(l, k ^ 1);
        embed_loader_wait(l, k);
        if (rc == 0 && embed_slot(e, &l->slots[k]) != 0)
            rc = -1;
        embed_loader_release(l, k);
        if (rc != 0) {
            if (nn > 0) { /* let the loader finish the queued slot before the buffers go away */
                embed_loader_wait(l, k ^ 1);
                embed_loader_release(l, k ^ 1);
            }
            return -1;
        }
        progress_update(&e->prog, e->o.written + (uint64_t)e->o.n, e->failed);
        n = nn;
        k ^= 1;
    }
    if (embed_out_flush(&e->o) != 0)
        return -1;
    uint64_t got = e->o.written - before;
    if (got)
        log_info("embed: %s: %" PRIu64 " images embedded", coll_name, got);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * main
 */

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* The file name of path without directory and without the extension ext. */
static void default_name(const char *path, const char *ext, char *buf, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, cap, "%s", b);
    size_t n = strlen(buf), e = strlen(ext);
    if (n > e && strcmp(buf + n - e, ext) == 0)
        buf[n - e] = '\0';
}

int main(int argc, char **argv)
{
    int ac;
    char **av;
    cli_begin(PROG, argc, argv, &ac, &av);
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        CLI_STAGE_OPTIONS,
        {"collection", required_argument, NULL, OPT_COLLECTION},
        {"model", required_argument, NULL, OPT_MODEL},
        {"name", required_argument, NULL, OPT_NAME},
        {"resize", required_argument, NULL, OPT_RESIZE},
        {"crop", required_argument, NULL, OPT_CROP},
        {"pool", required_argument, NULL, OPT_POOL},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"loaders", required_argument, NULL, OPT_LOADERS},
        {"file-rows", required_argument, NULL, OPT_FILE_ROWS},
        {"import", required_argument, NULL, OPT_IMPORT},
        {"keys", required_argument, NULL, OPT_KEYS},
        {NULL, 0, NULL, 0}};
    const char *work = NULL, *model_path = NULL, *name_arg = NULL, *import_path = NULL, *keys_path = NULL;
    char *collections[MAX_COLL];
    cli_stage_args sa = {0}; /* --retry-failed is moot: failed images are simply not embedded yet */
    int ncoll = 0, json = 0, pool = EMBED_POOL_CLS, dtype_i = 0;
    int64_t resize = 256, crop = 224, batch = 32, file_rows = 8192, iv;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = ncpu > 0 ? (int)ncpu : 1;
    int loaders = ncpu > 1 ? (int)(ncpu / 2) : 1;
    if (loaders > 8)
        loaders = 8;
    int opt;
    while ((opt = getopt_long(ac, av, "h", longopts, NULL)) != -1) {
        if (cli_common(opt, PROG, usage, &work, &json) || cli_stage_option(opt, &sa))
            continue;
        int bad = 0;
        switch (opt) {
        case OPT_COLLECTION:
            if (ncoll == MAX_COLL)
                cli_usage_error(PROG, "at most 64 --collection options");
            collections[ncoll++] = optarg;
            break;
        case OPT_MODEL: model_path = optarg; break;
        case OPT_NAME: name_arg = optarg; break;
        case OPT_RESIZE: bad = opt_int("--resize", optarg, 1, 8192, &resize); break;
        case OPT_CROP: bad = opt_int("--crop", optarg, 1, 8192, &crop); break;
        case OPT_POOL: bad = opt_choice("--pool", optarg, pool_names, &pool); break;
        case OPT_DTYPE: bad = opt_choice("--dtype", optarg, dtype_names, &dtype_i); break;
        case OPT_BATCH: bad = opt_int("--batch", optarg, 1, 4096, &batch); break;
        case OPT_THREADS: bad = opt_int("--threads", optarg, 1, 1024, &iv); threads = (int)iv; break;
        case OPT_LOADERS:
            bad = opt_int("--loaders", optarg, 1, EMBED_LOADER_MAX_THREADS, &iv);
            loaders = (int)iv;
            break;
        case OPT_FILE_ROWS: bad = opt_int("--file-rows", optarg, 1, 1 << 24, &file_rows); break;
        case OPT_IMPORT: import_path = optarg; break;
        case OPT_KEYS: keys_path = optarg; break;
        default: cli_usage_error(PROG, "unknown option");
        }
        if (bad)
            cli_usage_error(PROG, lvd_errmsg());
    }
    if (!work)
        cli_usage_error(PROG, "--work DIR is required");
    if (optind < ac)
        cli_usage_error(PROG, "unexpected argument");
    if (sa.merge) {
        int mrc = cli_merge("embed", work, cli_stage_flags(&sa), json);
        config_free_argv(ac, av);
        return mrc;
    }
    char name[NAME_MAX_LEN + 64];
    if (import_path) {
        if (model_path)
            cli_usage_error(PROG, "--import takes embeddings computed elsewhere: no --model");
        if (!keys_path)
            cli_usage_error(PROG, "--import needs --keys K.txt (line i: the key of row i)");
        if (ncoll != 1)
            cli_usage_error(PROG, "--import needs exactly one --collection");
        if (sa.part)
            cli_usage_error(PROG, "--import does not take --part");
        default_name(import_path, ".npy", name, sizeof name);
    } else {
        if (!model_path)
            cli_usage_error(PROG, "--model M.safetensors is required (or --import E.npy --keys K.txt)");
        if (keys_path)
            cli_usage_error(PROG, "--keys goes with --import");
        default_name(model_path, ".safetensors", name, sizeof name);
    }
    if (name_arg)
        snprintf(name, sizeof name, "%s", name_arg);
    if (!valid_name(name))
        cli_usage_errorf(PROG, "model name '%.200s' must be 1-%d letters, digits, '.', '_' or '-', not starting "
                         "with '.'%s", name, NAME_MAX_LEN, name_arg ? "" : " (set one with --name)");
    if (!import_path && crop > resize)
        cli_usage_error(PROG, "--crop must not exceed --resize (the crop is taken from the resized image)");

    /* The model's configuration first: the crop must tile into patches. */
    vit_config cfg = {0};
    embed_identity want = {0};
    if (!import_path) {
        if (vit_io_config(model_path, &cfg) != 0) {
            log_error("%s", lvd_errmsg());
            return EXIT_FAIL;
        }
        if (crop % cfg.patch != 0)
            cli_usage_errorf(PROG, "--crop %" PRId64 " is not a multiple of the model's patch size %d (%s); try "
                             "--crop %" PRId64, crop, (int)cfg.patch, model_path,
                             crop / cfg.patch > 0 ? (crop / cfg.patch) * cfg.patch : cfg.patch);
        want.dim = embed_pool_dim((embed_pool_kind)pool, cfg.dim);
        snprintf(want.preprocess, sizeof want.preprocess,
                 "{\"resize\":%" PRId64 ",\"crop\":%" PRId64 ",\"pool\":\"%s\",\"dtype\":\"%s\"}", resize, crop,
                 pool_names[pool], dtype_names[dtype_i]);
        if (sha256_file(model_path, want.sha) != 0) {
            log_error("%s", lvd_errmsg());
            return EXIT_FAIL;
        }
    }

    /* The run's parameters: the checkpoint's identity, or the imported file, its SHA-256 and collection. */
    char ptext_buf[1024], fp[65], import_sha[65] = "", model_sha[65] = "";
    char *ptext = ptext_buf, *ptext_heap = NULL;
    if (import_path) {
        if (sha256_file(import_path, import_sha) != 0) {
            log_error("%s", lvd_errmsg());
            return EXIT_FAIL;
        }
        cJSON *pj = cJSON_CreateObject();
        cJSON_AddStringToObject(pj, "name", name);
        cJSON_AddStringToObject(pj, "preprocess", "imported");
        cJSON_AddNumberToObject(pj, "import", 1);
        cJSON_AddStringToObject(pj, "collection", collections[0]);
        cJSON_AddStringToObject(pj, "import_file", import_path);
        cJSON_AddStringToObject(pj, "import_sha256", import_sha);
        cJSON_AddBoolToObject(pj, "force", sa.force);
        ptext = ptext_heap = cJSON_PrintUnformatted(pj);
        cJSON_Delete(pj);
        if (!ptext) {
            log_error("out of memory");
            return EXIT_FAIL;
        }
    } else {
        snprintf(ptext_buf, sizeof ptext_buf, "{\"name\":\"%s\",\"sha256\":\"%s\",\"preprocess\":%s,\"import\":0}",
                 name, want.sha, want.preprocess);
        snprintf(model_sha, sizeof model_sha, "%s", want.sha);
    }
    stage_fingerprint(ptext, fp);
    embedder *e = calloc(1, sizeof *e);
    stage *st = calloc(1, sizeof *st);
    if (!e || !st) {
        log_error("out of memory");
        return EXIT_FAIL;
    }
    int opened = stage_open(st, "embed", work, sa.part, ptext, fp, cli_stage_flags(&sa));
    free(ptext_heap);
    if (opened != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    embed_out *o = &e->o;
    embed_out_init(o, st, name, dtype_i ? NPY_F32 : NPY_F16, file_rows);
    embed_import_counts ic = {0};
    cJSON *per_coll = cJSON_CreateObject();
    int rc = EXIT_FAIL, owned_names = 0;
    char *coll_names[MAX_COLL];
    double t0 = progress_now();

    if (import_path) {
        if (embed_import(o, import_path, import_sha, keys_path, collections[0], sa.force, &ic, model_sha) != 0)
            goto out;
        cJSON_AddNumberToObject(per_coll, collections[0], (double)o->written);
        rc = EXIT_OK;
        goto out;
    }

    e->src = st->part.count > 1 ? st->main_ro : st->cat;
    if (!e->src) {
        log_info("embed: no catalog.db in %s yet: 0 new images", work);
        rc = EXIT_OK;
        goto out;
    }
    /* Collections to embed, by id in the source catalog: the named ones, else all of them. */
    int64_t coll_ids[MAX_COLL];
    int nc = 0;
    if (ncoll) {
        for (int i = 0; i < ncoll; i++) {
            if (catalog_collection(e->src, collections[i], NULL, &coll_ids[nc]) != 0)
                goto out;
            coll_names[nc++] = collections[i];
        }
    } else {
        sqlite3_stmt *q = catalog_stmt(e->src, "SELECT id, name FROM collections ORDER BY id");
        if (!q)
            goto out;
        while (sqlite3_step(q) == SQLITE_ROW) {
            if (nc == MAX_COLL) {
                sqlite3_reset(q);
                lvd_fail("more than %d collections: name the ones to embed with --collection", MAX_COLL);
                goto out;
            }
            coll_ids[nc] = sqlite3_column_int64(q, 0);
            coll_names[nc] = strdup((const char *)sqlite3_column_text(q, 1));
            if (!coll_names[nc]) {
                sqlite3_reset(q);
                lvd_fail("out of memory");
                goto out;
            }
            owned_names = ++nc;
        }
        sqlite3_reset(q);
    }

    o->dim = want.dim;
    e->batch = (int32_t)batch;
    e->resize = (uint32_t)resize;
    e->crop = (uint32_t)crop;
    e->pool = (embed_pool_kind)pool;
    if (embed_model_register(o, &want, sa.force, coll_ids, ncoll ? nc : 0) != 0 || embed_out_alloc(o) != 0)
        goto out;
    vit_set_threads(threads);
    if (vit_load(model_path, NULL, 0, &e->m) != 0)
        goto out;
    vit_run_opts ro = {.batch = (int32_t)batch, .height = (int32_t)crop, .width = (int32_t)crop};
    if (vit_run_create(e->m, &ro, &e->run_full) != 0)
        goto out;
    log_info("embed: model '%s' (%s, dim %d, patch %d, depth %d), %s, batch %" PRId64 ", %d threads + %d loaders",
             name, model_path, (int)e->m->cfg.dim, (int)e->m->cfg.patch, (int)e->m->cfg.depth, want.preprocess,
             batch, threads, loaders);
    if (!(e->feat = malloc(sizeof(float) * (size_t)o->dim))) {
        lvd_fail("out of memory");
        goto out;
    }
    if (embed_loader_start(&e->ld, loaders, e->batch, e->resize, e->crop) != 0)
        goto out;
    uint64_t total = 0;
    if (st->part.count == 1 && count_pending(e, coll_ids, nc, &total) != 0)
        goto out;
    progress_init(&e->prog, "embed", total);
    for (int i = 0; i < nc; i++) {
        uint64_t before = o->written;
        if (embed_collection(e, coll_ids[i], coll_names[i]) != 0)
            goto out;
        cJSON_AddNumberToObject(per_coll, coll_names[i], (double)(o->written - before));
    }
    if (o->written || e->failed)
        progress_finish(&e->prog);
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    embed_loader_free(&e->ld);
    double secs = progress_now() - t0;
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddStringToObject(sum, "stage", "embed");
    cJSON_AddStringToObject(sum, "part", st->part_text);
    cJSON_AddStringToObject(sum, "model", name);
    cJSON_AddStringToObject(sum, "sha256", model_sha);
    cJSON_AddNumberToObject(sum, "dim", o->dim);
    cJSON_AddNumberToObject(sum, "embedded", (double)o->written);
    cJSON_AddNumberToObject(sum, "failed", (double)e->failed);
    cJSON_AddNumberToObject(sum, "files", (double)o->files);
    cJSON_AddItemToObject(sum, "collections", per_coll);
    if (import_path) {
        cJSON_AddNumberToObject(sum, "normalised", (double)ic.normalised);
        cJSON_AddNumberToObject(sum, "already_present", (double)ic.already);
        cJSON_AddStringToObject(sum, "import_sha256", import_sha);
        cJSON_AddNumberToObject(sum, "duplicate_images", (double)ic.dup_images);
    } else {
        cJSON_AddNumberToObject(sum, "seconds", secs);
        cJSON_AddNumberToObject(sum, "images_per_second", secs > 0 ? (double)o->written / secs : 0);
    }
    char *sum_text = cJSON_PrintUnformatted(sum);
    cJSON_Delete(sum);
    if (stage_close(st, rc == EXIT_OK ? "done" : "failed", sum_text) != 0) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK) {
        if (o->written == 0)
            log_info("embed: 0 new images to embed%s", import_path ? " (every key already has a row)" : "");
        else
            log_info("embed: %" PRIu64 " embedded into %" PRIu64 " file%s under %s/embeddings/%s/%s", o->written,
                     o->files, o->files == 1 ? "" : "s", work, name,
                     e->failed ? "; some images failed (see the warnings)" : "");
        if (import_path && ic.already)
            log_info("embed: %" PRIu64 " image%s of '%s' already present (rows kept; --force replaces them)",
                     ic.already, ic.already == 1 ? "" : "s", name);
        if (json && sum_text)
            printf("%s\n", sum_text);
    }
    free(sum_text);
    for (int i = 0; i < owned_names; i++)
        free(coll_names[i]);
    if (e->run_full)
        vit_run_free(e->run_full);
    if (e->run_tail)
        vit_run_free(e->run_tail);
    if (e->m)
        vit_free(e->m);
    free(e->feat);
    free(e->failed_ids);
    embed_out_free(o);
    free(e);
    free(st);
    config_free_argv(ac, av);
    return rc;
}
