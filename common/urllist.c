/* urllist.c — streaming readers for URL lists in img2dataset's formats (see urllist.h).
 *
 * Everything is read through zlib's gz* functions, which pass plain files through unchanged, so .gz and
 * plain lists share one code path. One entry at a time is held in memory: the record buffer grows with the
 * longest entry seen, up to URLLIST_ENTRY_MAX.
 */
#include "urllist.h"

#include "err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define URLLIST_ENTRY_MAX ((size_t)1 << 20) /* bytes of one entry; longer ones are reported malformed */
#define URLLIST_CHUNK 65536                 /* bytes read from zlib at a time */

enum { RD_EOF = -1, RD_ERR = -2 };
enum urllist_format { FMT_TXT, FMT_CSV, FMT_TSV, FMT_JSONL };
enum { COL_URL, COL_CAPTION, COL_KEY, COL_LABEL, COL_COUNT };

struct urllist {
    char *path;
    gzFile gz;
    enum urllist_format fmt;
    char *col_name[COL_COUNT]; /* names of the url/caption/key/label columns (or jsonl keys); label may be NULL */
    int label_required;
    int paths;                 /* values_are_paths: the main column holds file paths */

    unsigned char in[URLLIST_CHUNK]; /* decompressed input not yet consumed: in[in_pos..in_len) */
    size_t in_pos, in_len;
    int in_eof;
    uint64_t line_no; /* 1-based number of the physical line being read; 0 before the first */

    /* The current record: raw line bytes (txt/tsv/jsonl) or csv fields, NUL-separated. */
    char *rec;
    size_t rec_len, rec_cap; /* rec_cap <= URLLIST_ENTRY_MAX + 1 */
    uint64_t rec_line;       /* line where the record starts */
    int rec_long;            /* the record did not fit; its bytes past the cap were dropped */
    int rec_nul;             /* the record contains a NUL byte */
    int rec_quoted;          /* csv: some field of the record was quoted */
    const char *rec_bad;     /* csv: syntax problem found while reading the record */
    size_t *fld;             /* start offset of each field in rec (csv/tsv) */
    size_t nfld, fld_cap;

    char **hdr; /* csv/tsv header names, nhdr of them */
    size_t nhdr;
    long col_idx[COL_COUNT]; /* header index of url/caption/key/label, -1 if absent */

    /* Storage behind the strings of the last entry returned. */
    cJSON *json;                  /* jsonl: the parsed line, minus the detached url/caption/key/label items */
    cJSON *json_col[COL_COUNT];   /* jsonl: the detached items (NULL for a name an earlier column took) */
    char *json_text[COL_COUNT];   /* jsonl: caption/key/label values that were not strings, as JSON text */
    char *extra;                  /* other columns as JSON object text (cJSON allocation) */

    uint64_t n_entries, n_bad;
};

/* ---- input ---- */

static int read_fail(urllist *l)
{
    int errnum = Z_OK;
    const char *msg = gzerror(l->gz, &errnum);
    if (errnum == Z_ERRNO)
        return lvd_fail_errno("%s: read error", l->path);
    return lvd_fail("%s: read error: %s", l->path, msg && *msg ? msg : "unknown zlib error");
}

/* Next input byte (0..255), RD_EOF, or RD_ERR with a message recorded. */
static int rd_getc(urllist *l)
{
    if (l->in_pos == l->in_len) {
        if (l->in_eof)
            return RD_EOF;
        int n = gzread(l->gz, l->in, (unsigned)sizeof l->in);
        if (n < 0) {
            read_fail(l);
            return RD_ERR;
        }
        if (n == 0) {
            int errnum = Z_OK;
            gzerror(l->gz, &errnum);
            if (errnum != Z_OK) {
                read_fail(l);
                return RD_ERR;
            }
            l->in_eof = 1;
            return RD_EOF;
        }
        l->in_pos = 0;
        l->in_len = (size_t)n;
    }
    return l->in[l->in_pos++];
}

