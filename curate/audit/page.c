/* page.c — the audit page: report sections, side-by-side pairs, inline SVG histograms, thumbnails. */
#include "page.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic_file.h"
#include "report.h"
#include "thumb.h"
#include "err.h"
#include "html.h"
#include "log.h"
#include "store.h"

#define PATH_CAP 4096
#define THUMB_QUALITY 85
#define THUMB_BYTES_MAX (64u << 20) /* a working image larger than this is not read for a thumbnail */

/* One image's thumbnail, written at most once per page. */
typedef struct thumb_entry {
    int64_t id;    /* images.id */
    char file[48]; /* "thumbs/0123456789abcdef.jpg", "" when none could be made */
    uint32_t w, h; /* pixels */
} thumb_entry;

typedef struct page {
    catalog *c;
    const char *work;
    const char *dir;
    uint32_t side;
    FILE *f;
    thumb_entry *thumbs;
    size_t nthumbs, cap;
    audit_html_stats *stats;
} page;

/* ---- files ---- */

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return lvd_fail_errno("cannot create %s", path);
    int bad = len && fwrite(data, 1, len, f) != len;
    if (fclose(f) != 0 || bad)
        return lvd_fail_errno("writing %s", path);
    return 0;
}

/* The encoded bytes of image id to show: its working image (decodes, status ok), else its original bytes.
 * *data is malloc'ed. */
static int image_bytes(page *p, int64_t id, uint8_t **data, size_t *len)
{
    *data = NULL;
    sqlite3_stmt *st = catalog_stmt(p->c, "SELECT shard_id, offset, size FROM decodes"
                                          " WHERE image_id = ?1 AND status = 'ok' AND shard_id IS NOT NULL"
                                          " UNION ALL"
                                          " SELECT shard_id, offset, bytes FROM images WHERE id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? lvd_fail("image %" PRId64 ": not in the catalog", id)
                                 : lvd_fail("%s: %s", catalog_path(p->c), sqlite3_errmsg(catalog_db(p->c)));
    }
    int64_t shard = sqlite3_column_int64(st, 0), off = sqlite3_column_int64(st, 1), n = sqlite3_column_int64(st, 2);
    sqlite3_reset(st);
    if (n <= 0 || n > THUMB_BYTES_MAX || off < 0)
        return lvd_fail("image %" PRId64 ": %" PRId64 " bytes at offset %" PRId64 " is not a usable image", id, n, off);
    if (!(*data = malloc((size_t)n)))
        return lvd_fail("image %" PRId64 ": out of memory", id);
    if (store_read(p->c, p->work, shard, (uint64_t)off, *data, (size_t)n) != 0) {
        free(*data);
        *data = NULL;
        return lvd_fail_ctx("image %" PRId64, id);
    }
    *len = (size_t)n;
    return 0;
}

/* The thumbnail entry of image obj ({id, sha256, ...}), making the file on first use. NULL only when out of
 * memory; an entry with file "" means no thumbnail (placeholder). */
static const thumb_entry *thumb_for(page *p, const cJSON *img)
{
    int64_t id = audit_int(img, "id");
    for (size_t i = 0; i < p->nthumbs; i++)
        if (p->thumbs[i].id == id)
            return &p->thumbs[i];
    if (p->nthumbs == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        thumb_entry *t = realloc(p->thumbs, cap * sizeof *t);
        if (!t)
            return NULL;
        p->thumbs = t;
        p->cap = cap;
    }
    thumb_entry *e = &p->thumbs[p->nthumbs++];
    *e = (thumb_entry){.id = id};
    const char *sha = audit_text(img, "sha256");
    uint8_t *data = NULL, *th = NULL;
    size_t len = 0, tlen = 0;
    const char *ext = NULL;
    char path[PATH_CAP + 64];
    if (!sha || strlen(sha) < 16 || strspn(sha, "0123456789abcdef") < 16) {
        log_warn("image %" PRId64 ": no SHA-256 in the catalog; shown without a thumbnail", id);
    } else if (image_bytes(p, id, &data, &len) != 0 ||
               audit_thumb(data, len, p->side, THUMB_QUALITY, &th, &tlen, &ext, &e->w, &e->h) != 0) {
        log_warn("image %" PRId64 " (%.16s): %s; shown without a thumbnail", id, sha, lvd_errmsg());
    } else {
        snprintf(e->file, sizeof e->file, "thumbs/%.16s.%s", sha, ext);
        snprintf(path, sizeof path, "%s/%s", p->dir, e->file);
        if (write_file(path, th, tlen) != 0) {
            log_warn("%s", lvd_errmsg());
            e->file[0] = '\0';
        } else {
            p->stats->thumbs++;
        }
    }
    if (!e->file[0])
        p->stats->thumbs_failed++;
    free(data);
    free(th);
    return e;
}

/* ---- page pieces ---- */

static void put_sim(FILE *f, double v)
{
    if (isnan(v))
        fputs("&#8211;", f);
    else
        fprintf(f, "%.4f", v);
}

/* <figure class="cls"> with the image's thumbnail (or a placeholder), its role, key and collection. */
static int put_figure(page *p, const cJSON *img, const char *cls, const char *role, const char *note)
{
    FILE *f = p->f;
    if (!cJSON_IsObject(img))
        return 0;
    const thumb_entry *t = thumb_for(p, img);
    if (!t)
        return lvd_fail("out of memory making thumbnails");
    fprintf(f, "<figure class=\"%s\">", cls);
    if (t->file[0]) {
        fprintf(f, "<img src=\"%s\" width=\"%u\" height=\"%u\" alt=\"", t->file, t->w, t->h);
        html_text(f, role);
        fputs(": ", f);
        html_text(f, audit_text(img, "key"));
        fputs("\">", f);
    } else {
        fputs("<div class=\"noimg\">no image</div>", f);
    }
    fputs("<figcaption><b>", f);
    html_text(f, role);
    fputs("</b> <span class=\"key\">", f);
    html_text(f, audit_text(img, "key"));
    fputs("</span><br><span class=\"col\">", f);
    html_text(f, audit_text(img, "collection"));
    fputs("</span>", f);
    if (note) {
        fputs("<br><span class=\"note\">", f);
        html_text(f, note);
        fputs("</span>", f);
    }
    fputs("</figcaption></figure>", f);
    return 0;
}

