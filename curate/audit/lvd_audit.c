/* lvd_audit.c — lvd-audit: what lvd-dedup removed and why, per benchmark and for self-dedup, and what
 * lvd-retrieve selected, per registry row, and how lvd-balance sampled its tree, per level.
 *
 * Read-only: the catalog is opened with CATALOG_READONLY (never created, migrated or locked for writing), and
 * every query runs inside one read transaction, so an audit taken while lvd-dedup commits sees one consistent
 * state. The report is built once (report.h); --json prints it, the text summary and the HTML page are
 * rendered from it, and --csv streams every removal from the same catalog.
 *
 * curate/audit/:
 *   lvd_audit.c options and the text and CSV renderings
 *   report.[ch] the report, built from SELECTs over the dedup and retrieval tables
 *   breport.[ch] its balance part (catalog-007.sql)
 *   page.[ch]   the self-contained HTML page
 *   html.[ch]   escaped HTML text and inline SVG histograms
 *   thumb.[ch]  thumbnails of working images for the page
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic_file.h"
#include "breport.h"
#include "page.h"
#include "report.h"
#include "catalog.h"
#include "cli.h"
#include "opts.h"

#define PROG "lvd-audit"
#define KEY_SHOWN 40 /* characters of an image key in a text table */

static const char usage[] =
    "Usage: lvd-audit --work DIR [--model NAME] [--retrieve-model NAME] [--balance-model NAME] [--top N]\n"
    "                 [--json] [--csv FILE] [--html DIR]\n"
    "Shows what lvd-dedup removed and why: per benchmark collection, the pool images removed by similarity\n"
    "band and the top pairs (pool image, benchmark image, similarity) with the threshold used; for self-dedup,\n"
    "the components by size, the largest, those with the weakest links (transitive chaining), and the\n"
    "removed duplicates beside the image they were joined to. Both also show the similarity of every searched\n"
    "pool image to its nearest neighbour, above the threshold or not, and how many images thresholds around\n"
    "the one used would flag. When lvd-retrieve ran, a retrieval section follows: per registry row the seeds,\n"
    "retrieved images, collisions and final count against the paper's, the similarity of the selections, the\n"
    "seeds beside their nearest retrieved image (sample rows) and the chosen clusters (cluster rows).\n"
    "When lvd-balance ran, a balance section follows: per level of its tree the cluster sizes before and after\n"
    "sampling, and the sampled images of the largest and smallest top-level clusters.\n"
    "Read-only: it never writes the catalog.\n\n"
    "  --model NAME      the embedding model whose dedup to audit (default: the only one with dedup results)\n"
    "  --retrieve-model NAME  the model whose retrieval to audit (default: the only one with retrieval\n"
    "                    results; none: no retrieval section)\n"
    "  --balance-model NAME  the model whose balance sample to audit (default: the only one with one; none:\n"
    "                    no balance section)\n"
    "  --top N           pairs per list and components per table (50); each section lists the N pairs of\n"
    "                    highest similarity, then up to N more nearest the threshold; retrieval rows list\n"
    "                    N seeds with their nearest retrieved image, or N chosen clusters\n"
    "  --json            print the report as one JSON object instead of the text summary\n"
    "  --csv FILE        write every removal to FILE ('-': stdout, instead of the summary): image_key,\n"
    "                    collection, reason, component, ref_key (kept or benchmark image), ref_collection,\n"
    "                    similarity (of the edge that removed it), ref_similarity, cause_key, image_sha256,\n"
    "                    ref_sha256\n"
    "  --html DIR        write DIR/index.html with side-by-side thumbnails (DIR/thumbs/) and histograms;\n"
    "                    self-contained (no external URLs). WORK/reports/audit/ is a good place for it\n"
    "  --thumb-size PX   longest side of the thumbnails (192)\n"
    "  --config FILE.yaml  --quiet | --verbose  --version  --help\n";

enum { OPT_MODEL = OPT_FIRST_STAGE_OPTION, OPT_RETRIEVE_MODEL, OPT_TOP, OPT_CSV, OPT_HTML, OPT_THUMB,
       OPT_BALANCE_MODEL };