/* The next byte without consuming it. */
static int rd_peek(urllist *l)
{
    int c = rd_getc(l);
    if (c >= 0)
        l->in_pos--;
    return c;
}

/* ---- the record buffer ---- */

static void rec_reset(urllist *l)
{
    l->rec_len = 0;
    l->rec_long = 0;
    l->rec_nul = 0;
    l->rec_quoted = 0;
    l->rec_bad = NULL;
    l->nfld = 0;
}

/* Appends one byte; past the cap the byte is dropped and rec_long set. */
static int rec_put(urllist *l, char c)
{
    if (l->rec_len >= URLLIST_ENTRY_MAX + 1) {
        l->rec_long = 1;
        return 0;
    }
    if (l->rec_len == l->rec_cap) {
        size_t cap = l->rec_cap ? l->rec_cap * 2 : 256;
        if (cap > URLLIST_ENTRY_MAX + 1)
            cap = URLLIST_ENTRY_MAX + 1;
        char *p = realloc(l->rec, cap);
        if (!p)
            return lvd_fail("%s: out of memory", l->path);
        l->rec = p;
        l->rec_cap = cap;
    }
    l->rec[l->rec_len++] = c;
    return 0;
}

static int rec_data(urllist *l, int c)
{
    if (c == 0)
        l->rec_nul = 1;
    return rec_put(l, (char)c);
}

/* Records that a field starts at offset off of rec. */
static int field_add(urllist *l, size_t off)
{
    if (l->nfld == l->fld_cap) {
        size_t cap = l->fld_cap ? l->fld_cap * 2 : 16;
        size_t *p = realloc(l->fld, cap * sizeof *p);
        if (!p)
            return lvd_fail("%s: out of memory", l->path);
        l->fld = p;
        l->fld_cap = cap;
    }
    l->fld[l->nfld++] = off;
    return 0;
}

static int field_begin(urllist *l) { return field_add(l, l->rec_len); }

static const char *field(const urllist *l, size_t i) { return l->rec + l->fld[i]; }

/* Reads one physical line into rec, NUL-terminated, without its '\n' or a trailing '\r'.
 * Returns 1, 0 at end of input, -1 on a read error. */
static int read_line(urllist *l)
{
    rec_reset(l);
    int c = rd_getc(l);
    if (c == RD_ERR)
        return -1;
    if (c == RD_EOF)
        return 0;
    l->rec_line = ++l->line_no;
    while (c >= 0 && c != '\n') {
        if (rec_data(l, c) < 0)
            return -1;
        c = rd_getc(l);
    }
    if (c == RD_ERR)
        return -1;
    if (!l->rec_long && l->rec_len > 0 && l->rec[l->rec_len - 1] == '\r')
        l->rec_len--;
    if (rec_put(l, '\0') < 0)
        return -1;
    return 1;
}

/* Drops input up to and including the next '\n'. */
static int skip_line(urllist *l)
{
    int c;
    do
        c = rd_getc(l);
    while (c >= 0 && c != '\n');
    return c == RD_ERR ? -1 : 0;
}

/* Reads one RFC 4180 record into NUL-separated fields. A quoted field may span lines ("" is a quote);
 * CRLF and LF end records. A record that outgrows the cap is cut at the end of the physical line where
 * that happened, so a stray opening quote costs at most URLLIST_ENTRY_MAX bytes of the list, not the
 * rest of it. Syntax problems set rec_bad. Returns 1, 0 at end of input, -1 on a read error. */