static void put_hist(FILE *f, const cJSON *h, const char *title, double threshold, const char *label)
{
    const cJSON *e = audit_get(h, "edges"), *k = audit_get(h, "counts");
    int32_t n = cJSON_GetArraySize(k);
    if (n < 1 || cJSON_GetArraySize(e) != n + 1)
        return;
    double edges[128];
    int64_t counts[128];
    if (n > 127)
        return;
    for (int32_t i = 0; i <= n; i++)
        edges[i] = cJSON_GetArrayItem(e, i)->valuedouble;
    for (int32_t i = 0; i < n; i++)
        counts[i] = (int64_t)cJSON_GetArrayItem(k, i)->valuedouble;
    html_hist hh = {.title = title, .x_label = "cosine similarity", .nbins = n, .edges = edges, .counts = counts,
                    .marker = threshold, .marker_label = label, .width = 640, .height = 200};
    if (html_histogram_svg(f, &hh) != 0)
        log_warn("histogram '%s' not drawn: %s", title, lvd_errmsg());
}

/* The nearest-neighbour distribution of a section (report key "nearest"): its histogram over every searched
 * pool image with the threshold line, and the "flagged at" table, in <div class="nearest">. */
static void put_nearest(FILE *f, const cJSON *nr, double t, const char *title, const char *what)
{
    if (!cJSON_IsObject(nr))
        return;
    fprintf(f, "<div class=\"nearest\" data-images=\"%" PRId64 "\">\n", audit_int(nr, "images"));
    char label[64];
    snprintf(label, sizeof label, "threshold %.4g", t);
    if (audit_int(nr, "images") > 0)
        put_hist(f, audit_get(nr, "histogram"), title, t, label);
    fputs("<table class=\"flagged\"><caption>", f);
    html_text(f, what);
    fputs("</caption><tr><th>threshold</th><th>pool images</th></tr>\n", f);
    const cJSON *o;
    cJSON_ArrayForEach(o, audit_get(nr, "flagged"))
    {
        int used = cJSON_IsTrue(audit_get(o, "used"));
        fprintf(f, "<tr%s><td>&gt; %.4g%s</td><td class=\"n\">%" PRId64 "</td></tr>\n", used ? " class=\"used\"" : "",
                audit_num(o, "threshold"), used ? " (used)" : "", audit_int(o, "images"));
    }
    fputs("</table>\n</div>\n", f);
}

/* The pairs of one list: removed image | reference image (and the image that caused the removal when it is
 * a third one). self: the reference is the other end of the removing edge. */
static int put_pairs(page *p, const cJSON *list, int self, int64_t *count)
{
    FILE *f = p->f;
    const cJSON *pr;
    *count = 0;
    cJSON_ArrayForEach(pr, list)
    {
        double sim = audit_num(pr, "sim");
        fputs("<div class=\"pair\" data-sim=\"", f);
        if (!isnan(sim))
            fprintf(f, "%.6f", sim);
        fprintf(f, "\" data-rank=\"%" PRId64 "\">", audit_int(pr, "rank"));
        if (put_figure(p, audit_get(pr, "image"), "removed", self ? "removed duplicate" : "removed", NULL) != 0)
            return -1;
        fputs("<div class=\"sim\">", f);
        put_sim(f, sim);
        fprintf(f, "<br><small>#%" PRId64 "</small>", audit_int(pr, "rank"));
        if (self && audit_text(pr, "kind") && strcmp(audit_text(pr, "kind"), "knn") != 0) {
            fputs("<br><small>", f);
            html_text(f, audit_text(pr, "kind"));
            fputs("</small>", f);
        }
        fputs("</div>", f);
        if (self) {
            const cJSON *ref = audit_get(pr, "ref"), *kept = audit_get(pr, "kept");
            int same = cJSON_IsObject(ref) && cJSON_IsObject(kept) && audit_int(ref, "id") == audit_int(kept, "id");
            char note[96];
            snprintf(note, sizeof note, "direct similarity to the kept image %.4f", audit_num(pr, "kept_sim"));
            if (put_figure(p, ref, "ref", same ? "kept" : "linked to", same ? NULL : note) != 0)
                return -1;
            if (!same && put_figure(p, kept, "kept", "kept", NULL) != 0)
                return -1;
        } else {
            if (put_figure(p, audit_get(pr, "ref"), "ref", "benchmark", NULL) != 0)
                return -1;
            if (cJSON_IsObject(audit_get(pr, "via")) &&
                put_figure(p, audit_get(pr, "via"), "via", "matched via", "its match removed the whole component") != 0)
                return -1;
        }
        fputs("</div>\n", f);
        (*count)++;
    }
    p->stats->pairs += *count;
    return 0;
}

static int put_pair_lists(page *p, const cJSON *s, int self, int64_t removed)
{
    FILE *f = p->f;
    int64_t n_top, n_low;
    fputs("<h3>Highest similarity</h3>\n<div class=\"pairs top\">\n", f);
    if (put_pairs(p, audit_get(s, "top_pairs"), self, &n_top) != 0)
        return -1;
    fputs("</div>\n", f);
    if (cJSON_GetArraySize(audit_get(s, "threshold_pairs")) > 0) {
        fputs("<h3>Nearest the threshold</h3>\n<div class=\"pairs low\">\n", f);
        if (put_pairs(p, audit_get(s, "threshold_pairs"), self, &n_low) != 0)
            return -1;
        fputs("</div>\n", f);
    } else {
        n_low = 0;
    }
    fprintf(f, "<p class=\"shown\" data-pairs=\"%" PRId64 "\" data-removed=\"%" PRId64 "\"></p>\n", n_top + n_low,
            removed);
    return 0;
}