/* ---- text ---- */

/* s with control bytes shown as '?', cut at max bytes (with "..."); NULL shows as "-". Returns bytes shown. */
static size_t put_clean(FILE *f, const char *s, size_t max)
{
    if (!s)
        s = "-";
    size_t n = strlen(s), shown = n > max ? max - 3 : n;
    for (size_t i = 0; i < shown; i++)
        fputc((unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i], f);
    if (shown < n) {
        fputs("...", f);
        shown += 3;
    }
    return shown;
}

/* An image's key padded to width. */
static void put_key(FILE *f, const cJSON *img, int width)
{
    size_t n = put_clean(f, cJSON_IsObject(img) ? audit_text(img, "key") : NULL, (size_t)width);
    for (size_t i = n; i < (size_t)width; i++)
        fputc(' ', f);
}

static void put_sim(FILE *f, double v)
{
    if (isnan(v))
        fputs("     -", f);
    else
        fprintf(f, "%6.4f", v);
}

static void print_pairs(FILE *f, const cJSON *list, int self)
{
    const cJSON *p;
    cJSON_ArrayForEach(p, list)
    {
        fprintf(f, "    %5" PRId64 "  ", audit_int(p, "rank"));
        put_sim(f, audit_num(p, "sim"));
        fputs("  ", f);
        put_key(f, audit_get(p, "image"), KEY_SHOWN);
        fputs("  ", f);
        put_key(f, audit_get(p, "ref"), KEY_SHOWN);
        if (self) {
            const cJSON *kept = audit_get(p, "kept");
            if (cJSON_IsObject(kept) && audit_int(kept, "id") != audit_int(audit_get(p, "ref"), "id")) {
                fputs("  kept ", f);
                put_clean(f, audit_text(kept, "key"), KEY_SHOWN);
                fprintf(f, " (%.4f)", audit_num(p, "kept_sim"));
            }
            if (audit_text(p, "kind") && strcmp(audit_text(p, "kind"), "knn") != 0) {
                fputs("  [", f);
                put_clean(f, audit_text(p, "kind"), 8);
                fputc(']', f);
            }
        } else if (cJSON_IsObject(audit_get(p, "via"))) {
            fputs("  via ", f);
            put_clean(f, audit_text(audit_get(p, "via"), "key"), KEY_SHOWN);
        }
        fputc('\n', f);
    }
}

static void print_pair_lists(FILE *f, const cJSON *s, int self, const char *what)
{
    if (cJSON_GetArraySize(audit_get(s, "top_pairs")) == 0)
        return;
    fprintf(f, "  top pairs (highest similarity first)\n    %5s  %6s  %-*s  %-*s\n", "rank", "sim", KEY_SHOWN,
            self ? "removed duplicate" : "removed pool image", KEY_SHOWN, what);
    print_pairs(f, audit_get(s, "top_pairs"), self);
    if (cJSON_GetArraySize(audit_get(s, "threshold_pairs")) > 0) {
        fputs("  nearest the threshold (lowest similarity first)\n", f);
        print_pairs(f, audit_get(s, "threshold_pairs"), self);
    }
}

/* The nearest-neighbour distribution of a section: the "flagged at" table, then the non-empty histogram bins
 * with a bar of up to 40 '#'. */
