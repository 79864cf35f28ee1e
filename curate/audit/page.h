/* page.h — the dedup audit as one self-contained HTML page, for a person to scroll through and judge
 * the thresholds.
 *
 * Writes DIR/index.html and DIR/thumbs/<first 16 hex digits of the image's SHA-256>.<jpg|png|webp>: the
 * page refers only to those files (relative URLs), draws its histograms as inline SVG and has one small
 * inline script (no external URL of any kind), so DIR can be copied anywhere and opened offline.
 *
 * Page: a summary table; one <section class="benchmark"> per benchmark collection (facts, the similarity
 * bands, a histogram of the similarity that removed each image with the threshold marked, a
 * <div class="nearest"> with the histogram of every searched pool image's nearest benchmark image and a
 * table class="flagged" of the images thresholds around the used one would flag, then the pairs
 * "removed pool image | benchmark image" of highest similarity and those nearest the threshold); one
 * <section class="self"> for self-dedup (component sizes, histograms of the removing edge and of the direct
 * similarity to the kept image, the same <div class="nearest"> for the nearest other pool image, the components
 * with the weakest links, the largest components, and the pairs
 * "removed duplicate | the image its edge joins"). Every pair is a <div class="pair" data-sim="..."> holding
 * one <figure> per image; lists are sorted by similarity as in the report (report.h).
 *
 * When the report has a retrieval part, a <section class="retrieval" id="retrieval"> follows: the run's
 * facts, a table class="retrieval-rows" with one <tr data-row="NAME"> per registry row in its <tbody>
 * (counts beside the paper's, the reason of a skipped row), the totals, then per sample or cluster row a
 * <div class="rrow"> with the histogram of its selections' similarity (no threshold line) and, for sample
 * rows, the pairs "seed | its nearest retrieved image" as <div class="pair retrieved-pair" data-sim="...">
 * (the dedup sections' pairs are the .pair elements inside section.benchmark and section.self), for cluster
 * rows one <div class="cluster" data-cluster="..."> per chosen cluster listed, with its images nearest the
 * centroid. Without dedup results the page holds the retrieval section alone.
 *
 * When the report has a balance part (breport.h), a <section class="balance" id="balance"> follows: the tree
 * and the sample, a table class="balance-levels" with one <tr data-level="L"> per level (the quantiles of the
 * clusters' point counts before sampling and of their quotas after), then the largest and the smallest
 * top-level clusters as <div class="cluster balance-cluster" data-kind="largest|smallest" data-cluster="..."
 * data-size="..." data-quota="...">, each with thumbnails of its sampled images.
 */
#ifndef LVD_AUDIT_HTML_H
#define LVD_AUDIT_HTML_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "catalog.h"

typedef struct audit_html_stats {
    int64_t pairs;       /* <div class="pair"> elements of the dedup sections written */
    int64_t retrieved_pairs; /* <div class="pair retrieved-pair"> elements (seed | nearest retrieved image) */
    int64_t clusters;    /* <div class="cluster"> elements (chosen clusters of retrieval rows, balance clusters) */
    int64_t thumbs;      /* thumbnail files written */
    int64_t thumbs_failed; /* images shown as a placeholder (no readable working image) */
} audit_html_stats;

/* report: from audit_report(). work: the work directory (shards are read through c). dir is created if
 * missing (parents too); an existing index.html is replaced atomically (written to a temporary name, then
 * renamed). thumb_side: longest thumbnail side in pixels. Returns 0, or -1 naming the file concerned. An
 * image whose bytes cannot be read or decoded does not fail the page: it is shown as a placeholder and
 * counted in thumbs_failed (the log says why). */
int audit_html_write(catalog *c, const char *work, const cJSON *report, const char *dir, uint32_t thumb_side,
                     audit_html_stats *stats);

#endif