static int put_benchmark(page *p, const cJSON *b, int idx, const cJSON *params)
{
    FILE *f = p->f;
    double t = audit_num(b, "threshold");
    int64_t removed = audit_int(b, "removed");
    fprintf(f, "<section class=\"benchmark\" id=\"benchmark-%d\" data-removed=\"%" PRId64 "\">\n<h2>Benchmark ",
            idx, removed);
    html_text(f, audit_text(b, "name"));
    fputs("</h2>\n<p class=\"facts\">", f);
    fprintf(f, "%" PRId64 " pool images removed (threshold: cosine &gt; %.4g, rule <b>", removed, t);
    html_text(f, audit_text(params, "benchmark_rule"));
    fprintf(f, "</b>): %" PRId64 " matched a benchmark image themselves, %" PRId64
               " went with their component. %" PRId64 " pairs above the threshold join %" PRId64
               " pool images to %" PRId64 " of the benchmark's %" PRId64 " images (%" PRId64 " embedded).</p>\n",
            audit_int(b, "removed_direct"), audit_int(b, "removed_component"), audit_int(b, "matches"),
            audit_int(b, "matched_pool_images"), audit_int(b, "matched_benchmark_images"), audit_int(b, "images"),
            audit_int(b, "embedded"));
    fputs("<div class=\"charts\"><table class=\"bands\"><tr><th>similarity</th><th>removed</th></tr>\n", f);
    const cJSON *band;
    cJSON_ArrayForEach(band, audit_get(b, "bands"))
    {
        fprintf(f, "<tr><td>%.4g&#8211;%.4g</td><td class=\"n\">%" PRId64 "</td></tr>\n", audit_num(band, "lo"),
                audit_num(band, "hi"), audit_int(band, "removed"));
    }
    fputs("</table>\n", f);
    char label[64];
    snprintf(label, sizeof label, "threshold %.4g", t);
    put_hist(f, audit_get(b, "histogram"), "similarity that removed each pool image", t, label);
    put_nearest(f, audit_get(b, "nearest"), t, "nearest benchmark image of every searched pool image",
                "pool images whose nearest benchmark image is above");
    fputs("</div>\n", f);
    if (put_pair_lists(p, b, 0, removed) != 0)
        return -1;
    fputs("</section>\n", f);
    return 0;
}