static void print_nearest(FILE *f, const cJSON *nr, const char *what)
{
    if (!cJSON_IsObject(nr))
        return;
    fprintf(f, "  nearest    %s of each of %" PRId64 " searched pool images:", what, audit_int(nr, "images"));
    if (audit_int(nr, "images") == 0) {
        fputs(" none\n", f);
        return;
    }
    fputs(" min ", f);
    put_sim(f, audit_num(nr, "min_sim"));
    fputs(", max ", f);
    put_sim(f, audit_num(nr, "max_sim"));
    fputs("\n    flagged at cosine >    pool images\n", f);
    const cJSON *o;
    cJSON_ArrayForEach(o, audit_get(nr, "flagged"))
    {
        fprintf(f, "    %-8.4g %-10s %11" PRId64 "\n", audit_num(o, "threshold"),
                cJSON_IsTrue(audit_get(o, "used")) ? "(used)" : "", audit_int(o, "images"));
    }
    const cJSON *h = audit_get(nr, "histogram"), *e = audit_get(h, "edges"), *k = audit_get(h, "counts");
    int32_t n = cJSON_GetArraySize(k);
    if (n < 1 || cJSON_GetArraySize(e) != n + 1)
        return;
    int64_t most = 1;
    for (int32_t i = 0; i < n; i++)
        if ((int64_t)cJSON_GetArrayItem(k, i)->valuedouble > most)
            most = (int64_t)cJSON_GetArrayItem(k, i)->valuedouble;
    fputs("    similarity        images\n", f);
    for (int32_t i = 0; i < n; i++) {
        int64_t c = (int64_t)cJSON_GetArrayItem(k, i)->valuedouble;
        if (c == 0)
            continue;
        char label[48];
        snprintf(label, sizeof label, "%.4g-%.4g", cJSON_GetArrayItem(e, i)->valuedouble,
                 cJSON_GetArrayItem(e, i + 1)->valuedouble);
        fprintf(f, "    %-14s %9" PRId64 " ", label, c);
        for (int64_t j = 0, w = (c * 40 + most - 1) / most; j < w; j++)
            fputc('#', f);
        fputc('\n', f);
    }
}

static void print_benchmark(FILE *f, const cJSON *b, const cJSON *params)
{
    fputs("\nbenchmark ", f);
    put_clean(f, audit_text(b, "name"), 200);
    fprintf(f, " (%" PRId64 " images, %" PRId64 " embedded)\n", audit_int(b, "images"), audit_int(b, "embedded"));
    fprintf(f, "  threshold  cosine > %.4g, rule ", audit_num(b, "threshold"));
    put_clean(f, audit_text(params, "benchmark_rule"), 16);
    fprintf(f, "\n  removed    %" PRId64 " pool images (%" PRId64 " matched themselves, %" PRId64
               " with their component)\n",
            audit_int(b, "removed"), audit_int(b, "removed_direct"), audit_int(b, "removed_component"));
    fprintf(f, "  matches    %" PRId64 " pairs above the threshold: %" PRId64 " pool images, %" PRId64
               " benchmark images\n",
            audit_int(b, "matches"), audit_int(b, "matched_pool_images"), audit_int(b, "matched_benchmark_images"));
    fputs("  band            removed\n", f);
    const cJSON *band;
    cJSON_ArrayForEach(band, audit_get(b, "bands"))
    {
        char label[48];
        snprintf(label, sizeof label, "%.4g-%.4g", audit_num(band, "lo"), audit_num(band, "hi"));
        fprintf(f, "  %-14s %8" PRId64 "\n", label, audit_int(band, "removed"));
    }
    print_nearest(f, audit_get(b, "nearest"), "most similar benchmark image");
    print_pair_lists(f, b, 0, "benchmark image");
}

static void print_components(FILE *f, const cJSON *list, int weakest)
{
    fprintf(f, "    %10s  %6s  %7s  %7s  %-*s", "component", "size", "weakest", "strong", KEY_SHOWN, "kept");
    if (weakest)
        fputs("  weakest link between", f);
    fputc('\n', f);
    const cJSON *o;
    cJSON_ArrayForEach(o, list)
    {
        fprintf(f, "    %10" PRId64 "  %6" PRId64 "  ", audit_int(o, "component"), audit_int(o, "size"));
        put_sim(f, audit_num(o, "weakest_sim"));
        fputs("   ", f);
        put_sim(f, audit_num(o, "strongest_sim"));
        fputs("   ", f);
        put_key(f, audit_get(o, "kept"), KEY_SHOWN);
        if (weakest) {
            fputs("  ", f);
            put_clean(f, audit_text(audit_get(o, "weakest_a"), "key"), KEY_SHOWN);
            fputs(" ~ ", f);
            put_clean(f, audit_text(audit_get(o, "weakest_b"), "key"), KEY_SHOWN);
            if (audit_text(o, "weakest_kind") && strcmp(audit_text(o, "weakest_kind"), "knn") != 0) {
                fputs(" [", f);
                put_clean(f, audit_text(o, "weakest_kind"), 8);
                fputc(']', f);
            }
        }
        fputc('\n', f);
    }
}

