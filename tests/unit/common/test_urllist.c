/* test_urllist.c — URL list readers: every format, gzip, malformed lines, long lines, streaming. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "err.h"
#include "urllist.h"

static char scratch[64];

/* One entry as returned, copied so it outlives the next urllist_next call. */
typedef struct got {
    int rc;
    uint64_t line;
    char *url, *caption, *key, *label, *extra, *error;
} got;

typedef struct got_list {
    got *v;
    size_t n;
} got_list;

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static char *path_in(const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", scratch, name) > 0);
    return p;
}

static char *write_plain(const char *name, const void *data, size_t len)
{
    char *p = path_in(name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return p;
}

static char *write_gz(const char *name, const void *data, size_t len)
{
    char *p = path_in(name);
    gzFile g = gzopen(p, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(g), Z_OK);
    return p;
}

/* Reads a whole list; fails the test on URLLIST_ERROR. */
static got_list read_all(const char *path, const urllist_opts *opts)
{
    urllist *l = NULL;
    if (urllist_open(&l, path, opts) != 0)
        fail_msg("urllist_open(%s): %s", path, lvd_errmsg());
    got_list g = {0};
    size_t cap = 0;
    urllist_entry e;
    int rc;
    while ((rc = urllist_next(l, &e)) != URLLIST_EOF) {
        if (rc == URLLIST_ERROR)
            fail_msg("urllist_next(%s): %s", path, lvd_errmsg());
        if (g.n == cap) {
            cap = cap ? cap * 2 : 16;
            g.v = realloc(g.v, cap * sizeof *g.v);
            assert_non_null(g.v);
        }
        g.v[g.n++] = (got){rc,
                           e.line,
                           dup_or_null(e.url),
                           dup_or_null(e.caption),
                           dup_or_null(e.key),
                           dup_or_null(e.label),
                           dup_or_null(e.extra_json),
                           dup_or_null(e.error)};
        if (rc == URLLIST_BAD) {
            assert_non_null(e.error);
            assert_null(e.url);
        } else {
            assert_null(e.error);
        }
    }
    uint64_t ok = 0, bad = 0;
    for (size_t i = 0; i < g.n; i++)
        g.v[i].rc == URLLIST_ENTRY ? ok++ : bad++;
    assert_int_equal(urllist_entries(l), ok);
    assert_int_equal(urllist_malformed(l), bad);
    urllist_close(l);
    return g;
}

static void got_free(got_list *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->v[i].url);
        free(g->v[i].caption);
        free(g->v[i].key);
        free(g->v[i].label);
        free(g->v[i].extra);
        free(g->v[i].error);
    }
    free(g->v);
}

static void expect_entry(const got *g, uint64_t line, const char *url, const char *caption, const char *key)
{
    assert_int_equal(g->rc, URLLIST_ENTRY);
    assert_int_equal(g->line, line);
    assert_string_equal(g->url, url);
    if (caption)
        assert_string_equal(g->caption, caption);
    else
        assert_null(g->caption);
    if (key)
        assert_string_equal(g->key, key);
    else
        assert_null(g->key);
}

static void expect_bad(const got *g, uint64_t line, const char *reason_part)
{
    assert_int_equal(g->rc, URLLIST_BAD);
    assert_int_equal(g->line, line);
    if (!strstr(g->error, reason_part))
        fail_msg("line %llu: error \"%s\" lacks \"%s\"", (unsigned long long)line, g->error, reason_part);
}

