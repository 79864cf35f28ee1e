/* urllist.h — streaming readers for URL lists in img2dataset's formats.
 *
 * Formats by file name: .txt (one URL a line), .csv and .tsv (a header row names the columns; RFC 4180
 * quoting for csv, multi-line quoted fields allowed; tsv fields split on tabs), .jsonl (one JSON object a
 * line); any of them may end in .gz. Blank lines are skipped silently. Entries are read one at a time, so
 * memory does not grow with the list. Columns other than url/caption/key/label are kept as a JSON object,
 * so they can be carried into outputs (img2dataset's "additional columns").
 *
 * A malformed line (unparseable JSON, unterminated quote, wrong field count, missing or empty URL, a URL
 * with whitespace or control characters, a URL without "scheme://host") is returned as URLLIST_BAD with its
 * line number and a reason; it never stops reading. Scheme policy (http/https only) is the crawler's job.
 * With values_are_paths the main column holds local file paths instead of URLs (see urllist_opts).
 */
#ifndef LVD_URLLIST_H
#define LVD_URLLIST_H

#include <stdint.h>

typedef struct urllist urllist;

/* Zero-initialised (or NULL) opts give the defaults below. */
typedef struct urllist_opts {
    const char *url_col;     /* default "url": the main column */
    const char *caption_col; /* default "caption" */
    const char *key_col;     /* default "key" */
    const char *label_col;   /* NULL: no label column (a "label" column stays in extra_json) */
    int label_required;      /* 1: a csv/tsv header without label_col is an error, like one without url_col */
    int values_are_paths;    /* 1: the main column holds paths, not URLs: it must only be non-empty (after
                              * trimming spaces and tabs) and free of ASCII control characters */
} urllist_opts;

enum urllist_rc { URLLIST_ERROR = -1, URLLIST_EOF = 0, URLLIST_ENTRY = 1, URLLIST_BAD = 2 };

typedef struct urllist_entry {
    uint64_t line;          /* 1-based line number where the entry starts (the header is line 1 for csv) */
    const char *url;        /* URLLIST_ENTRY: the URL (or path), trimmed of surrounding spaces */
    const char *caption;    /* NULL if the column is absent or empty */
    const char *key;        /* NULL if the column is absent or empty */
    const char *label;      /* NULL if label_col is NULL, or the column is absent or empty */
    const char *extra_json; /* other columns as a JSON object text, or NULL if none */
    const char *error;      /* URLLIST_BAD: why the line is malformed */
} urllist_entry;

/* Opens path; the format comes from the name (after removing .gz). A csv/tsv without the url column (or,
 * with label_required, the label column) in its header, an unknown extension or an unreadable file is an
 * error (-1, message starts with the file name). opts may be NULL for the defaults. */
int urllist_open(urllist **out, const char *path, const urllist_opts *opts);

/* Reads the next entry into *e. Strings in *e stay valid until the next call. Returns enum urllist_rc. */
int urllist_next(urllist *l, urllist_entry *e);

/* Counts so far. */
uint64_t urllist_entries(const urllist *l);
uint64_t urllist_malformed(const urllist *l);

void urllist_close(urllist *l);

#endif