static void print_self(FILE *f, const cJSON *s)
{
    fprintf(f, "\nself-dedup (threshold: cosine > %.4g)\n", audit_num(s, "threshold"));
    fprintf(f, "  components %" PRId64 " over %" PRId64 " pool images; %" PRId64 " with more than one image, the "
               "largest %" PRId64 "\n",
            audit_int(s, "components"), audit_int(s, "images"), audit_int(s, "multi_components"),
            audit_int(s, "largest_size"));
    fprintf(f, "  removed    %" PRId64 " duplicates; %" PRId64 " of them at or below the threshold from the image "
               "kept (chaining)\n",
            audit_int(s, "removed"), audit_int(s, "chained"));
    fputs("  size        components      images\n", f);
    const cJSON *o;
    cJSON_ArrayForEach(o, audit_get(s, "sizes"))
    {
        char label[48];
        if (audit_int(o, "min") == audit_int(o, "max"))
            snprintf(label, sizeof label, "%" PRId64, audit_int(o, "min"));
        else
            snprintf(label, sizeof label, "%" PRId64 "-%" PRId64, audit_int(o, "min"), audit_int(o, "max"));
        fprintf(f, "  %-10s %11" PRId64 " %11" PRId64 "\n", label, audit_int(o, "components"), audit_int(o, "images"));
    }
    print_nearest(f, audit_get(s, "nearest"), "most similar other pool image");
    if (cJSON_GetArraySize(audit_get(s, "largest")) > 0) {
        fputs("  largest components\n", f);
        print_components(f, audit_get(s, "largest"), 0);
    }
    if (cJSON_GetArraySize(audit_get(s, "weakest")) > 0) {
        fputs("  weakest links (most chained first)\n", f);
        print_components(f, audit_get(s, "weakest"), 1);
    }
    print_pair_lists(f, s, 1, "joined by its edge to");
}

/* ---- retrieval ---- */

#define ROW_SHOWN 28 /* characters of a registry row's name in a text table */

/* A count of the report, right-aligned in width; '-' when it is null or absent (skipped rows, no paper
 * count). */
static void put_count(FILE *f, const cJSON *o, const char *key, int width)
{
    const cJSON *v = audit_get(o, key);
    if (cJSON_IsNumber(v))
        fprintf(f, " %*" PRId64, width, (int64_t)v->valuedouble);
    else
        fprintf(f, " %*s", width, "-");
}

/* The retrieval section: the run, one table line per registry row with its counts beside the paper's, the
 * totals, the similarity of each row's selections, and the skipped rows with their reasons. */