/* Semantic JSON equality, so key order and spacing of the reference text do not matter. */
static void expect_json(const char *text, const char *want)
{
    assert_non_null(text);
    cJSON *a = cJSON_Parse(text), *b = cJSON_Parse(want);
    assert_non_null(a);
    assert_non_null(b);
    if (!cJSON_Compare(a, b, 1))
        fail_msg("JSON %s != %s", text, want);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static const char txt_list[] = "\xEF\xBB\xBFhttp://a.example/1.jpg\r\n"
                               "\r\n"
                               "   https://b.example/x?y=1#z  \n"
                               "  \t \n"
                               "ftp://c.example\n"
                               "http://d.example/last"; /* no final newline */

static void check_txt(const char *path)
{
    got_list g = read_all(path, NULL);
    assert_int_equal(g.n, 4);
    expect_entry(&g.v[0], 1, "http://a.example/1.jpg", NULL, NULL);
    expect_entry(&g.v[1], 3, "https://b.example/x?y=1#z", NULL, NULL);
    expect_entry(&g.v[2], 5, "ftp://c.example", NULL, NULL);
    expect_entry(&g.v[3], 6, "http://d.example/last", NULL, NULL);
    assert_null(g.v[0].extra);
    got_free(&g);
}

static void test_txt(void **state)
{
    (void)state;
    char *p = write_plain("list.txt", txt_list, sizeof txt_list - 1);
    check_txt(p);
    free(p);
    p = write_gz("list.txt.gz", txt_list, sizeof txt_list - 1);
    check_txt(p);
    free(p);
}

static void test_txt_malformed(void **state)
{
    (void)state;
    static const char text[] = "http://ok.example/a\n" /* 1 */
                               "no-scheme.example/a\n" /* 2 */
                               "http://has space.example/\n" /* 3 */
                               "http://ctl.example/\x01x\n" /* 4 */
                               "1http://digit-first.example/\n" /* 5 */
                               "http:/one-slash.example\n" /* 6 */
                               "http:///path-only\n" /* 7 */
                               "http://user@/x\n" /* 8 */
                               "http://:8080/x\n" /* 9 */
                               "ht_tp://bad-scheme.example/\n" /* 10 */
                               "http://nbsp\xC2\xA0.example/\n" /* 11 */
                               "http://nul.example/\0x\n" /* 12 */
                               "svn+ssh://user@host.example:22/repo\n" /* 13 */
                               "http://[::1]:8080/x\n" /* 14 */
                               "http://[]/x\n" /* 15 */
                               "http://ok.example/\xE2\x82\xAC\n"; /* 16: a non-space UTF-8 character is fine */
    char *p = write_plain("bad.txt", text, sizeof text - 1);
    got_list g = read_all(p, NULL);
    assert_int_equal(g.n, 16);
    expect_entry(&g.v[0], 1, "http://ok.example/a", NULL, NULL);
    expect_bad(&g.v[1], 2, "scheme://host");
    expect_bad(&g.v[2], 3, "whitespace");
    expect_bad(&g.v[3], 4, "control");
    expect_bad(&g.v[4], 5, "scheme://host");
    expect_bad(&g.v[5], 6, "scheme://host");
    expect_bad(&g.v[6], 7, "scheme://host");
    expect_bad(&g.v[7], 8, "scheme://host");
    expect_bad(&g.v[8], 9, "scheme://host");
    expect_bad(&g.v[9], 10, "scheme://host");
    expect_bad(&g.v[10], 11, "whitespace");
    expect_bad(&g.v[11], 12, "NUL");
    expect_entry(&g.v[12], 13, "svn+ssh://user@host.example:22/repo", NULL, NULL);
    expect_entry(&g.v[13], 14, "http://[::1]:8080/x", NULL, NULL);
    expect_bad(&g.v[14], 15, "scheme://host");
    expect_entry(&g.v[15], 16, "http://ok.example/\xE2\x82\xAC", NULL, NULL);
    got_free(&g);
    free(p);
}

static const char csv_list[] = "\xEF\xBB\xBF"
                               "id,url,caption,key,license\r\n"                               /* 1 */
                               "1,http://a.example/1.jpg,a cat,k1,cc-by\r\n"                  /* 2 */
                               "2,\"http://b.example/2.jpg\",\"two\r\nline \"\"caption\"\"\",,\"a,b\"\r\n" /* 3-4 */
                               "\r\n"                                                          /* 5 */
                               "3, http://c.example/3.jpg ,,,\n"                               /* 6 */
                               "4,http://d.example/4.jpg,\"three\n\nlines\",k4,\n"            /* 7-9 */
                               "5,http://e.example/5.jpg,last,k5,x";                           /* 10 */

static void check_csv(const char *path)
{
    got_list g = read_all(path, NULL);
    assert_int_equal(g.n, 5);
    expect_entry(&g.v[0], 2, "http://a.example/1.jpg", "a cat", "k1");
    expect_json(g.v[0].extra, "{\"id\":\"1\",\"license\":\"cc-by\"}");
    expect_entry(&g.v[1], 3, "http://b.example/2.jpg", "two\r\nline \"caption\"", NULL);
    expect_json(g.v[1].extra, "{\"id\":\"2\",\"license\":\"a,b\"}");
    expect_entry(&g.v[2], 6, "http://c.example/3.jpg", NULL, NULL);
    expect_json(g.v[2].extra, "{\"id\":\"3\",\"license\":\"\"}");
    expect_entry(&g.v[3], 7, "http://d.example/4.jpg", "three\n\nlines", "k4");
    expect_entry(&g.v[4], 10, "http://e.example/5.jpg", "last", "k5");
    expect_json(g.v[4].extra, "{\"id\":\"5\",\"license\":\"x\"}");
    got_free(&g);
}

static void test_csv(void **state)
{
    (void)state;
    char *p = write_plain("list.csv", csv_list, sizeof csv_list - 1);
    check_csv(p);
    free(p);
    p = write_gz("list.csv.gz", csv_list, sizeof csv_list - 1);
    check_csv(p);
    free(p);
}

/* Rows written by Python's csv module (an independent RFC 4180 writer) must come back field for field. */
static void test_csv_python_reference(void **state)
{
    (void)state;
    static const char *rows[][3] = {
        {"url", "caption", "note"},
        {"http://a.example/1", "plain", "x"},
        {"http://a.example/2", "with, comma", "\"quoted\""},
        {"http://a.example/3", "multi\nline\ncaption", "tail \"\" quotes"},
        {"http://a.example/4", "", "crlf\r\ninside"},
        {"http://a.example/5", "caf\xC3\xA9 \xE2\x98\x95", ""},
    };
    const size_t nrows = sizeof rows / sizeof rows[0];
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < nrows; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateStringArray(rows[i], 3));
    char *json = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    char *jpath = write_plain("rows.json", json, strlen(json));
    cJSON_free(json);
    char *csv = path_in("py.csv"), *gz = path_in("py.csv.gz");
    char *cmd = NULL;
    assert_true(asprintf(&cmd,
                         "/usr/bin/python3 -c 'import csv,gzip,json,sys\n"
                         "rows=json.load(open(sys.argv[1],encoding=\"utf-8\"))\n"
                         "with open(sys.argv[2],\"w\",newline=\"\",encoding=\"utf-8\") as f: csv.writer(f).writerows(rows)\n"
                         "with gzip.open(sys.argv[3],\"wt\",newline=\"\",encoding=\"utf-8\") as f: csv.writer(f).writerows(rows)\n"
                         "' %s %s %s",
                         jpath, csv, gz) > 0);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    const char *paths[] = {csv, gz};
    for (int k = 0; k < 2; k++) {
        got_list g = read_all(paths[k], NULL);
        assert_int_equal(g.n, nrows - 1);
        uint64_t line = 2;
        for (size_t i = 1; i < nrows; i++) {
            const got *e = &g.v[i - 1];
            expect_entry(e, line, rows[i][0], rows[i][1][0] ? rows[i][1] : NULL, NULL);
            cJSON *want = cJSON_CreateObject();
            cJSON_AddStringToObject(want, "note", rows[i][2]);
            char *wtext = cJSON_PrintUnformatted(want);
            expect_json(e->extra, wtext);
            cJSON_free(wtext);
            cJSON_Delete(want);
            for (const char *s = rows[i][1]; *s; s++)
                line += *s == '\n';
            for (const char *s = rows[i][2]; *s; s++)
                line += *s == '\n';
            line++;
        }
        got_free(&g);
    }
    free(jpath);
    free(csv);
    free(gz);
}