static int read_csv_record(urllist *l)
{
    enum { START, UNQUOTED, QUOTED, QUOTE_SEEN } st = START;
    rec_reset(l);
    int c = rd_getc(l);
    if (c == RD_ERR)
        return -1;
    if (c == RD_EOF)
        return 0;
    l->rec_line = ++l->line_no;
    if (field_begin(l) < 0)
        return -1;
    for (;; c = rd_getc(l)) {
        if (c == RD_ERR)
            return -1;
        if (l->rec_long)
            return c == '\n' || c == RD_EOF ? 1 : (skip_line(l) < 0 ? -1 : 1);
        if (c == '\r' && st != QUOTED) {
            int n = rd_peek(l);
            if (n == RD_ERR)
                return -1;
            if (n == '\n')
                continue; /* the '\n' ends the record next round */
        }
        if (st == QUOTED) {
            if (c == RD_EOF) {
                l->rec_bad = "unterminated quote";
                return 1;
            }
            if (c == '"') {
                st = QUOTE_SEEN;
                continue;
            }
            if (c == '\n')
                l->line_no++;
            if (rec_data(l, c) < 0)
                return -1;
            continue;
        }
        if (c == RD_EOF || c == '\n')
            return rec_put(l, '\0') < 0 ? -1 : 1;
        if (c == ',') {
            if (rec_put(l, '\0') < 0 || field_begin(l) < 0)
                return -1;
            st = START;
            continue;
        }
        if (st == START && c == '"') {
            st = QUOTED;
            l->rec_quoted = 1;
            continue;
        }
        if (st == QUOTE_SEEN) {
            if (c == '"') {
                st = QUOTED;
                if (rec_data(l, '"') < 0)
                    return -1;
                continue;
            }
            l->rec_bad = "text after a closing quote";
            return skip_line(l) < 0 ? -1 : 1;
        }
        st = UNQUOTED;
        if (rec_data(l, c) < 0)
            return -1;
    }
}

/* Splits a line read by read_line into fields at tabs, in place. */
static int split_tabs(urllist *l)
{
    l->nfld = 0;
    if (field_add(l, 0) < 0)
        return -1;
    for (size_t i = 0; i + 1 < l->rec_len; i++) {
        if (l->rec[i] == '\t') {
            l->rec[i] = '\0';
            if (field_add(l, i + 1) < 0)
                return -1;
        }
    }
    return 0;
}

/* ---- checks ---- */

static int is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t')
            return 0;
    return 1;
}

/* Trims spaces and tabs on both sides, in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* Length of the UTF-8 sequence at s if it encodes a Unicode White_Space or C1 control code point
 * (U+0080..U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), else 0. */
static size_t unicode_space(const unsigned char *s)
{
    if (s[0] == 0xC2 && s[1] >= 0x80 && s[1] <= 0xA0)
        return 2;
    if (s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80)
        return 3;
    if (s[0] == 0xE2 && s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF))
        return 3;
    if (s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F)
        return 3;
    if (s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80)
        return 3;
    return 0;
}