static void print_retrieval(FILE *f, const cJSON *rt)
{
    const cJSON *run = audit_get(rt, "run"), *pool = audit_get(rt, "pool"), *tot = audit_get(rt, "totals");
    fputs("\nretrieval (model ", f);
    put_clean(f, audit_text(rt, "model"), 200);
    fprintf(f, ", %" PRId64 " retrieve run%s", audit_int(rt, "runs"), audit_int(rt, "runs") == 1 ? "" : "s");
    if (cJSON_IsObject(run)) {
        fputs(", last ", f);
        put_clean(f, audit_text(run, "created_at"), 40);
    }
    fputs(")\n", f);
    if (cJSON_IsObject(run)) {
        fputs("  registry ", f);
        put_clean(f, audit_text(run, "registry_path"), 4096);
        fputs(" (sha256 ", f);
        put_clean(f, audit_text(run, "registry_sha256"), 64);
        fputs("), scale ", f);
        put_clean(f, audit_text(run, "scale"), 16);
        fprintf(f, "\n  pool     %" PRId64 " images at generation %" PRId64 " in the last run, ",
                audit_int(run, "pool_size"), audit_int(run, "pool_gen"));
        if (audit_text(run, "dedup_model")) {
            fputs("kept by dedup model ", f);
            put_clean(f, audit_text(run, "dedup_model"), 200);
        } else {
            fputs("not deduplicated (--no-dedup)", f);
        }
        fputc('\n', f);
    }
    if (cJSON_IsObject(pool) && (!cJSON_IsObject(run) || audit_int(pool, "size") != audit_int(run, "pool_size") ||
                                 audit_int(pool, "generation") != audit_int(run, "pool_gen")))
        fprintf(f, "  pool now %" PRId64 " images at generation %" PRId64 "\n", audit_int(pool, "size"),
                audit_int(pool, "generation"));
    fprintf(f, "  %-*s %-8s %-8s %10s %11s %11s %10s %8s %10s %11s\n", ROW_SHOWN, "row", "method", "status", "seeds",
            "paper seeds", "retrieved", "collisions", "capped", "final", "paper final");
    const cJSON *o;
    cJSON_ArrayForEach(o, audit_get(rt, "rows"))
    {
        fputs("  ", f);
        size_t n = put_clean(f, audit_text(o, "name"), ROW_SHOWN);
        for (; n < ROW_SHOWN; n++)
            fputc(' ', f);
        fputc(' ', f);
        n = put_clean(f, audit_text(o, "method"), 8);
        for (; n < 8; n++)
            fputc(' ', f);
        fputc(' ', f);
        n = put_clean(f, audit_text(o, "status"), 8);
        for (; n < 8; n++)
            fputc(' ', f);
        put_count(f, o, "seeds", 10);
        put_count(f, o, "paper_seeds", 11);
        put_count(f, o, "retrieved", 11);
        put_count(f, o, "collisions", 10);
        put_count(f, o, "capped", 8);
        put_count(f, o, "final", 10);
        put_count(f, o, "paper_final", 11);
        fputc('\n', f);
    }
    fprintf(f, "  %-*s %-8s %-8s %10s %11s %11s %10s %8s", ROW_SHOWN, "total", "", "", "", "", "", "", "");
    put_count(f, tot, "final", 10);
    put_count(f, tot, "paper_final", 11);
    const cJSON *bm = audit_get(tot, "final_by_method");
    fprintf(f, "\n  final    as_is %" PRId64 ", sample %" PRId64 ", cluster %" PRId64 "; %" PRId64
               " distinct images over all rows\n",
            audit_int(bm, "as_is"), audit_int(bm, "sample"), audit_int(bm, "cluster"),
            audit_int(tot, "distinct_images"));
    int header = 0;
    cJSON_ArrayForEach(o, audit_get(rt, "rows"))
    {
        if (!cJSON_IsNumber(audit_get(o, "selections")))
            continue;
        if (!header) {
            fputs("  similarity of the selections (sample: to the seed; cluster: to the centroid)\n", f);
            header = 1;
        }
        fputs("    ", f);
        size_t n = put_clean(f, audit_text(o, "name"), ROW_SHOWN);
        for (; n < ROW_SHOWN; n++)
            fputc(' ', f);
        fputs(" min ", f);
        put_sim(f, audit_num(o, "sim_min"));
        fputs(", mean ", f);
        put_sim(f, audit_num(o, "sim_mean"));
        fputs(", max ", f);
        put_sim(f, audit_num(o, "sim_max"));
        if (cJSON_IsNumber(audit_get(o, "chosen")))
            fprintf(f, "; %" PRId64 " of %" PRId64 " clusters with seeds chosen (%" PRId64 " seeds)",
                    audit_int(o, "chosen"), audit_int(o, "clusters_with_seeds"), audit_int(o, "seeds_in_chosen"));
        fputc('\n', f);
    }
    if (audit_int(tot, "skipped") > 0) {
        fputs("  skipped rows\n", f);
        cJSON_ArrayForEach(o, audit_get(rt, "rows"))
        {
            const char *st = audit_text(o, "status");
            if (!st || strcmp(st, "skipped") != 0)
                continue;
            fputs("    ", f);
            put_clean(f, audit_text(o, "name"), 200);
            fputs(": ", f);
            put_clean(f, audit_text(o, "reason"), 1000);
            fputc('\n', f);
        }
    }
}