static void test_csv_malformed(void **state)
{
    (void)state;
    static const char text[] = "url,caption\n"                       /* 1 */
                               "http://a.example/1,one\n"           /* 2 */
                               "http://a.example/2,one,extra\n"     /* 3: too many fields */
                               "http://a.example/3\n"               /* 4: too few */
                               "\"http://a.example/4\"x,cap\n"      /* 5: text after closing quote */
                               ",empty url\n"                       /* 6 */
                               "\"http://a.example/6\",\"ok\n"      /* 7-8: quoted newline */
                               "still\"\n"                          /* 8 */
                               "not-a-url,cap\n"                    /* 9 */
                               "http://a.example/10,\"unterminated\n" /* 10 */
                               "http://a.example/11,x\n";           /* 11, swallowed by the open quote */
    char *p = write_plain("bad.csv", text, sizeof text - 1);
    got_list g = read_all(p, NULL);
    assert_int_equal(g.n, 8);
    expect_entry(&g.v[0], 2, "http://a.example/1", "one", NULL);
    assert_null(g.v[0].extra);
    expect_bad(&g.v[1], 3, "more fields");
    expect_bad(&g.v[2], 4, "fewer fields");
    expect_bad(&g.v[3], 5, "closing quote");
    expect_bad(&g.v[4], 6, "empty URL");
    expect_entry(&g.v[5], 7, "http://a.example/6", "ok\nstill", NULL);
    expect_bad(&g.v[6], 9, "scheme://host");
    expect_bad(&g.v[7], 10, "unterminated quote");
    got_free(&g);
    free(p);
}