static void put_component_table(page *p, const cJSON *list, const char *caption)
{
    FILE *f = p->f;
    fputs("<table class=\"components\"><caption>", f);
    html_text(f, caption);
    fputs("</caption><tr><th>component</th><th>size</th><th>kept</th><th>duplicates</th><th>benchmark</th>"
          "<th>weakest link</th><th>strongest</th></tr>\n",
          f);
    const cJSON *o;
    cJSON_ArrayForEach(o, list)
    {
        fprintf(f, "<tr><td class=\"n\">%" PRId64 "</td><td class=\"n\">%" PRId64 "</td><td>",
                audit_int(o, "component"), audit_int(o, "size"));
        html_text(f, cJSON_IsObject(audit_get(o, "kept")) ? audit_text(audit_get(o, "kept"), "key") : "(none)");
        fprintf(f, "</td><td class=\"n\">%" PRId64 "</td><td class=\"n\">%" PRId64 "</td><td class=\"n\">",
                audit_int(o, "removed_duplicate"), audit_int(o, "removed_benchmark"));
        put_sim(f, audit_num(o, "weakest_sim"));
        fputs("</td><td class=\"n\">", f);
        put_sim(f, audit_num(o, "strongest_sim"));
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
}

static int put_self(page *p, const cJSON *s)
{
    FILE *f = p->f;
    double t = audit_num(s, "threshold");
    int64_t removed = audit_int(s, "removed");
    fprintf(f, "<section class=\"self\" id=\"self\" data-removed=\"%" PRId64 "\">\n<h2>Self-dedup</h2>\n", removed);
    fprintf(f, "<p class=\"facts\">%" PRId64 " pool images in %" PRId64 " components, %" PRId64
               " with more than one image (largest: %" PRId64 "). %" PRId64 " duplicates removed (an edge needs "
               "cosine &gt; %.4g); %" PRId64 " of them are at or below the threshold from the image kept: "
               "they were removed only through chaining.</p>\n",
            audit_int(s, "images"), audit_int(s, "components"), audit_int(s, "multi_components"),
            audit_int(s, "largest_size"), removed, t, audit_int(s, "chained"));
    fputs("<div class=\"charts\"><table class=\"sizes\"><tr><th>component size</th><th>components</th>"
          "<th>images</th><th></th></tr>\n",
          f);
    int64_t most = 1;
    const cJSON *o;
    cJSON_ArrayForEach(o, audit_get(s, "sizes"))
    {
        if (audit_int(o, "components") > most)
            most = audit_int(o, "components");
    }
    cJSON_ArrayForEach(o, audit_get(s, "sizes"))
    {
        int64_t lo = audit_int(o, "min"), hi = audit_int(o, "max"), n = audit_int(o, "components");
        if (lo == hi)
            fprintf(f, "<tr><td>%" PRId64 "</td>", lo);
        else
            fprintf(f, "<tr><td>%" PRId64 "&#8211;%" PRId64 "</td>", lo, hi);
        /* Bar length on a log scale, so singletons do not flatten every other bucket. */
        double w = n > 0 ? 4.0 + 156.0 * log1p((double)n) / log1p((double)most) : 0.0;
        fprintf(f, "<td class=\"n\">%" PRId64 "</td><td class=\"n\">%" PRId64 "</td>"
                   "<td><span class=\"sizebar\" style=\"width:%.0fpx\"></span></td></tr>\n",
                n, audit_int(o, "images"), w);
    }
    fputs("</table>\n", f);
    char label[64];
    snprintf(label, sizeof label, "threshold %.4g", t);
    put_hist(f, audit_get(s, "histogram"), "the edge that removed each duplicate", t, label);
    put_hist(f, audit_get(s, "kept_histogram"), "direct similarity of each duplicate to the image kept", t, label);
    put_nearest(f, audit_get(s, "nearest"), t, "nearest other pool image of every searched pool image",
                "pool images whose nearest other pool image is above");
    fputs("</div>\n", f);

    /* Weakest links: the two ends of each component's weakest spanning edge. */
    fputs("<h3>Components with the weakest links</h3>\n<p class=\"hint\">The weakest edge that still holds each "
          "component together: below it the component would split. Chained components join images that do not "
          "look alike.</p>\n<div class=\"pairs weak\">\n",
          f);
    int64_t weak = 0;
    cJSON_ArrayForEach(o, audit_get(s, "weakest"))
    {
        double sim = audit_num(o, "weakest_sim");
        fprintf(f, "<div class=\"pair\" data-sim=\"%.6f\" data-component=\"%" PRId64 "\">", sim,
                audit_int(o, "component"));
        if (put_figure(p, audit_get(o, "weakest_a"), "a", "linked", NULL) != 0)
            return -1;
        fputs("<div class=\"sim\">", f);
        put_sim(f, sim);
        fprintf(f, "<br><small>component of %" PRId64 "</small>", audit_int(o, "size"));
        if (audit_text(o, "weakest_kind") && strcmp(audit_text(o, "weakest_kind"), "knn") != 0) {
            fputs("<br><small>", f);
            html_text(f, audit_text(o, "weakest_kind"));
            fputs("</small>", f);
        }
        fputs("</div>", f);
        if (put_figure(p, audit_get(o, "weakest_b"), "b", "linked", NULL) != 0)
            return -1;
        const cJSON *kept = audit_get(o, "kept");
        if (cJSON_IsObject(kept) && audit_int(kept, "id") != audit_int(audit_get(o, "weakest_a"), "id") &&
            audit_int(kept, "id") != audit_int(audit_get(o, "weakest_b"), "id") &&
            put_figure(p, kept, "kept", "kept", NULL) != 0)
            return -1;
        fputs("</div>\n", f);
        weak++;
    }
    p->stats->pairs += weak;
    fputs("</div>\n", f);
    put_component_table(p, audit_get(s, "largest"), "Largest components");
    fputs("<h3>Removed duplicates</h3>\n<p class=\"hint\">Each removed image beside the image its strongest edge "
          "joins (the edge that removed it), with the kept image when that is another one.</p>\n",
          f);
    if (put_pair_lists(p, s, 1, removed) != 0)
        return -1;
    fputs("</section>\n", f);
    return 0;
}

/* ---- retrieval ---- */

/* A count of the report in a table cell; a dash when null or absent. */
static void put_count_cell(FILE *f, const cJSON *o, const char *key)
{
    const cJSON *v = audit_get(o, key);
    if (cJSON_IsNumber(v))
        fprintf(f, "<td class=\"n\">%" PRId64 "</td>", (int64_t)v->valuedouble);
    else
        fputs("<td class=\"n\">&#8211;</td>", f);
}

/* The row's parameters as the table shows them. */
static void put_row_params(FILE *f, const cJSON *o)
{
    const char *m = audit_text(o, "method");
    if (m && strcmp(m, "sample") == 0 && cJSON_IsNumber(audit_get(o, "k")))
        fprintf(f, "k %" PRId64, audit_int(o, "k"));
    else if (m && strcmp(m, "cluster") == 0 && cJSON_IsNumber(audit_get(o, "clusters")))
        fprintf(f, "%" PRId64 " clusters, %" PRId64 " per cluster, cap %" PRId64 ", more than %" PRId64 " seeds",
                audit_int(o, "clusters"), audit_int(o, "per_cluster"), audit_int(o, "cap"), audit_int(o, "min_seeds"));
}

/* Sample rows: each listed seed beside its nearest retrieved image. */
static int put_seed_pairs(page *p, const cJSON *o)
{
    FILE *f = p->f;
    const cJSON *pr;
    int64_t n = 0;
    fputs("<h4>Seeds beside their nearest retrieved image</h4>\n<div class=\"pairs retrieved\">\n", f);
    cJSON_ArrayForEach(pr, audit_get(o, "top_pairs"))
    {
        double sim = audit_num(pr, "sim");
        fputs("<div class=\"pair retrieved-pair\" data-sim=\"", f);
        if (!isnan(sim))
            fprintf(f, "%.6f", sim);
        fprintf(f, "\" data-rank=\"%" PRId64 "\">", audit_int(pr, "rank"));
        if (put_figure(p, audit_get(pr, "seed"), "seed", "seed", NULL) != 0)
            return -1;
        fputs("<div class=\"sim\">", f);
        put_sim(f, sim);
        fprintf(f, "<br><small>#%" PRId64 "</small></div>", audit_int(pr, "rank"));
        char note[96];
        int64_t others = audit_int(pr, "collisions");
        snprintf(note, sizeof note, "also found by %" PRId64 " other seed%s", others, others == 1 ? "" : "s");
        if (put_figure(p, audit_get(pr, "image"), "retrieved", "nearest retrieved", others > 0 ? note : NULL) != 0)
            return -1;
        fputs("</div>\n", f);
        n++;
    }
    fprintf(f, "</div>\n<p class=\"shown\" data-pairs=\"%" PRId64 "\">Showing %" PRId64 " of %" PRId64
               " seeds, the most similar pairs first.</p>\n",
            n, n, audit_int(o, "seeds_with_hits"));
    p->stats->retrieved_pairs += n;
    return 0;
}

/* Cluster rows: each listed chosen cluster with its images nearest the centroid. */
static int put_chosen_clusters(page *p, const cJSON *o)
{
    FILE *f = p->f;
    const cJSON *cl, *im;
    int64_t n = 0;
    fputs("<h4>Chosen clusters, most seeds first</h4>\n<div class=\"clusters\">\n", f);
    cJSON_ArrayForEach(cl, audit_get(o, "chosen_clusters"))
    {
        fprintf(f, "<div class=\"cluster\" data-cluster=\"%" PRId64 "\" data-seeds=\"%" PRId64 "\" data-size=\"%" PRId64
                   "\" data-taken=\"%" PRId64 "\" data-kept=\"%" PRId64 "\"><p class=\"cluster-facts\">cluster %" PRId64
                   ": <b>%" PRId64 " seeds</b>, %" PRId64 " pool images, %" PRId64 " taken, %" PRId64 " kept</p>"
                   "<div class=\"members\">",
                audit_int(cl, "cluster"), audit_int(cl, "seeds"), audit_int(cl, "size"), audit_int(cl, "taken"),
                audit_int(cl, "kept"), audit_int(cl, "cluster"), audit_int(cl, "seeds"), audit_int(cl, "size"),
                audit_int(cl, "taken"), audit_int(cl, "kept"));
        cJSON_ArrayForEach(im, audit_get(cl, "images"))
        {
            char role[48], note[64];
            snprintf(role, sizeof role, "#%" PRId64, audit_int(im, "rank") + 1);
            snprintf(note, sizeof note, "%.4f to the centroid", audit_num(im, "sim"));
            if (put_figure(p, audit_get(im, "image"), "member", role, note) != 0)
                return -1;
        }
        fputs("</div></div>\n", f);
        n++;
    }
    fprintf(f, "</div>\n<p class=\"shown\" data-clusters=\"%" PRId64 "\">Showing %" PRId64 " of %" PRId64
               " chosen clusters (%" PRId64 " clusters hold seeds of the row).</p>\n",
            n, n, audit_int(o, "chosen"), audit_int(o, "clusters_with_seeds"));
    p->stats->clusters += n;
    return 0;
}

/* <section class="retrieval"> (page.h) from the report's retrieval object. */
static int put_retrieval(page *p, const cJSON *rt)
{
    FILE *f = p->f;
    const cJSON *run = audit_get(rt, "run"), *tot = audit_get(rt, "totals"), *rows = audit_get(rt, "rows"), *o;
    fprintf(f, "<section class=\"retrieval\" id=\"retrieval\" data-rows=\"%d\">\n<h2>Retrieval: model ",
            cJSON_GetArraySize(rows));
    html_text(f, audit_text(rt, "model"));
    fprintf(f, "</h2>\n<p class=\"facts\">%" PRId64 " lvd-retrieve run%s", audit_int(rt, "runs"),
            audit_int(rt, "runs") == 1 ? "" : "s");
    if (cJSON_IsObject(run)) {
        fputs(", the last ", f);
        html_text(f, audit_text(run, "created_at"));
        fprintf(f, ": a pool of %" PRId64 " images at generation %" PRId64 ", ", audit_int(run, "pool_size"),
                audit_int(run, "pool_gen"));
        if (audit_text(run, "dedup_model")) {
            fputs("kept by dedup model <b>", f);
            html_text(f, audit_text(run, "dedup_model"));
            fputs("</b>", f);
        } else {
            fputs("not deduplicated (--no-dedup)", f);
        }
        fputs("; registry <code>", f);
        html_text(f, audit_text(run, "registry_path"));
        fputs("</code> (sha256 <code>", f);
        html_text(f, audit_text(run, "registry_sha256"));
        fputs("</code>), scale ", f);
        html_text(f, audit_text(run, "scale"));
    }
    fputs(".</p>\n<table class=\"retrieval-rows\"><thead><tr><th>row</th><th>method</th><th>collection</th>"
          "<th>status</th><th>parameters</th><th>seeds</th><th>paper seeds</th><th>retrieved</th><th>collisions</th>"
          "<th>unique</th><th>capped</th><th>final</th><th>paper final</th></tr></thead>\n<tbody>\n",
          f);
    cJSON_ArrayForEach(o, rows)
    {
        const char *st = audit_text(o, "status");
        int skipped = st && strcmp(st, "skipped") == 0;
        int detail = cJSON_IsObject(audit_get(o, "histogram")) || audit_get(o, "top_pairs") ||
                     audit_get(o, "chosen_clusters");
        fputs("<tr data-row=\"", f);
        html_text(f, audit_text(o, "name"));
        fputs("\" data-method=\"", f);
        html_text(f, audit_text(o, "method"));
        fputs("\" data-status=\"", f);
        html_text(f, st);
        fputs("\"><td>", f);
        if (detail)
            fprintf(f, "<a href=\"#retrieval-row-%" PRId64 "\">", audit_int(o, "id"));
        html_text(f, audit_text(o, "name"));
        fputs(detail ? "</a></td><td>" : "</td><td>", f);
        html_text(f, audit_text(o, "method"));
        fputs("</td><td>", f);
        html_text(f, audit_text(o, "collection"));
        fputs(skipped ? "</td><td class=\"skipped\">skipped: " : "</td><td>", f);
        html_text(f, skipped ? audit_text(o, "reason") : st);
        fputs("</td><td>", f);
        put_row_params(f, o);
        fputs("</td>", f);
        static const char *const counts[] = {"seeds", "paper_seeds", "retrieved", "collisions", "unique",
                                             "capped", "final", "paper_final"};
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
            put_count_cell(f, o, counts[i]);
        fputs("</tr>\n", f);
    }
    const cJSON *bm = audit_get(tot, "final_by_method");
    fputs("</tbody>\n<tfoot><tr><th colspan=\"11\">total</th>", f);
    put_count_cell(f, tot, "final");
    put_count_cell(f, tot, "paper_final");
    fprintf(f, "</tr></tfoot></table>\n<p class=\"facts\">Final images by method: as is %" PRId64 ", sample %" PRId64
               ", cluster %" PRId64 "; %" PRId64 " distinct images over all rows. The paper's counts are for a "
               "pool of 744M images.</p>\n",
            audit_int(bm, "as_is"), audit_int(bm, "sample"), audit_int(bm, "cluster"),
            audit_int(tot, "distinct_images"));
    cJSON_ArrayForEach(o, rows)
    {
        const char *m = audit_text(o, "method");
        int sample = m && strcmp(m, "sample") == 0, cluster = m && strcmp(m, "cluster") == 0;
        const cJSON *h = audit_get(o, "histogram");
        if (!cJSON_IsObject(h) && !audit_get(o, "top_pairs") && !audit_get(o, "chosen_clusters"))
            continue;
        fprintf(f, "<div class=\"rrow\" id=\"retrieval-row-%" PRId64 "\" data-row=\"", audit_int(o, "id"));
        html_text(f, audit_text(o, "name"));
        fputs("\" data-method=\"", f);
        html_text(f, m);
        fputs("\">\n<h3>", f);
        html_text(f, audit_text(o, "name"));
        fputs(" <small>(", f);
        html_text(f, m);
        fputs(", ", f);
        put_row_params(f, o);
        fprintf(f, "; %" PRId64 " selected)</small></h3>\n", audit_int(o, "final"));
        if (cJSON_IsObject(h)) {
            fputs("<div class=\"charts\">", f);
            put_hist(f, h, sample ? "similarity of each selected image to its seed"
                                  : "similarity of each selected image to its cluster's centroid",
                     NAN, NULL);
            fputs("</div>\n", f);
        }
        if (sample && put_seed_pairs(p, o) != 0)
            return -1;
        if (cluster && put_chosen_clusters(p, o) != 0)
            return -1;
        fputs("</div>\n", f);
    }
    fputs("</section>\n", f);
    return 0;
}

/* ---- balance ---- */

/* One <td> per quantile of q. */
static void put_quantile_cells(FILE *f, const cJSON *q)
{
    static const char *const keys[] = {"min", "p10", "p25", "median", "p75", "p90", "max"};
    for (int i = 0; i < 7; i++)
        fprintf(f, "<td class=\"n\">%" PRId64 "</td>", audit_int(q, keys[i]));
}

/* The listed top-level clusters (largest or smallest) with their sampled images. */
static int put_balance_clusters(page *p, const cJSON *list, const char *what)
{
    FILE *f = p->f;
    const cJSON *cl, *im;
    fprintf(f, "<h3>The %s top-level clusters</h3>\n<div class=\"clusters\">\n", what);
    cJSON_ArrayForEach(cl, list)
    {
        fprintf(f, "<div class=\"cluster balance-cluster\" data-kind=\"%s\" data-cluster=\"%" PRId64 "\" data-size=\"%"
                   PRId64 "\" data-quota=\"%" PRId64 "\"><p class=\"cluster-facts\">cluster %" PRId64 ": <b>%" PRId64
                   " points</b>, %" PRId64 " in the sample</p><div class=\"members\">",
                what, audit_int(cl, "cluster"), audit_int(cl, "size"), audit_int(cl, "quota"), audit_int(cl, "cluster"),
                audit_int(cl, "size"), audit_int(cl, "quota"));
        cJSON_ArrayForEach(im, audit_get(cl, "images"))
        {
            char note[48];
            snprintf(note, sizeof note, "%" PRId64 " cop%s", audit_int(im, "copies"),
                     audit_int(im, "copies") == 1 ? "y" : "ies");
            if (put_figure(p, audit_get(im, "image"), "member", "sampled", note) != 0)
                return -1;
        }
        fputs("</div></div>\n", f);
        p->stats->clusters++;
    }
    fputs("</div>\n", f);
    return 0;
}

/* <section class="balance" id="balance"> from the report's balance object (breport.h): the tree and the
 * sample, a table class="balance-levels" with one <tr data-level="L"> per level holding the quantiles of the
 * clusters' sizes before and after sampling, then the largest and smallest top-level clusters
 * (<div class="cluster balance-cluster" data-kind="largest|smallest">) with their sampled images. */
static int put_balance(page *p, const cJSON *b)
{
    FILE *f = p->f;
    const cJSON *tr = audit_get(b, "tree"), *sm = audit_get(b, "sample"), *l;
    fputs("<section class=\"balance\" id=\"balance\">\n<h2>Balance: model ", f);
    html_text(f, audit_text(b, "model"));
    fprintf(f, "</h2>\n<p class=\"facts\">Tree %" PRId64 " of %" PRId64 " levels over the ", audit_int(tr, "id"),
            audit_int(tr, "n_levels"));
    html_text(f, audit_text(tr, "source"));
    fputs(" pool (config <code>", f);
    html_text(f, audit_text(tr, "config_path"));
    fprintf(f, "</code>), built on %" PRId64 " images, %" PRId64 " now. Sample %" PRId64 ": <b>%" PRId64
               "</b> of target %" PRId64 ", %" PRId64 " distinct images, at most %" PRId64 " copies each.</p>\n",
            audit_int(tr, "built_points"), audit_int(tr, "points"), audit_int(sm, "id"), audit_int(sm, "total"),
            audit_int(sm, "target"), audit_int(sm, "distinct"), audit_int(sm, "multiplier"));
    fputs("<table class=\"balance-levels\"><thead><tr><th rowspan=\"2\">level</th><th rowspan=\"2\">k</th>"
          "<th rowspan=\"2\">clusters with points</th><th colspan=\"7\">points per cluster (before sampling)</th>"
          "<th colspan=\"7\">sampled per cluster (after)</th></tr><tr>", f);
    for (int i = 0; i < 2; i++)
        fputs("<th>min</th><th>p10</th><th>p25</th><th>median</th><th>p75</th><th>p90</th><th>max</th>", f);
    fputs("</tr></thead>\n<tbody>\n", f);
    cJSON_ArrayForEach(l, audit_get(b, "levels"))
    {
        fprintf(f, "<tr data-level=\"%" PRId64 "\"><td>%" PRId64 "</td><td class=\"n\">%" PRId64 "</td><td class=\"n\">%"
                   PRId64 "</td>", audit_int(l, "level"), audit_int(l, "level"), audit_int(l, "k"),
                audit_int(l, "clusters"));
        put_quantile_cells(f, audit_get(l, "before"));
        put_quantile_cells(f, audit_get(l, "after"));
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
    if (put_balance_clusters(p, audit_get(b, "largest"), "largest") != 0 ||
        put_balance_clusters(p, audit_get(b, "smallest"), "smallest") != 0)
        return -1;
    fputs("</section>\n", f);
    return 0;
}

/* Added to the page's style only when it has a retrieval section (a dedup-only page stays as it was). */
static const char RETRIEVAL_CSS[] =
    "td.skipped{color:#a33}.rrow{margin-top:1.5em}.rrow h3 small{font-weight:normal;color:#555}"
    ".clusters{display:flex;flex-direction:column;gap:.4em}"
    ".cluster{background:#fff;border:1px solid #ddd;padding:.4em}.cluster-facts{margin:0 0 .3em 0}"
    ".cluster .members{display:flex;flex-wrap:wrap;gap:.8em}"
    ".cluster figure{margin:0;width:200px}.cluster img{display:block;max-width:192px;height:auto;background:#eee}"
    ".cluster .note{color:#555}";

static const char CSS[] =
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}"
    "h1{font-size:1.5em}h2{border-bottom:2px solid #4a7fb5;padding-bottom:.2em;margin-top:2em}"
    "table{border-collapse:collapse;margin:.5em 1em .5em 0;font-size:.9em}"
    "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}td.n{text-align:right}"
    "caption{font-weight:bold;text-align:left}"
    ".charts{display:flex;flex-wrap:wrap;align-items:flex-start;gap:1em}"
    ".pairs{display:flex;flex-direction:column;gap:.4em}"
    ".pair{display:flex;align-items:center;gap:.8em;background:#fff;border:1px solid #ddd;padding:.4em}"
    ".pair figure{margin:0;width:200px}.pair img{display:block;max-width:192px;height:auto;background:#eee}"
    ".pair figure.via,.pair figure.kept{opacity:.85}"
    ".pair figure.big{width:auto}.pair figure.big img{max-width:none;width:384px}"
    "figcaption{font-size:.8em;overflow-wrap:anywhere}.note{color:#a33}"
    ".sim{font-size:1.3em;font-weight:bold;min-width:5em;text-align:center}"
    ".noimg{width:120px;height:90px;background:#ddd;display:flex;align-items:center;justify-content:center}"
    ".sizebar{display:inline-block;height:.8em;background:#4a7fb5}.hint{color:#555;font-size:.9em}"
    ".shown{color:#555;font-style:italic}tr.used{font-weight:bold}";

/* Counts the pairs each section shows once the page has loaded, and enlarges a thumbnail on click. */
static const char SCRIPT[] =
    "(function(){\n"
    "document.querySelectorAll('section[data-removed]').forEach(function(s){\n"
    "  var n=s.querySelectorAll('.pairs.top .pair, .pairs.low .pair').length;\n"
    "  var p=s.querySelector('p.shown');\n"
    "  if(p)p.textContent='Showing '+n+' of '+s.getAttribute('data-removed')+' removals, sorted by similarity.';\n"
    "});\n"
    "document.addEventListener('click',function(e){\n"
    "  var f=e.target.closest?e.target.closest('.pair figure'):null; if(f)f.classList.toggle('big');\n"
    "});\n"
    "document.body.setAttribute('data-ready','1');\n"
    "})();\n";

/* The head of the page and the dedup summary (or, without dedup results, a line saying so), up to the
 * navigation's list items of the dedup sections. */
static void put_header(page *p, const cJSON *r)
{
    FILE *f = p->f;
    const cJSON *params = audit_get(r, "params"), *pool = audit_get(r, "pool"), *rt = audit_get(r, "retrieval");
    int dedup = audit_text(r, "model") != NULL;
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>lvd-audit: ", f);
    if (dedup) {
        html_text(f, audit_text(r, "model"));
    } else {
        fputs("retrieval ", f);
        html_text(f, audit_text(rt, "model"));
    }
    fprintf(f, "</title>\n<style>%s</style>\n", CSS);
    if (cJSON_IsObject(rt) || cJSON_IsObject(audit_get(r, "balance")))
        fprintf(f, "<style>%s</style>\n", RETRIEVAL_CSS);
    if (!dedup) {
        fputs("</head>\n<body>\n<h1>What retrieval selected: model ", f);
        html_text(f, audit_text(rt, "model"));
        fputs("</h1>\n<table class=\"summary\">\n<tr><th>catalog</th><td>", f);
        html_text(f, audit_text(r, "catalog"));
        fputs("</td></tr>\n<tr><th>dedup</th><td>no dedup results in this catalog</td></tr>\n</table>\n"
              "<p class=\"hint\">Click a thumbnail of a pair to enlarge it.</p>\n<nav><ul>\n",
              f);
        return;
    }
    fputs("</head>\n<body>\n<h1>What dedup removed: model ", f);
    html_text(f, audit_text(r, "model"));
    fputs("</h1>\n<table class=\"summary\">\n<tr><th>catalog</th><td>", f);
    html_text(f, audit_text(r, "catalog"));
    fprintf(f, "</td></tr>\n<tr><th>dedup runs</th><td>%" PRId64 ", last ", audit_int(r, "dedup_runs"));
    html_text(f, audit_text(r, "last_run"));
    fprintf(f, "</td></tr>\n<tr><th>parameters</th><td>k %" PRId64 ", self threshold %.4g, benchmark threshold %.4g "
               "(rule ",
            audit_int(params, "k"), audit_num(params, "threshold"), audit_num(params, "benchmark_threshold"));
    html_text(f, audit_text(params, "benchmark_rule"));
    fputs("), keep ", f);
    html_text(f, audit_text(params, "keep_rule"));
    if (cJSON_IsNumber(audit_get(params, "phash_distance")))
        fprintf(f, ", pHash distance &lt;= %" PRId64, audit_int(params, "phash_distance"));
    fputs("</td></tr>\n<tr><th>index</th><td>", f);
    html_text(f, audit_text(params, "index"));
    fprintf(f, "</td></tr>\n<tr><th>pool</th><td>%" PRId64 " decided: %" PRId64 " kept, %" PRId64
               " duplicates removed, %" PRId64 " removed for benchmarks; %" PRId64 " not decided yet</td></tr>\n",
            audit_int(pool, "decided"), audit_int(pool, "kept"), audit_int(pool, "duplicate"),
            audit_int(pool, "benchmark"), audit_int(pool, "undecided"));
    fputs("</table>\n<p class=\"hint\">Pairs are sorted by similarity: first the highest, then those nearest the "
          "threshold. Only pairs above the thresholds are recorded, so the histograms of removals start at the "
          "threshold line; the nearest-neighbour histograms hold every searched pool image, and their tables count "
          "the images other thresholds would flag. Click a thumbnail to enlarge it.</p>\n<nav><ul>\n",
          f);
    const cJSON *b;
    int idx = 0;
    cJSON_ArrayForEach(b, audit_get(r, "benchmarks"))
    {
        fprintf(f, "<li><a href=\"#benchmark-%d\">", idx++);
        html_text(f, audit_text(b, "name"));
        fprintf(f, "</a>: %" PRId64 " removed</li>\n", audit_int(b, "removed"));
    }
    fprintf(f, "<li><a href=\"#self\">self-dedup</a>: %" PRId64 " removed</li>\n",
            audit_int(audit_get(r, "self"), "removed"));
}

static int put_page(page *p, const cJSON *r)
{
    FILE *f = p->f;
    const cJSON *params = audit_get(r, "params"), *rt = audit_get(r, "retrieval");
    put_header(p, r);
    if (cJSON_IsObject(rt)) {
        const cJSON *tot = audit_get(rt, "totals");
        fprintf(f, "<li><a href=\"#retrieval\">retrieval</a>: %" PRId64 " rows, %" PRId64 " images selected (%" PRId64
                   " distinct)</li>\n",
                audit_int(tot, "rows"), audit_int(tot, "final"), audit_int(tot, "distinct_images"));
    }
    const cJSON *bal = audit_get(r, "balance");
    if (cJSON_IsObject(bal))
        fprintf(f, "<li><a href=\"#balance\">balance</a>: a sample of %" PRId64 " (%" PRId64 " distinct images)</li>\n",
                audit_int(audit_get(bal, "sample"), "total"), audit_int(audit_get(bal, "sample"), "distinct"));
    fputs("</ul></nav>\n", f);
    if (audit_text(r, "model")) {
        const cJSON *b;
        int idx = 0;
        cJSON_ArrayForEach(b, audit_get(r, "benchmarks"))
        {
            if (put_benchmark(p, b, idx++, params) != 0)
                return -1;
        }
        if (put_self(p, audit_get(r, "self")) != 0)
            return -1;
    }
    if (cJSON_IsObject(rt) && put_retrieval(p, rt) != 0)
        return -1;
    if (cJSON_IsObject(bal) && put_balance(p, bal) != 0)
        return -1;
    fprintf(f, "<script>\n%s</script>\n</body>\n</html>\n", SCRIPT);
    return 0;
}

int audit_html_write(catalog *c, const char *work, const cJSON *report, const char *dir, uint32_t thumb_side,
                     audit_html_stats *stats)
{
    *stats = (audit_html_stats){0};
    char thumbs[PATH_CAP], path[PATH_CAP];
    if (snprintf(thumbs, sizeof thumbs, "%s/thumbs", dir) >= (int)sizeof thumbs ||
        snprintf(path, sizeof path, "%s/index.html", dir) >= (int)sizeof path)
        return lvd_fail("%s: path too long", dir);
    if (atomic_file_mkdirs(thumbs) != 0)
        return -1;
    page p = {.c = c, .work = work, .dir = dir, .side = thumb_side, .stats = stats};
    atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        return -1;
    if (!(p.f = atomic_file_stream(&af))) {
        atomic_file_abort(&af);
        return -1;
    }
    /* One read transaction for the thumbnails' locations, as for the report. */
    int rc = catalog_exec(c, "BEGIN");
    if (rc == 0) {
        rc = put_page(&p, report);
        catalog_exec(c, "COMMIT"); /* read-only: nothing to lose if this fails */
    }
    free(p.thumbs);
    if (rc != 0) {
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}