static void print_dedup(FILE *f, const cJSON *r)
{
    const cJSON *params = audit_get(r, "params"), *pool = audit_get(r, "pool");
    fputs("\nmodel    ", f);
    put_clean(f, audit_text(r, "model"), 200);
    fprintf(f, " (%" PRId64 " dedup run%s, last ", audit_int(r, "dedup_runs"),
            audit_int(r, "dedup_runs") == 1 ? "" : "s");
    put_clean(f, audit_text(r, "last_run"), 40);
    fprintf(f, ")\nparams   k %" PRId64 ", threshold %.4g, benchmark threshold %.4g (rule ", audit_int(params, "k"),
            audit_num(params, "threshold"), audit_num(params, "benchmark_threshold"));
    put_clean(f, audit_text(params, "benchmark_rule"), 16);
    fputs("), keep ", f);
    put_clean(f, audit_text(params, "keep_rule"), 32);
    if (cJSON_IsNumber(audit_get(params, "phash_distance")))
        fprintf(f, ", pHash distance <= %" PRId64, audit_int(params, "phash_distance"));
    fputs("\nindex    ", f);
    put_clean(f, audit_text(params, "index"), 200);
    fprintf(f, "\npool     %" PRId64 " decided: %" PRId64 " kept, %" PRId64 " duplicate, %" PRId64
               " benchmark; %" PRId64 " not decided yet\n",
            audit_int(pool, "decided"), audit_int(pool, "kept"), audit_int(pool, "duplicate"),
            audit_int(pool, "benchmark"), audit_int(pool, "undecided"));
    const cJSON *b;
    cJSON_ArrayForEach(b, audit_get(r, "benchmarks")) print_benchmark(f, b, params);
    if (cJSON_GetArraySize(audit_get(r, "benchmarks")) == 0)
        fputs("\nno benchmark collections\n", f);
    print_self(f, audit_get(r, "self"));
}

/* ---- balance ---- */

/* "min / median / max" of a quantiles object. */
static void put_spread(FILE *f, const cJSON *q)
{
    fprintf(f, "%6" PRId64 " %6" PRId64 " %6" PRId64 " %6" PRId64 " %6" PRId64, audit_int(q, "min"),
            audit_int(q, "p25"), audit_int(q, "median"), audit_int(q, "p75"), audit_int(q, "max"));
}

static void print_balance_clusters(FILE *f, const cJSON *list, const char *what)
{
    const cJSON *o, *im;
    cJSON_ArrayForEach(o, list)
    {
        fprintf(f, "  %s cluster %" PRId64 ": %" PRId64 " points, quota %" PRId64 ":", what, audit_int(o, "cluster"),
                audit_int(o, "size"), audit_int(o, "quota"));
        cJSON_ArrayForEach(im, audit_get(o, "images"))
        {
            fputc(' ', f);
            put_clean(f, audit_text(audit_get(im, "image"), "key"), KEY_SHOWN);
            if (audit_int(im, "copies") > 1)
                fprintf(f, " x%" PRId64, audit_int(im, "copies"));
        }
        fputc('\n', f);
    }
}