static void test_csv_missing_url_column(void **state)
{
    (void)state;
    static const char text[] = "link,caption\nhttp://a.example/,x\n";
    char *p = write_plain("nourl.csv", text, sizeof text - 1);
    urllist *l = (urllist *)1;
    assert_int_equal(urllist_open(&l, p, NULL), -1);
    assert_null(l);
    assert_non_null(strstr(lvd_errmsg(), p));
    assert_non_null(strstr(lvd_errmsg(), "'url'"));

    /* The same file read with url_col = "link". */
    urllist_opts o = {.url_col = "link", .caption_col = "caption"};
    got_list g = read_all(p, &o);
    assert_int_equal(g.n, 1);
    expect_entry(&g.v[0], 2, "http://a.example/", "x", NULL);
    got_free(&g);
    free(p);

    static const char empty[] = "\n\n";
    p = write_plain("empty.tsv", empty, sizeof empty - 1);
    assert_int_equal(urllist_open(&l, p, NULL), -1);
    assert_non_null(strstr(lvd_errmsg(), p));
    free(p);
}

static const char tsv_list[] = "URL\tTEXT\tid\tsource\n"
                               "http://a.example/1\ta \"quoted\" caption, with comma\t7\tweb\n"
                               "\n"
                               "http://a.example/2\t\t\t\r\n"
                               "http://a.example/3\tonly two\n"
                               "\t\tx\ty\n";

static void check_tsv(const char *path)
{
    urllist_opts o = {.url_col = "URL", .caption_col = "TEXT", .key_col = "id"};
    got_list g = read_all(path, &o);
    assert_int_equal(g.n, 4);
    expect_entry(&g.v[0], 2, "http://a.example/1", "a \"quoted\" caption, with comma", "7");
    expect_json(g.v[0].extra, "{\"source\":\"web\"}");
    expect_entry(&g.v[1], 4, "http://a.example/2", NULL, NULL);
    expect_json(g.v[1].extra, "{\"source\":\"\"}");
    expect_bad(&g.v[2], 5, "fewer fields");
    expect_bad(&g.v[3], 6, "empty URL");
    got_free(&g);
}

static void test_tsv(void **state)
{
    (void)state;
    char *p = write_plain("list.tsv", tsv_list, sizeof tsv_list - 1);
    check_tsv(p);
    free(p);
    p = write_gz("list.tsv.gz", tsv_list, sizeof tsv_list - 1);
    check_tsv(p);
    free(p);
}

static const char jsonl_list[] =
    "{\"url\":\"http://a.example/1\",\"caption\":\"one\",\"key\":\"k1\",\"w\":640,\"tags\":[\"a\",1],"
    "\"meta\":{\"x\":null},\"ok\":true}\n"                                  /* 1 */
    "\n"                                                                   /* 2 */
    "  {\"url\": \"  http://a.example/2  \", \"key\": 42}  \r\n"           /* 3 */
    "{\"url\": 17}\n"                                                      /* 4 */
    "{\"url\": null, \"caption\": \"x\"}\n"                                /* 5 */
    "{\"caption\": \"no url\"}\n"                                          /* 6 */
    "[\"http://a.example/7\"]\n"                                           /* 7 */
    "{\"url\": \"http://a.example/8\"\n"                                   /* 8: truncated */
    "{\"url\": \"http://a.example/9\"} trailing\n"                         /* 9 */
    "{\"url\": \"http://a.example/\\u0009tab\"}\n"                         /* 10 */
    "{\"url\": \"http://a.example/11\", \"caption\": null, \"key\": \"\"}"; /* 11 */

static void check_jsonl(const char *path)
{
    got_list g = read_all(path, NULL);
    assert_int_equal(g.n, 10);
    expect_entry(&g.v[0], 1, "http://a.example/1", "one", "k1");
    expect_json(g.v[0].extra, "{\"w\":640,\"tags\":[\"a\",1],\"meta\":{\"x\":null},\"ok\":true}");
    expect_entry(&g.v[1], 3, "http://a.example/2", NULL, "42");
    assert_null(g.v[1].extra);
    expect_bad(&g.v[2], 4, "not a JSON string");
    expect_bad(&g.v[3], 5, "not a JSON string");
    expect_bad(&g.v[4], 6, "no URL");
    expect_bad(&g.v[5], 7, "not a JSON object");
    expect_bad(&g.v[6], 8, "not valid JSON");
    expect_bad(&g.v[7], 9, "not valid JSON");
    expect_bad(&g.v[8], 10, "whitespace");
    expect_entry(&g.v[9], 11, "http://a.example/11", NULL, NULL);
    assert_null(g.v[9].extra);
    got_free(&g);
}

static void test_jsonl(void **state)
{
    (void)state;
    char *p = write_plain("list.jsonl", jsonl_list, sizeof jsonl_list - 1);
    check_jsonl(p);
    free(p);
    p = write_gz("list.jsonl.gz", jsonl_list, sizeof jsonl_list - 1);
    check_jsonl(p);
    free(p);
}