/* NULL if u is a well-formed URL for a list entry, else why not. */
static const char *url_problem(const char *u)
{
    if (!*u)
        return "empty URL";
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p == 0x7F || unicode_space(p))
            return "URL contains whitespace or control characters";
    const char *p = u;
    if (!is_alpha((unsigned char)*p))
        return "URL without scheme://host";
    while (is_alpha((unsigned char)*p) || is_digit((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    if (strncmp(p, "://", 3) != 0)
        return "URL without scheme://host";
    p += 3;
    size_t auth = strcspn(p, "/?#");
    /* The host follows any "user:pass@" and precedes any ":port"; "[v6]" is a bracketed host. */
    const char *host = p;
    for (size_t i = 0; i < auth; i++)
        if (p[i] == '@')
            host = p + i + 1;
    size_t hlen = auth - (size_t)(host - p);
    if (hlen > 0 && host[0] == '[') {
        const char *close = memchr(host, ']', hlen);
        if (!close || close == host + 1)
            return "URL without scheme://host";
        return NULL;
    }
    if (strcspn(host, ":/?#") == 0 || hlen == 0)
        return "URL without scheme://host";
    return NULL;
}

/* NULL if p is an acceptable path for a list entry, else why not. */
static const char *path_problem(const char *p)
{
    if (!*p)
        return "empty path";
    for (const unsigned char *c = (const unsigned char *)p; *c; c++)
        if (*c < 0x20 || *c == 0x7F)
            return "path contains control characters";
    return NULL;
}

/* NULL if the main column's value v is acceptable, else why not. */
static const char *value_problem(const urllist *l, const char *v)
{
    return l->paths ? path_problem(v) : url_problem(v);
}

/* ---- open / close ---- */

static enum urllist_format format_of(const char *path, int *ok)
{
    size_t n = strlen(path);
    if (n >= 3 && strcasecmp(path + n - 3, ".gz") == 0)
        n -= 3;
    static const struct {
        const char *ext;
        enum urllist_format fmt;
    } known[] = {{".txt", FMT_TXT}, {".csv", FMT_CSV}, {".tsv", FMT_TSV}, {".jsonl", FMT_JSONL}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        size_t e = strlen(known[i].ext);
        if (n > e && strncasecmp(path + n - e, known[i].ext, e) == 0) {
            *ok = 1;
            return known[i].fmt;
        }
    }
    *ok = 0;
    return FMT_TXT;
}

/* Reads the csv/tsv header row (the first non-blank one) and finds the url/caption/key/label columns. */
static int read_header(urllist *l)
{
    for (;;) {
        int rc = l->fmt == FMT_CSV ? read_csv_record(l) : read_line(l);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return lvd_fail("%s: no header row (the file is empty)", l->path);
        if (l->rec_long)
            return lvd_fail("%s:%llu: header row longer than 1 MiB", l->path, (unsigned long long)l->rec_line);
        if (l->rec_bad)
            return lvd_fail("%s:%llu: header row: %s", l->path, (unsigned long long)l->rec_line, l->rec_bad);
        if (l->fmt == FMT_TSV && split_tabs(l) < 0)
            return -1;
        if (l->nfld == 1 && !l->rec_quoted && is_blank(field(l, 0)))
            continue;
        break;
    }
    l->hdr = calloc(l->nfld, sizeof *l->hdr);
    if (!l->hdr)
        return lvd_fail("%s: out of memory", l->path);
    l->nhdr = l->nfld;
    for (size_t i = 0; i < l->nhdr; i++) {
        l->hdr[i] = strdup(trim(l->rec + l->fld[i]));
        if (!l->hdr[i])
            return lvd_fail("%s: out of memory", l->path);
    }
    for (int c = 0; c < COL_COUNT; c++) {
        l->col_idx[c] = -1;
        for (size_t i = 0; l->col_name[c] && i < l->nhdr; i++) {
            if (strcmp(l->hdr[i], l->col_name[c]) == 0) {
                l->col_idx[c] = (long)i;
                break;
            }
        }
    }
    if (l->col_idx[COL_URL] < 0)
        return lvd_fail("%s:%llu: no '%s' column in the header", l->path, (unsigned long long)l->rec_line,
                        l->col_name[COL_URL]);
    if (l->label_required && l->col_name[COL_LABEL] && l->col_idx[COL_LABEL] < 0)
        return lvd_fail("%s:%llu: no '%s' column in the header", l->path, (unsigned long long)l->rec_line,
                        l->col_name[COL_LABEL]);
    return 0;
}

int urllist_open(urllist **out, const char *path, const urllist_opts *opts)
{
    *out = NULL;
    int known = 0;
    enum urllist_format fmt = format_of(path, &known);
    if (!known)
        return lvd_fail("%s: unknown URL list format (expected .txt, .csv, .tsv or .jsonl, optionally .gz)", path);
    urllist *l = calloc(1, sizeof *l);
    if (!l)
        return lvd_fail("%s: out of memory", path);
    l->fmt = fmt;
    const char *names[COL_COUNT] = {"url", "caption", "key", NULL};
    if (opts) {
        if (opts->url_col)
            names[COL_URL] = opts->url_col;
        if (opts->caption_col)
            names[COL_CAPTION] = opts->caption_col;
        if (opts->key_col)
            names[COL_KEY] = opts->key_col;
        names[COL_LABEL] = opts->label_col;
        l->label_required = opts->label_required;
        l->paths = opts->values_are_paths;
    }
    l->path = strdup(path);
    int ok = l->path != NULL;
    for (int c = 0; c < COL_COUNT; c++) {
        if (!names[c])
            continue;
        l->col_name[c] = strdup(names[c]);
        ok = ok && l->col_name[c];
    }
    if (!ok) {
        urllist_close(l);
        return lvd_fail("%s: out of memory", path);
    }
    errno = 0;
    l->gz = gzopen(path, "rb");
    if (!l->gz) {
        if (errno)
            lvd_fail_errno("%s", path);
        else
            lvd_fail("%s: cannot open", path);
        urllist_close(l);
        return -1;
    }
    gzbuffer(l->gz, 128 * 1024);
    /* Fill the buffer now: unreadable files fail here, and a UTF-8 byte order mark can be skipped. */
    if (rd_peek(l) == RD_ERR) {
        urllist_close(l);
        return -1;
    }
    if (l->in_len - l->in_pos >= 3 && memcmp(l->in + l->in_pos, "\xEF\xBB\xBF", 3) == 0)
        l->in_pos += 3;
    if ((fmt == FMT_CSV || fmt == FMT_TSV) && read_header(l) < 0) {
        urllist_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

static void entry_storage_free(urllist *l)
{
    cJSON_Delete(l->json);
    l->json = NULL;
    for (int c = 0; c < COL_COUNT; c++) {
        cJSON_Delete(l->json_col[c]);
        l->json_col[c] = NULL;
        cJSON_free(l->json_text[c]);
        l->json_text[c] = NULL;
    }
    cJSON_free(l->extra);
    l->extra = NULL;
}

void urllist_close(urllist *l)
{
    if (!l)
        return;
    entry_storage_free(l);
    if (l->gz)
        gzclose(l->gz);
    for (size_t i = 0; i < l->nhdr; i++)
        free(l->hdr[i]);
    free(l->hdr);
    for (int c = 0; c < COL_COUNT; c++)
        free(l->col_name[c]);
    free(l->fld);
    free(l->rec);
    free(l->path);
    free(l);
}

uint64_t urllist_entries(const urllist *l) { return l->n_entries; }
uint64_t urllist_malformed(const urllist *l) { return l->n_bad; }

/* ---- entries ---- */

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

/* Fills e from the current csv/tsv fields. Returns NULL or why the record is malformed. */
static const char *entry_from_fields(urllist *l, urllist_entry *e, int *oom)
{
    if (l->nfld != l->nhdr)
        return l->nfld < l->nhdr ? "fewer fields than the header" : "more fields than the header";
    char *url = trim(l->rec + l->fld[l->col_idx[COL_URL]]);
    const char *why = value_problem(l, url);
    if (why)
        return why;
    e->url = url;
    if (l->col_idx[COL_CAPTION] >= 0)
        e->caption = nonempty(field(l, (size_t)l->col_idx[COL_CAPTION]));
    if (l->col_idx[COL_KEY] >= 0)
        e->key = nonempty(field(l, (size_t)l->col_idx[COL_KEY]));
    if (l->col_idx[COL_LABEL] >= 0)
        e->label = nonempty(field(l, (size_t)l->col_idx[COL_LABEL]));
    cJSON *obj = cJSON_CreateObject();
    int ok = obj != NULL, added = 0;
    for (size_t i = 0; ok && i < l->nhdr; i++) {
        int named = 0;
        for (int c = 0; c < COL_COUNT; c++)
            named |= (long)i == l->col_idx[c];
        if (named)
            continue;
        ok = cJSON_AddStringToObject(obj, l->hdr[i], field(l, i)) != NULL;
        added++;
    }
    if (ok && added) {
        l->extra = cJSON_PrintUnformatted(obj);
        ok = l->extra != NULL;
        e->extra_json = l->extra;
    }
    cJSON_Delete(obj);
    if (!ok)
        *oom = 1;
    return NULL;
}

/* The detached item of column c; when c shares its name with an earlier column, that column's item. */
static cJSON *json_item(const urllist *l, int c)
{
    for (int j = 0; j < c; j++)
        if (l->col_name[j] && strcmp(l->col_name[j], l->col_name[c]) == 0)
            return l->json_col[j];
    return l->json_col[c];
}

/* The text of a jsonl caption/key/label value: strings as they are, null as absent, anything else as JSON. */
static const char *json_value_text(urllist *l, int c, int *oom)
{
    if (!l->col_name[c])
        return NULL;
    cJSON *v = json_item(l, c);
    if (!v || cJSON_IsNull(v))
        return NULL;
    if (cJSON_IsString(v))
        return nonempty(v->valuestring);
    l->json_text[c] = cJSON_PrintUnformatted(v);
    if (!l->json_text[c])
        *oom = 1;
    return l->json_text[c];
}

/* Fills e from the current jsonl line. Returns NULL or why the line is malformed. */
static const char *entry_from_json(urllist *l, urllist_entry *e, int *oom)
{
    l->json = cJSON_ParseWithOpts(l->rec, NULL, 1);
    if (!l->json)
        return "not valid JSON";
    if (!cJSON_IsObject(l->json))
        return "not a JSON object";
    for (int c = 0; c < COL_COUNT; c++)
        if (l->col_name[c])
            l->json_col[c] = cJSON_DetachItemFromObjectCaseSensitive(l->json, l->col_name[c]);
    cJSON *u = l->json_col[COL_URL];
    if (!u)
        return l->paths ? "no path" : "no URL";
    if (!cJSON_IsString(u) || !u->valuestring)
        return l->paths ? "path is not a JSON string" : "URL is not a JSON string";
    char *url = trim(u->valuestring);
    const char *why = value_problem(l, url);
    if (why)
        return why;
    e->url = url;
    e->caption = json_value_text(l, COL_CAPTION, oom);
    e->key = json_value_text(l, COL_KEY, oom);
    e->label = json_value_text(l, COL_LABEL, oom);
    if (l->json->child) {
        l->extra = cJSON_PrintUnformatted(l->json);
        if (!l->extra)
            *oom = 1;
        e->extra_json = l->extra;
    }
    return NULL;
}

int urllist_next(urllist *l, urllist_entry *e)
{
    for (;;) {
        memset(e, 0, sizeof *e);
        entry_storage_free(l);
        int rc = l->fmt == FMT_CSV ? read_csv_record(l) : read_line(l);
        if (rc < 0)
            return URLLIST_ERROR;
        if (rc == 0)
            return URLLIST_EOF;
        e->line = l->rec_line;
        const char *why = NULL;
        int oom = 0;
        if (l->rec_long) {
            why = "entry longer than 1 MiB";
        } else if (l->rec_bad) {
            why = l->rec_bad;
        } else {
            int blank = l->fmt == FMT_CSV ? l->nfld == 1 && !l->rec_quoted && is_blank(field(l, 0))
                                          : is_blank(l->rec);
            if (blank)
                continue;
            if (l->fmt == FMT_TSV && split_tabs(l) < 0)
                return URLLIST_ERROR;
            if (l->rec_nul)
                why = "NUL byte in the entry";
            else if (l->fmt == FMT_TXT) {
                char *url = trim(l->rec);
                why = value_problem(l, url);
                e->url = url;
            } else if (l->fmt == FMT_JSONL)
                why = entry_from_json(l, e, &oom);
            else
                why = entry_from_fields(l, e, &oom);
        }
        if (oom)
            return lvd_fail("%s:%llu: out of memory", l->path, (unsigned long long)e->line);
        if (why) {
            memset(e, 0, sizeof *e);
            e->line = l->rec_line;
            e->error = why;
            l->n_bad++;
            return URLLIST_BAD;
        }
        l->n_entries++;
        return URLLIST_ENTRY;
    }
}