/* The balance section: the tree and the sample, then per level the cluster sizes before and after sampling. */
static void print_balance(FILE *f, const cJSON *b)
{
    const cJSON *tr = audit_get(b, "tree"), *sm = audit_get(b, "sample"), *l;
    fputs("\nbalance (model ", f);
    put_clean(f, audit_text(b, "model"), 200);
    fprintf(f, "): tree %" PRId64 " of %" PRId64 " levels over the %s pool, built on %" PRId64 " images, %" PRId64
               " now\n", audit_int(tr, "id"), audit_int(tr, "n_levels"), audit_text(tr, "source"),
            audit_int(tr, "built_points"), audit_int(tr, "points"));
    fprintf(f, "  sample %" PRId64 ": %" PRId64 " of target %" PRId64 " (%" PRId64 " distinct images, at most %" PRId64
               " copies each, leaf remainder %s)\n", audit_int(sm, "id"), audit_int(sm, "total"),
            audit_int(sm, "target"), audit_int(sm, "distinct"), audit_int(sm, "multiplier"), audit_text(sm, "sampling"));
    fprintf(f, "  %-5s %7s %8s  %-34s  %-34s\n", "level", "k", "clusters", "points: min p25 median p75 max",
            "sampled: min p25 median p75 max");
    cJSON_ArrayForEach(l, audit_get(b, "levels"))
    {
        fprintf(f, "  %-5" PRId64 " %7" PRId64 " %8" PRId64 "  ", audit_int(l, "level"), audit_int(l, "k"),
                audit_int(l, "clusters"));
        put_spread(f, audit_get(l, "before"));
        fputs("    ", f);
        put_spread(f, audit_get(l, "after"));
        fputc('\n', f);
    }
    print_balance_clusters(f, audit_get(b, "largest"), "largest");
    print_balance_clusters(f, audit_get(b, "smallest"), "smallest");
}

static void print_text(FILE *f, const cJSON *r)
{
    fputs("catalog  ", f);
    put_clean(f, audit_text(r, "catalog"), 4096);
    if (audit_text(r, "model"))
        print_dedup(f, r);
    else
        fputs("\ndedup    no dedup results\n", f);
    if (cJSON_IsObject(audit_get(r, "retrieval")))
        print_retrieval(f, audit_get(r, "retrieval"));
    if (cJSON_IsObject(audit_get(r, "balance")))
        print_balance(f, audit_get(r, "balance"));
}

/* ---- main ---- */