/* A .gz written by Python's gzip module, not by the zlib we read with. */
static void test_python_gzip(void **state)
{
    (void)state;
    char *p = path_in("py.txt.gz");
    char *cmd = NULL;
    assert_true(asprintf(&cmd,
                         "/usr/bin/python3 -c 'import gzip,sys\n"
                         "with gzip.open(sys.argv[1],\"wb\") as f:\n"
                         " f.write(b\"\".join(b\"http://h%%d.example/p\\n\" %% i for i in range(5000)))\n"
                         "' %s",
                         p) > 0);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    urllist *l = NULL;
    assert_int_equal(urllist_open(&l, p, NULL), 0);
    urllist_entry e;
    char want[64];
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(urllist_next(l, &e), URLLIST_ENTRY);
        snprintf(want, sizeof want, "http://h%d.example/p", i);
        assert_string_equal(e.url, want);
        assert_int_equal(e.line, (uint64_t)i + 1);
    }
    assert_int_equal(urllist_next(l, &e), URLLIST_EOF);
    urllist_close(l);
    free(p);
}

static void test_truncated_gz(void **state)
{
    (void)state;
    size_t n = 200000, len = 0;
    char *text = malloc(n * 32);
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(text + len, "http://t.example/%zu\n", i);
    char *p = write_gz("trunc.txt.gz", text, len);
    free(text);
    assert_int_equal(truncate(p, 4000), 0);
    urllist *l = NULL;
    assert_int_equal(urllist_open(&l, p, NULL), 0);
    urllist_entry e;
    int rc;
    uint64_t count = 0;
    while ((rc = urllist_next(l, &e)) == URLLIST_ENTRY || rc == URLLIST_BAD)
        count++;
    assert_int_equal(rc, URLLIST_ERROR);
    assert_true(count < n);
    assert_non_null(strstr(lvd_errmsg(), p));
    urllist_close(l);
    free(p);
}

static void test_open_errors(void **state)
{
    (void)state;
    urllist *l = NULL;
    char *p = path_in("missing.txt");
    assert_int_equal(urllist_open(&l, p, NULL), -1);
    assert_non_null(strstr(lvd_errmsg(), p));
    free(p);
    p = write_plain("list.parquet", "x", 1);
    assert_int_equal(urllist_open(&l, p, NULL), -1);
    assert_non_null(strstr(lvd_errmsg(), p));
    assert_non_null(strstr(lvd_errmsg(), "format"));
    free(p);
    p = path_in("dir.txt");
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(urllist_open(&l, p, NULL), -1);
    assert_non_null(strstr(lvd_errmsg(), p));
    free(p);
}

/* 100k lines read one at a time; every 1000th line is malformed. */
static void test_100k_lines(void **state)
{
    (void)state;
    char *p = path_in("big.csv.gz");
    gzFile gz = gzopen(p, "wb");
    assert_non_null(gz);
    assert_true(gzputs(gz, "url,caption\n") > 0);
    for (int i = 0; i < 100000; i++) {
        if (i % 1000 == 999)
            assert_true(gzprintf(gz, "bad url %d,c\n", i) > 0);
        else
            assert_true(gzprintf(gz, "http://big.example/%d.jpg,\"caption %d\"\n", i, i) > 0);
    }
    assert_int_equal(gzclose(gz), Z_OK);
    urllist *l = NULL;
    assert_int_equal(urllist_open(&l, p, NULL), 0);
    urllist_entry e;
    int rc;
    uint64_t ok = 0, bad = 0;
    while ((rc = urllist_next(l, &e)) != URLLIST_EOF) {
        assert_int_not_equal(rc, URLLIST_ERROR);
        if (rc == URLLIST_BAD) {
            bad++;
            assert_int_equal(e.line % 1000, 1); /* line = i + 2 with i % 1000 == 999 */
        } else {
            ok++;
            if (e.line == 50002)
                assert_string_equal(e.url, "http://big.example/50000.jpg");
        }
    }
    assert_int_equal(ok, 99900);
    assert_int_equal(bad, 100);
    assert_int_equal(urllist_entries(l), 99900);
    assert_int_equal(urllist_malformed(l), 100);
    urllist_close(l);
    free(p);
}

/* A 2 MiB entry is reported malformed at its line and reading goes on with the right line numbers. */
static void test_long_lines(void **state)
{
    (void)state;
    size_t big = (size_t)2 << 20;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, 'a', big);
    huge[big] = '\0';
    const char *names[] = {"long.txt", "long.csv", "long.jsonl", "long.tsv"};
    for (int k = 0; k < 4; k++) {
        char *text = NULL;
        int n = 0;
        switch (k) {
        case 0:
            n = asprintf(&text, "http://a.example/1\nhttp://x.example/%s\nhttp://a.example/3\n", huge);
            break;
        case 1: /* the long field is quoted and spans lines */
            n = asprintf(&text, "url,caption\nhttp://a.example/1,x\nhttp://x.example/,\"%s\n%s\"\nhttp://a.example/4,y\n",
                         huge, huge);
            break;
        case 2:
            n = asprintf(&text, "{\"url\":\"http://a.example/1\"}\n{\"url\":\"http://x.example/%s\"}\n"
                                "{\"url\":\"http://a.example/3\"}\n", huge);
            break;
        case 3:
            n = asprintf(&text, "url\thuge\nhttp://a.example/1\tx\nhttp://x.example/\t%s\nhttp://a.example/3\ty\n", huge);
            break;
        }
        assert_true(n > 0);
        char *p = write_plain(names[k], text, (size_t)n);
        free(text);
        got_list g = read_all(p, NULL);
        if (k == 0 || k == 2) {
            assert_int_equal(g.n, 3);
            expect_entry(&g.v[0], 1, "http://a.example/1", NULL, NULL);
            expect_bad(&g.v[1], 2, "1 MiB");
            expect_entry(&g.v[2], 3, "http://a.example/3", NULL, NULL);
        } else if (k == 3) {
            assert_int_equal(g.n, 3);
            expect_entry(&g.v[0], 2, "http://a.example/1", NULL, NULL);
            expect_bad(&g.v[1], 3, "1 MiB");
            expect_entry(&g.v[2], 4, "http://a.example/3", NULL, NULL);
        } else {
            /* The cap is hit inside the quoted field's first physical line, so the record is cut at the
             * end of that line and the next line starts fresh: its 2 MiB (ending in the stray closing
             * quote) are malformed too, and the line after is read normally. */
            assert_int_equal(g.n, 4);
            expect_entry(&g.v[0], 2, "http://a.example/1", "x", NULL);
            expect_bad(&g.v[1], 3, "1 MiB");
            expect_bad(&g.v[2], 4, "1 MiB");
            expect_entry(&g.v[3], 5, "http://a.example/4", "y", NULL);
        }
        got_free(&g);
        free(p);
    }
    /* Just under the cap is still an entry. */
    size_t fit = ((size_t)1 << 20) - 100;
    char *text = malloc(fit + 2);
    assert_non_null(text);
    memcpy(text, "http://x.example/", 17);
    memset(text + 17, 'b', fit - 17);
    text[fit] = '\n';
    char *p = write_plain("fit.txt", text, fit + 1);
    got_list g = read_all(p, NULL);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.v[0].rc, URLLIST_ENTRY);
    assert_int_equal(strlen(g.v[0].url), fit);
    got_free(&g);
    free(p);
    free(text);
    free(huge);
}

static void expect_label(const got *g, const char *label)
{
    if (label)
        assert_string_equal(g->label, label);
    else
        assert_null(g->label);
}

static const char labelled_csv[] = "url,label,caption,note\n"                           /* 1 */
                                   "http://a.example/1,cat,one,n1\n"                   /* 2 */
                                   "http://a.example/2,,two,n2\n"                      /* 3 */
                                   "http://a.example/3,\"two\nlines, \"\"q\"\"\",,n3\n" /* 4-5 */
                                   "http://a.example/4, spaced ,four,n4\n";            /* 6 */

/* label_col: its value goes to e->label (empty -> NULL) and not into extra_json; without it (zero opts, as
 * the crawler passes) a "label" column is an ordinary extra column, as before label_col existed. */