static int write_csv(catalog *c, int64_t model_id, const char *path, int64_t *rows)
{
    if (strcmp(path, "-") == 0)
        return audit_csv(c, model_id, stdout, rows);
    atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        return -1;
    FILE *f = atomic_file_stream(&af);
    if (!f || audit_csv(c, model_id, f, rows) != 0) {
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}

int main(int argc, char **argv)
{
    int ac;
    char **av;
    cli_begin(PROG, argc, argv, &ac, &av);
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        {"model", required_argument, NULL, OPT_MODEL},
        {"retrieve-model", required_argument, NULL, OPT_RETRIEVE_MODEL},
        {"balance-model", required_argument, NULL, OPT_BALANCE_MODEL},
        {"top", required_argument, NULL, OPT_TOP},
        {"csv", required_argument, NULL, OPT_CSV},
        {"html", required_argument, NULL, OPT_HTML},
        {"thumb-size", required_argument, NULL, OPT_THUMB},
        {NULL, 0, NULL, 0}};
    const char *work = NULL, *model = NULL, *rmodel = NULL, *bmodel = NULL, *csv = NULL, *html = NULL;
    int json = 0, opt;
    int64_t top = 50, thumb = 192;
    opterr = 0;
    while ((opt = getopt_long(ac, av, ":h", longopts, NULL)) != -1) {
        if (cli_common(opt, PROG, usage, &work, &json))
            continue;
        int bad = 0;
        switch (opt) {
        case OPT_MODEL: model = optarg; break;
        case OPT_RETRIEVE_MODEL: rmodel = optarg; break;
        case OPT_BALANCE_MODEL: bmodel = optarg; break;
        case OPT_TOP: bad = opt_int("--top", optarg, 0, 1000000, &top); break;
        case OPT_CSV: csv = optarg; break;
        case OPT_HTML: html = optarg; break;
        case OPT_THUMB: bad = opt_int("--thumb-size", optarg, 16, 1024, &thumb); break;
        case ':': cli_usage_errorf(PROG, "option %.100s needs a value", av[optind - 1]); break;
        default: cli_usage_errorf(PROG, "unknown option %.100s", av[optind - 1]);
        }
        if (bad)
            cli_usage_error(PROG, lvd_errmsg());
    }
    if (!work || !work[0])
        cli_usage_error(PROG, "--work DIR is required");
    if (optind < ac)
        cli_usage_errorf(PROG, "unexpected argument '%.100s'", av[optind]);
    if (csv && !csv[0])
        cli_usage_error(PROG, "--csv needs a file name ('-' for stdout)");
    if (html && !html[0])
        cli_usage_error(PROG, "--html needs a directory");
    if (csv && strcmp(csv, "-") == 0 && json)
        cli_usage_error(PROG, "--csv - and --json both want stdout; write the CSV to a file");

    char *path = NULL;
    if (asprintf(&path, "%s/catalog.db", work) < 0) {
        log_error("out of memory");
        return EXIT_FAIL;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        log_error("%s: no catalog here (%s); is --work the right directory?", path, strerror(errno));
        free(path);
        return EXIT_FAIL;
    }
    catalog *c = NULL;
    cJSON *report = NULL;
    char *name = NULL, *rname = NULL, *bname = NULL;
    int64_t model_id = 0, rmodel_id = 0, bmodel_id = 0, rows = 0;
    int rc = EXIT_OK;
    /* Dedup results may be missing when retrieval results exist (lvd-retrieve --no-dedup): the report then
     * holds the retrieval part alone. With neither, the audit fails as it always did. */
    if (catalog_open(&c, path, CATALOG_READONLY) != 0 || audit_retrieve_model(c, rmodel, &rmodel_id, &rname) != 0 ||
        audit_model(c, model, rmodel_id > 0, &model_id, &name) != 0) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
        goto done;
    }
    if (csv && model_id == 0) {
        log_error("%s: no dedup results for any model, so no removals for --csv; run lvd-dedup first", path);
        rc = EXIT_FAIL;
        goto done;
    }
    if (!(report = audit_report(c, model_id, name, rmodel_id, rname, (int32_t)top))) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
        goto done;
    }
    if (audit_balance_model(c, bmodel, &bmodel_id, &bname) != 0) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
        goto done;
    }
    if (bmodel_id) {
        cJSON *bal = audit_balance(c, bmodel_id, bname);
        if (!bal) {
            log_error("%s", lvd_errmsg());
            rc = EXIT_FAIL;
            goto done;
        }
        cJSON_AddItemToObject(report, "balance", bal);
    }
    if (csv) {
        if (write_csv(c, model_id, csv, &rows) != 0) {
            log_error("%s", lvd_errmsg());
            rc = EXIT_FAIL;
            goto done;
        }
        if (strcmp(csv, "-") != 0)
            log_info("wrote %" PRId64 " removals to %s", rows, csv);
    }
    if (html) {
        audit_html_stats hs;
        if (audit_html_write(c, work, report, html, (uint32_t)thumb, &hs) != 0) {
            log_error("%s", lvd_errmsg());
            rc = EXIT_FAIL;
            goto done;
        }
        char more[96] = "";
        if (rmodel_id > 0)
            snprintf(more, sizeof more, ", %" PRId64 " seeds beside their nearest retrieved image, %" PRId64
                     " clusters", hs.retrieved_pairs, hs.clusters);
        log_info("wrote %s/index.html: %" PRId64 " pairs%s, %" PRId64 " thumbnails%s", html, hs.pairs, more, hs.thumbs,
                 hs.thumbs_failed ? " (some images without a thumbnail, see the warnings)" : "");
    }
    if (json) {
        char *text = cJSON_Print(report);
        if (!text) {
            log_error("out of memory printing the report");
            rc = EXIT_FAIL;
            goto done;
        }
        printf("%s\n", text);
        cJSON_free(text);
    } else if (!(csv && strcmp(csv, "-") == 0)) {
        print_text(stdout, report);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("writing to stdout: %s", strerror(errno));
        rc = EXIT_FAIL;
    }
done:
    cJSON_Delete(report);
    free(name);
    free(rname);
    free(bname);
    catalog_close(c);
    free(path);
    return rc;
}