static void test_label_column(void **state)
{
    (void)state;
    char *p = write_plain("labelled.csv", labelled_csv, sizeof labelled_csv - 1);

    got_list g = read_all(p, NULL);
    assert_int_equal(g.n, 4);
    expect_entry(&g.v[0], 2, "http://a.example/1", "one", NULL);
    expect_label(&g.v[0], NULL);
    expect_json(g.v[0].extra, "{\"label\":\"cat\",\"note\":\"n1\"}");
    got_free(&g);

    urllist_opts zero = {0};
    g = read_all(p, &zero);
    assert_int_equal(g.n, 4);
    expect_label(&g.v[0], NULL);
    expect_json(g.v[0].extra, "{\"label\":\"cat\",\"note\":\"n1\"}");
    got_free(&g);

    urllist_opts o = {.label_col = "label"};
    g = read_all(p, &o);
    assert_int_equal(g.n, 4);
    expect_entry(&g.v[0], 2, "http://a.example/1", "one", NULL);
    expect_label(&g.v[0], "cat");
    expect_json(g.v[0].extra, "{\"note\":\"n1\"}");
    expect_entry(&g.v[1], 3, "http://a.example/2", "two", NULL);
    expect_label(&g.v[1], NULL);
    expect_json(g.v[1].extra, "{\"note\":\"n2\"}");
    expect_entry(&g.v[2], 4, "http://a.example/3", NULL, NULL);
    expect_label(&g.v[2], "two\nlines, \"q\"");
    expect_entry(&g.v[3], 6, "http://a.example/4", "four", NULL);
    expect_label(&g.v[3], " spaced ");
    got_free(&g);

    /* An absent label column: no labels, no error, unless it is required. */
    urllist_opts absent = {.label_col = "cls"};
    g = read_all(p, &absent);
    assert_int_equal(g.n, 4);
    for (size_t i = 0; i < g.n; i++)
        expect_label(&g.v[i], NULL);
    expect_json(g.v[0].extra, "{\"label\":\"cat\",\"note\":\"n1\"}");
    got_free(&g);
    urllist_opts required = {.label_col = "cls", .label_required = 1};
    urllist *l = (urllist *)1;
    assert_int_equal(urllist_open(&l, p, &required), -1);
    assert_null(l);
    assert_non_null(strstr(lvd_errmsg(), p));
    assert_non_null(strstr(lvd_errmsg(), "'cls'"));
    required.label_col = "label";
    g = read_all(p, &required);
    assert_int_equal(g.n, 4);
    expect_label(&g.v[0], "cat");
    got_free(&g);
    free(p);

    /* tsv, with the label column first and renamed. */
    static const char tsv[] = "class\tURL\textra\n"
                              "dog\thttp://b.example/1\tx\n"
                              "\thttp://b.example/2\ty\n";
    p = write_plain("labelled.tsv", tsv, sizeof tsv - 1);
    urllist_opts ot = {.url_col = "URL", .label_col = "class"};
    g = read_all(p, &ot);
    assert_int_equal(g.n, 2);
    expect_entry(&g.v[0], 2, "http://b.example/1", NULL, NULL);
    expect_label(&g.v[0], "dog");
    expect_json(g.v[0].extra, "{\"extra\":\"x\"}");
    expect_entry(&g.v[1], 3, "http://b.example/2", NULL, NULL);
    expect_label(&g.v[1], NULL);
    got_free(&g);
    free(p);

    /* jsonl: strings as they are, null or "" as absent, other values as JSON text; a label key shared
     * with the caption key serves both. */
    static const char jsonl[] = "{\"url\":\"http://c.example/1\",\"label\":\"bird\",\"w\":1}\n"
                                "{\"url\":\"http://c.example/2\",\"label\":3}\n"
                                "{\"url\":\"http://c.example/3\",\"label\":null}\n"
                                "{\"url\":\"http://c.example/4\",\"label\":\"\"}\n"
                                "{\"url\":\"http://c.example/5\"}\n";
    p = write_plain("labelled.jsonl", jsonl, sizeof jsonl - 1);
    g = read_all(p, NULL);
    assert_int_equal(g.n, 5);
    expect_label(&g.v[0], NULL);
    expect_json(g.v[0].extra, "{\"label\":\"bird\",\"w\":1}");
    got_free(&g);
    g = read_all(p, &o);
    assert_int_equal(g.n, 5);
    expect_entry(&g.v[0], 1, "http://c.example/1", NULL, NULL);
    expect_label(&g.v[0], "bird");
    expect_json(g.v[0].extra, "{\"w\":1}");
    expect_label(&g.v[1], "3");
    assert_null(g.v[1].extra);
    expect_label(&g.v[2], NULL);
    expect_label(&g.v[3], NULL);
    expect_label(&g.v[4], NULL);
    got_free(&g);
    urllist_opts shared = {.caption_col = "label", .label_col = "label"};
    g = read_all(p, &shared);
    expect_entry(&g.v[0], 1, "http://c.example/1", "bird", NULL);
    expect_label(&g.v[0], "bird");
    got_free(&g);
    free(p);

    /* txt has no columns: never a label. */
    static const char txt[] = "http://d.example/1\n";
    p = write_plain("labelled.txt", txt, sizeof txt - 1);
    g = read_all(p, &required);
    assert_int_equal(g.n, 1);
    expect_entry(&g.v[0], 1, "http://d.example/1", NULL, NULL);
    expect_label(&g.v[0], NULL);
    got_free(&g);
    free(p);
}

static const char paths_txt[] = "imgs/a.png\n"                   /* 1 */
                                "  spaced name.png \t\n"         /* 2: trimmed */
                                "/abs/dir/b.jpg\r\n"             /* 3 */
                                "\n"                             /* 4 */
                                "caf\xC3\xA9 \xC2\xA0x.png\n"    /* 5: non-ASCII, even a no-break space */
                                "ctl\x01name.png\n"              /* 6 */
                                "tab\tinside.png\n"              /* 7 */
                                "del\x7F.png\n"                  /* 8 */
                                "nul\0.png\n"                    /* 9 */
                                "http://x.example/y\n";          /* 10: a URL is a path too */

/* values_are_paths: the main column is a path: non-empty, no ASCII control characters, trimmed; the URL
 * checks that would reject these lines do not apply. */
static void test_values_are_paths(void **state)
{
    (void)state;
    char *p = write_plain("paths.txt", paths_txt, sizeof paths_txt - 1);
    urllist_opts o = {.values_are_paths = 1};
    got_list g = read_all(p, &o);
    assert_int_equal(g.n, 9);
    expect_entry(&g.v[0], 1, "imgs/a.png", NULL, NULL);
    expect_entry(&g.v[1], 2, "spaced name.png", NULL, NULL);
    expect_entry(&g.v[2], 3, "/abs/dir/b.jpg", NULL, NULL);
    expect_entry(&g.v[3], 5, "caf\xC3\xA9 \xC2\xA0x.png", NULL, NULL);
    expect_bad(&g.v[4], 6, "path contains control characters");
    expect_bad(&g.v[5], 7, "path contains control characters");
    expect_bad(&g.v[6], 8, "path contains control characters");
    expect_bad(&g.v[7], 9, "NUL");
    expect_entry(&g.v[8], 10, "http://x.example/y", NULL, NULL);
    got_free(&g);

    /* The same lines as URLs: only the URL survives. */
    g = read_all(p, NULL);
    assert_int_equal(g.n, 9);
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(g.v[i].rc, URLLIST_BAD);
    expect_entry(&g.v[8], 10, "http://x.example/y", NULL, NULL);
    got_free(&g);
    free(p);

    static const char csv[] = "id,file,cls\n"                     /* 1 */
                              "1,imgs/a.png,coat\n"                /* 2 */
                              "2,\" imgs/b, with comma.png \",\n"  /* 3 */
                              "3,,bag\n"                           /* 4 */
                              "4,   ,bag\n"                        /* 5 */
                              "5,\"two\nlines.png\",x\n"           /* 6-7 */
                              "6,../up.png,shirt\n";               /* 8 */
    p = write_plain("paths.csv", csv, sizeof csv - 1);
    urllist_opts oc = {.url_col = "file", .label_col = "cls", .values_are_paths = 1};
    g = read_all(p, &oc);
    assert_int_equal(g.n, 6);
    expect_entry(&g.v[0], 2, "imgs/a.png", NULL, NULL);
    expect_label(&g.v[0], "coat");
    expect_json(g.v[0].extra, "{\"id\":\"1\"}");
    expect_entry(&g.v[1], 3, "imgs/b, with comma.png", NULL, NULL);
    expect_label(&g.v[1], NULL);
    expect_bad(&g.v[2], 4, "empty path");
    expect_bad(&g.v[3], 5, "empty path");
    expect_bad(&g.v[4], 6, "path contains control characters");
    expect_entry(&g.v[5], 8, "../up.png", NULL, NULL);
    expect_label(&g.v[5], "shirt");
    got_free(&g);
    free(p);

    static const char jsonl[] = "{\"file\":\"a/b.png\",\"cls\":\"x\"}\n"
                                "{\"file\":7}\n"
                                "{\"cls\":\"y\"}\n"
                                "{\"file\":\" \"}\n";
    p = write_plain("paths.jsonl", jsonl, sizeof jsonl - 1);
    g = read_all(p, &oc);
    assert_int_equal(g.n, 4);
    expect_entry(&g.v[0], 1, "a/b.png", NULL, NULL);
    expect_label(&g.v[0], "x");
    expect_bad(&g.v[1], 2, "path is not a JSON string");
    expect_bad(&g.v[2], 3, "no path");
    expect_bad(&g.v[3], 4, "empty path");
    got_free(&g);
    free(p);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(scratch, sizeof scratch, "urllist");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(scratch);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt),
        cmocka_unit_test(test_txt_malformed),
        cmocka_unit_test(test_csv),
        cmocka_unit_test(test_csv_python_reference),
        cmocka_unit_test(test_csv_malformed),
        cmocka_unit_test(test_csv_missing_url_column),
        cmocka_unit_test(test_tsv),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_python_gzip),
        cmocka_unit_test(test_truncated_gz),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_100k_lines),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_label_column),
        cmocka_unit_test(test_values_are_paths),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
