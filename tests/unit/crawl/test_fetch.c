/* test_fetch.c — the fetch engine against tests/server.py, a local fault-injecting HTTP server.
 *
 * Expectations come from the server's behaviour and its own request counters (/counter), read here with
 * plain libcurl, never through the engine under test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "err.h"
#include "crawl/fetch.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------------------ */
/* Server and scratch directory                                                                            */

static char g_src[4096];     /* source tests/ directory */
static char g_tmp[64];       /* scratch directory */
static pid_t g_server = -1;
static int g_port;
static uint8_t g_file[7000]; /* bytes of <tmp>/img.png */

/* Starts tests/server.py (with --robots FILE when robots_file is not NULL); returns its pid and port. */
static pid_t spawn_server(const char *robots_file, int *port)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    char script[4200];
    snprintf(script, sizeof script, "%s/server.py", g_src);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (robots_file)
            execl("/usr/bin/python3", "python3", script, "--root", g_tmp, "--robots", robots_file, (char *)NULL);
        else
            execl("/usr/bin/python3", "python3", script, "--root", g_tmp, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    if (!f)
        return -1;
    char line[128];
    int ok = fgets(line, sizeof line, f) && sscanf(line, "PORT %d", port) == 1;
    fclose(f);
    if (!ok) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

static void stop_server(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

static int setup(void **state)
{
    (void)state;
    strcpy(g_tmp, "/tmp/lvd-test-fetch-XXXXXX");
    if (!mkdtemp(g_tmp))
        return -1;
    /* arbitrary bytes: the engine must hand them over unchanged */
    uint64_t x = 0x1234567887654321ull;
    for (size_t i = 0; i < sizeof g_file; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        g_file[i] = (uint8_t)x;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/img.png", g_tmp);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(g_file, 1, sizeof g_file, f) != sizeof g_file)
        return -1;
    fclose(f);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    g_server = spawn_server(NULL, &g_port);
    return g_server > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    stop_server(g_server);
    char path[128];
    snprintf(path, sizeof path, "%s/img.png", g_tmp);
    unlink(path);
    rmdir(g_tmp);
    curl_global_cleanup();
    return 0;
}

/* ------------------------------------------------------------------------------------------------------ */
/* Plain libcurl access to the server, independent of the engine                                           */

typedef struct buf {
    char *p;
    size_t n;
} buf;

static size_t buf_write(char *d, size_t s, size_t n, void *ud)
{
    buf *b = ud;
    char *np = realloc(b->p, b->n + s * n + 1);
    if (!np)
        return 0;
    memcpy(np + b->n, d, s * n);
    b->p = np;
    b->n += s * n;
    b->p[b->n] = '\0';
    return s * n;
}

static buf plain_get(const char *path)
{
    buf b = {NULL, 0};
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", g_port, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    assert_int_equal(rc, CURLE_OK);
    return b;
}

/* Requests the server saw for path (query excluded). */
static long count_of(const char *path)
{
    char q[512];
    snprintf(q, sizeof q, "/counter?path=%s", path);
    buf b = plain_get(q);
    long n = strtol(b.p, NULL, 10);
    free(b.p);
    return n;
}

static long max_concurrent(const char *host_header)
{
    char q[512];
    snprintf(q, sizeof q, "/counter?max=%s", host_header);
    buf b = plain_get(q);
    long n = strtol(b.p, NULL, 10);
    free(b.p);
    return n;
}

static void counter_reset(void)
{
    buf b = plain_get("/counter/reset");
    free(b.p);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Running the engine over a list of URLs                                                                  */

typedef struct res {
    int seen;
    fetch_status status;
    long http;
    int attempts;
    char *final_url, *ctype, *error;
    uint8_t *body;
    size_t len;
    double started, finished;
} res;

typedef struct run {
    char **urls;
    size_t n, next;
    res *r;
    size_t delivered;
    size_t abort_after; /* done returns -1 after this many results (0: never) */
    int feed_fail_at;   /* feed returns -1 at this index (-1: never) */
    size_t max_held;    /* most jobs pulled and not yet delivered at any time */
} run;

static char *dupn(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int feed_cb(void *ctx, uint64_t *id, char *url, size_t cap)
{
    run *r = ctx;
    if (r->feed_fail_at >= 0 && r->next == (size_t)r->feed_fail_at)
        return lvd_fail("feed: broken list at %zu", r->next);
    if (r->next >= r->n)
        return 0;
    assert_true(strlen(r->urls[r->next]) < cap);
    strcpy(url, r->urls[r->next]);
    *id = r->next++;
    if (r->next - r->delivered > r->max_held)
        r->max_held = r->next - r->delivered;
    return 1;
}

static int done_cb(void *ctx, const fetch_result *fr)
{
    run *r = ctx;
    assert_true(fr->id < r->n);
    res *x = &r->r[fr->id];
    x->seen++;
    assert_string_equal(fr->url, r->urls[fr->id]);
    x->status = fr->status;
    x->http = fr->http_status;
    x->attempts = fr->attempts;
    x->final_url = dupn(fr->final_url);
    x->ctype = dupn(fr->content_type);
    x->error = dupn(fr->error);
    if (fr->status == FETCH_OK) {
        assert_non_null(fr->body);
        x->body = malloc(fr->body_len);
        memcpy(x->body, fr->body, fr->body_len);
        x->len = fr->body_len;
        assert_null(fr->error);
    } else {
        assert_null(fr->body);
        assert_non_null(fr->error); /* every failure says why */
        assert_true(fr->error[0] != '\0');
    }
    x->started = fr->started;
    x->finished = fr->finished;
    assert_true(fr->started <= fr->finished);
    r->delivered++;
    if (r->abort_after && r->delivered >= r->abort_after)
        return -1;
    return 0;
}

static void run_free(run *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->urls[i]);
        free(r->r[i].final_url);
        free(r->r[i].ctype);
        free(r->r[i].error);
        free(r->r[i].body);
    }
    free(r->urls);
    free(r->r);
    memset(r, 0, sizeof *r);
}

static void run_init(run *r, size_t n)
{
    memset(r, 0, sizeof *r);
    r->urls = calloc(n, sizeof *r->urls);
    r->r = calloc(n, sizeof *r->r);
    r->n = n;
    r->feed_fail_at = -1;
}

/* URL i: a path on the test server ("/x") or a full URL. */
static void run_set(run *r, size_t i, const char *path)
{
    char u[1024];
    if (path[0] == '/')
        snprintf(u, sizeof u, "http://127.0.0.1:%d%s", g_port, path);
    else
        snprintf(u, sizeof u, "%s", path);
    r->urls[i] = strdup(u);
}

static void test_opts(fetch_opts *o)
{
    fetch_opts_default(o);
    o->allow_private = 1;
    o->connect_timeout = 2;
    o->timeout = 3;
    o->low_speed_limit = 1;
    o->low_speed_time = 2;
    o->backoff_base = 0.05;
    o->backoff_max = 0.2;
    o->concurrency = 8;
}

/* Runs the engine over r and checks that every job was delivered exactly once. */
static void run_engine(const fetch_opts *o, run *r, fetch_stats *st)
{
    fetch_engine *e = NULL;
    assert_int_equal(fetch_engine_new(&e, o), 0);
    assert_int_equal(fetch_engine_run(e, feed_cb, done_cb, r), 0);
    if (st)
        fetch_engine_stats(e, st);
    fetch_engine_free(e);
    assert_int_equal(r->delivered, r->n);
    for (size_t i = 0; i < r->n; i++)
        assert_int_equal(r->r[i].seen, 1);
}

/* One URL with options o; the result is left in r->r[0]. */
static void fetch_one(const fetch_opts *o, run *r, const char *path, fetch_stats *st)
{
    run_init(r, 1);
    run_set(r, 0, path);
    run_engine(o, r, st);
}

static char g_url[1024];
static const char *server_url(const char *path)
{
    snprintf(g_url, sizeof g_url, "http://127.0.0.1:%d%s", g_port, path);
    return g_url;
}

/* ------------------------------------------------------------------------------------------------------ */
/* Tests                                                                                                   */

static void test_status_names(void **state)
{
    (void)state;
    /* the catalog stores these strings: they must not drift */
    const char *want[FETCH_STATUS_COUNT] = {"ok", "http_error", "timeout", "dns", "connect", "too_large",
                                            "opted_out", "robots", "blocked_address", "bad_scheme",
                                            "too_many_redirects", "empty", "error"};
    for (int i = 0; i < FETCH_STATUS_COUNT; i++)
        assert_string_equal(fetch_status_name((fetch_status)i), want[i]);
    assert_true(fetch_status_transient(FETCH_TIMEOUT, 0));
    assert_true(fetch_status_transient(FETCH_DNS, 0));
    assert_true(fetch_status_transient(FETCH_CONNECT, 0));
    assert_true(fetch_status_transient(FETCH_ERROR, 0));
    assert_true(fetch_status_transient(FETCH_HTTP_ERROR, 503));
    assert_true(fetch_status_transient(FETCH_HTTP_ERROR, 429));
    assert_true(fetch_status_transient(FETCH_HTTP_ERROR, 408));
    assert_false(fetch_status_transient(FETCH_HTTP_ERROR, 404));
    assert_false(fetch_status_transient(FETCH_ROBOTS, 0));
    assert_false(fetch_status_transient(FETCH_OK, 200));
    assert_false(fetch_status_transient(FETCH_TOO_LARGE, 200));

    fetch_opts o;
    fetch_opts_default(&o);
    assert_string_equal(o.user_agent, "lvd/0.1 (+https://github.com/lvd-project/lvd; image dataset curation)");
    assert_int_equal(o.concurrency, 64);
    assert_int_equal(o.per_host, 4);
    assert_true(o.max_bytes == (uint64_t)32 << 20);
    assert_int_equal(o.respect_robots, 1);
    assert_int_equal(o.allow_private, 0);
}

static void test_ok_file(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    run r;
    fetch_one(&o, &r, "/files/img.png", NULL);
    res *x = &r.r[0];
    assert_int_equal(x->status, FETCH_OK);
    assert_int_equal(x->http, 200);
    assert_int_equal(x->attempts, 1);
    assert_int_equal(x->len, sizeof g_file);
    assert_memory_equal(x->body, g_file, sizeof g_file);
    assert_string_equal(x->ctype, "image/png");
    assert_string_equal(x->final_url, server_url("/files/img.png"));
    assert_true(x->started > 1.6e9);
    run_free(&r);

    fetch_one(&o, &r, "/files/img.png?type=image/webp", NULL);
    assert_int_equal(r.r[0].status, FETCH_OK);
    assert_string_equal(r.r[0].ctype, "image/webp");
    run_free(&r);
}

static void test_http_errors(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.retries = 2;
    counter_reset();
    run r;
    run_init(&r, 3);
    run_set(&r, 0, "/status/404");
    run_set(&r, 1, "/flaky/a?fail=1");
    run_set(&r, 2, "/flaky/b?fail=10");
    fetch_stats st;
    run_engine(&o, &r, &st);
    /* 404 is final: one request, no retry */
    assert_int_equal(r.r[0].status, FETCH_HTTP_ERROR);
    assert_int_equal(r.r[0].http, 404);
    assert_int_equal(r.r[0].attempts, 1);
    assert_int_equal(count_of("/status/404"), 1);
    /* one 500 then the PNG */
    assert_int_equal(r.r[1].status, FETCH_OK);
    assert_int_equal(r.r[1].attempts, 2);
    assert_int_equal(r.r[1].http, 200);
    assert_int_equal(count_of("/flaky/a"), 2);
    buf png = plain_get("/png");
    assert_int_equal(r.r[1].len, png.n);
    assert_memory_equal(r.r[1].body, png.p, png.n);
    free(png.p);
    /* always 500: 1 + retries requests, then the last status */
    assert_int_equal(r.r[2].status, FETCH_HTTP_ERROR);
    assert_int_equal(r.r[2].http, 500);
    assert_int_equal(r.r[2].attempts, 3);
    assert_int_equal(count_of("/flaky/b"), 3);
    assert_int_equal(st.retries, 1 + 2);
    assert_int_equal(st.robots_fetches, 1);
    assert_int_equal(st.requests, 1 + 1 + 2 + 3);
    run_free(&r);
}

static void test_retry_after(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.retries = 2;
    o.max_retry_after = 5;
    run r;
    run_init(&r, 3);
    run_set(&r, 0, "/ratelimit/s1?after=1");
    run_set(&r, 1, "/ratelimit/d1?after=2&date=1");
    run_set(&r, 2, "/ratelimit/l1?after=100");
    run_engine(&o, &r, NULL);
    /* Retry-After in seconds is honoured (backoff alone would retry within 0.05 s) */
    assert_int_equal(r.r[0].status, FETCH_OK);
    assert_int_equal(r.r[0].attempts, 2);
    assert_true(r.r[0].finished - r.r[0].started >= 0.9);
    /* as an HTTP date 2 s ahead (whole seconds, so at least 1 s from now) */
    assert_int_equal(r.r[1].status, FETCH_OK);
    assert_int_equal(r.r[1].attempts, 2);
    assert_true(r.r[1].finished - r.r[1].started >= 0.9);
    /* longer than max_retry_after: final, and the error says why */
    assert_int_equal(r.r[2].status, FETCH_HTTP_ERROR);
    assert_int_equal(r.r[2].http, 429);
    assert_int_equal(r.r[2].attempts, 1);
    assert_non_null(strstr(r.r[2].error, "Retry-After"));
    assert_true(r.r[2].finished - r.r[2].started < 5);
    run_free(&r);
}

static void test_timeout(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.retries = 0;
    run r;
    run_init(&r, 2);
    run_set(&r, 0, "/slow");
    run_set(&r, 1, "/hang");
    run_engine(&o, &r, NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r.r[i].status, FETCH_TIMEOUT);
        double took = r.r[i].finished - r.r[i].started;
        assert_true(took >= 1.5 && took < 6); /* low-speed 2 s or total 3 s, not the server's 600 s */
    }
    run_free(&r);

    /* a timeout is transient: retried */
    o.retries = 1;
    o.timeout = 1;
    fetch_one(&o, &r, "/hang", NULL);
    assert_int_equal(r.r[0].status, FETCH_TIMEOUT);
    assert_int_equal(r.r[0].attempts, 2);
    run_free(&r);
}

static void test_too_large(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.respect_robots = 0; /* so fetch_stats.bytes counts only the body under test */
    o.max_bytes = 100000;
    run r;
    fetch_stats st;

    /* Content-Length over the cap: refused before any body byte */
    fetch_one(&o, &r, "/big?n=300000&cl=1", &st);
    assert_int_equal(r.r[0].status, FETCH_TOO_LARGE);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.requests, 1);
    run_free(&r);

    /* no Content-Length: aborted once the body passes the cap, not read to the end */
    fetch_one(&o, &r, "/big?n=3000000&cl=0", &st);
    assert_int_equal(r.r[0].status, FETCH_TOO_LARGE);
    assert_true(st.bytes > 100000 - 65536 && st.bytes < 1000000);
    run_free(&r);

    /* exactly at the cap is fine, and the bytes are the server's */
    fetch_one(&o, &r, "/big?n=100000&cl=0", &st);
    assert_int_equal(r.r[0].status, FETCH_OK);
    assert_int_equal(r.r[0].len, 100000);
    assert_int_equal(st.bytes, 100000);
    for (size_t i = 0; i < 100000; i++)
        if (r.r[0].body[i] != 0xab)
            fail_msg("byte %zu differs", i);
    run_free(&r);
}

static void test_redirects(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.max_redirects = 5;
    counter_reset();
    run r;
    run_init(&r, 3);
    run_set(&r, 0, "/redirect/3");
    run_set(&r, 1, "/loop");
    run_set(&r, 2, "/tofile");
    fetch_stats st;
    run_engine(&o, &r, &st);
    /* three hops (relative and absolute Locations), one attempt */
    assert_int_equal(r.r[0].status, FETCH_OK);
    assert_int_equal(r.r[0].attempts, 1);
    assert_string_equal(r.r[0].final_url, server_url("/redirect/0"));
    assert_int_equal(count_of("/redirect/1"), 1);
    assert_int_equal(count_of("/redirect/0"), 1);
    /* the loop is cut after max_redirects hops: the first request plus 5 followed */
    assert_int_equal(r.r[1].status, FETCH_TOO_MANY_REDIRECTS);
    assert_int_equal(r.r[1].http, 302);
    assert_int_equal(count_of("/loop"), 6);
    /* a redirect to file:// is never followed */
    assert_int_equal(r.r[2].status, FETCH_BAD_SCHEME);
    assert_string_equal(r.r[2].final_url, server_url("/tofile"));
    assert_int_equal(st.requests, 1 + 4 + 6 + 1);
    run_free(&r);

    o.max_redirects = 2;
    fetch_one(&o, &r, "/redirect/3", NULL);
    assert_int_equal(r.r[0].status, FETCH_TOO_MANY_REDIRECTS);
    run_free(&r);

    /* 3xx without Location */
    fetch_one(&o, &r, "/status/302", NULL);
    assert_int_equal(r.r[0].status, FETCH_TOO_MANY_REDIRECTS);
    run_free(&r);
}

/* Every hop goes through the same checks as a first request. */
static void test_redirect_hops(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    counter_reset();
    char to_other[256];
    snprintf(to_other, sizeof to_other, "/to?url=http://localhost:%d/png", g_port);
    run r;
    run_init(&r, 4);
    run_set(&r, 0, "/to?url=/private/x");
    run_set(&r, 1, to_other);
    run_set(&r, 2, "/to?url=ftp://example.com/a.png&code=301");
    run_set(&r, 3, "/to?url=http://&code=307");
    fetch_stats st;
    run_engine(&o, &r, &st);
    /* robots.txt of the target decides, and the disallowed path is never requested */
    assert_int_equal(r.r[0].status, FETCH_ROBOTS);
    assert_int_equal(count_of("/private/x"), 0);
    /* another host: its own robots.txt first */
    assert_int_equal(r.r[1].status, FETCH_OK);
    char want[128];
    snprintf(want, sizeof want, "http://localhost:%d/png", g_port);
    assert_string_equal(r.r[1].final_url, want);
    assert_int_equal(st.robots_fetches, 2);
    assert_int_equal(count_of("/robots.txt"), 2);
    assert_int_equal(r.r[2].status, FETCH_BAD_SCHEME);
    assert_int_equal(r.r[2].http, 301);
    assert_int_equal(r.r[3].status, FETCH_TOO_MANY_REDIRECTS); /* no usable Location */
    run_free(&r);
}

static void test_xrobots(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    struct {
        const char *path;
        fetch_status want;
    } cases[] = {
        {"/noai", FETCH_OPTED_OUT},
        {"/xrobots?v=noimageai", FETCH_OPTED_OUT},
        {"/xrobots?v=NoIndex", FETCH_OPTED_OUT},
        {"/xrobots?v=noimageindex", FETCH_OPTED_OUT},
        {"/xrobots?v=nofollow,%20noarchive", FETCH_OK},
        {"/xrobots?v=nofollow&v=noai", FETCH_OPTED_OUT},      /* second header line */
        {"/xrobots?v=otherbot:%20noai", FETCH_OK},            /* for another agent */
        {"/xrobots?v=lvd:%20noai", FETCH_OPTED_OUT},          /* for us by product token */
        {"/xrobots", FETCH_OK},
    };
    size_t n = sizeof cases / sizeof cases[0];
    run r;
    run_init(&r, n);
    for (size_t i = 0; i < n; i++)
        run_set(&r, i, cases[i].path);
    run_engine(&o, &r, NULL);
    for (size_t i = 0; i < n; i++) {
        if (r.r[i].status != cases[i].want)
            fail_msg("%s: got %s, want %s", cases[i].path, fetch_status_name(r.r[i].status),
                     fetch_status_name(cases[i].want));
    }
    run_free(&r);

    o.respect_xrobots = 0;
    fetch_one(&o, &r, "/noai", NULL);
    assert_int_equal(r.r[0].status, FETCH_OK);
    run_free(&r);
}

static void test_robots(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    counter_reset();
    enum { N = 40 };
    run r;
    run_init(&r, N);
    char p[64];
    for (int i = 0; i < N; i++) {
        snprintf(p, sizeof p, i % 4 == 0 ? "/private/%d" : "/png?i=%d", i);
        run_set(&r, (size_t)i, p);
    }
    fetch_stats st;
    run_engine(&o, &r, &st);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r.r[i].status, i % 4 == 0 ? FETCH_ROBOTS : FETCH_OK);
        if (i % 4 == 0) {
            assert_int_equal(r.r[i].attempts, 0);
            assert_null(r.r[i].final_url);
        }
    }
    /* one robots.txt for the host, and disallowed paths never requested */
    assert_int_equal(count_of("/robots.txt"), 1);
    assert_int_equal(st.robots_fetches, 1);
    assert_int_equal(count_of("/png"), N - N / 4);
    assert_int_equal(count_of("/private/0"), 0);
    run_free(&r);

    o.respect_robots = 0;
    counter_reset();
    fetch_one(&o, &r, "/private/x", NULL);
    assert_int_equal(r.r[0].status, FETCH_OK);
    assert_int_equal(count_of("/robots.txt"), 0);
    run_free(&r);
}

static void test_empty(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    run r;
    fetch_one(&o, &r, "/empty", NULL);
    assert_int_equal(r.r[0].status, FETCH_EMPTY);
    assert_int_equal(r.r[0].http, 200);
    run_free(&r);
}

static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

static void test_network_failures(void **state)
{
    (void)state;
    char closed[128];
    snprintf(closed, sizeof closed, "http://127.0.0.1:%d/x.png", closed_port());
    for (int robots = 0; robots <= 1; robots++) {
        fetch_opts o;
        test_opts(&o);
        o.respect_robots = robots;
        o.retries = 1;
        run r;
        run_init(&r, 2);
        run_set(&r, 0, "http://nonexistent.invalid/x.png");
        run_set(&r, 1, closed);
        run_engine(&o, &r, NULL);
        assert_int_equal(r.r[0].status, FETCH_DNS);
        assert_int_equal(r.r[1].status, FETCH_CONNECT);
        if (!robots)
            assert_int_equal(r.r[1].attempts, 2); /* refused is transient: retried once */
        assert_non_null(strstr(r.r[0].error, "nonexistent.invalid"));
        run_free(&r);
    }
}

static void test_blocked_address(void **state)
{
    (void)state;
    for (int robots = 0; robots <= 1; robots++) {
        fetch_opts o;
        test_opts(&o);
        o.allow_private = 0;
        o.respect_robots = robots;
        counter_reset();
        run r;
        run_init(&r, 2);
        run_set(&r, 0, "/png");
        char u[128];
        snprintf(u, sizeof u, "http://localhost:%d/png", g_port);
        run_set(&r, 1, u);
        run_engine(&o, &r, NULL);
        assert_non_null(strstr(r.r[0].error, "127.0.0.1"));
        for (int i = 0; i < 2; i++) {
            assert_int_equal(r.r[i].status, FETCH_BLOCKED_ADDRESS);
            /* "localhost" also resolves to ::1: either refused address may be named */
            assert_true(strstr(r.r[i].error, "127.0.0.1") || (i == 1 && strstr(r.r[i].error, "::1")));
            assert_non_null(strstr(r.r[i].error, "loopback"));
        }
        /* nothing reached the server */
        assert_int_equal(count_of("/png"), 0);
        assert_int_equal(count_of("/robots.txt"), 0);
        run_free(&r);
    }
}

static void test_bad_scheme_input(void **state)
{
    (void)state;
    const char *urls[] = {"ftp://example.com/a.png", "file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=",
                          "example.com/a.png", "javascript:alert(1)"};
    size_t n = sizeof urls / sizeof urls[0];
    fetch_opts o;
    test_opts(&o);
    run r;
    run_init(&r, n);
    for (size_t i = 0; i < n; i++)
        run_set(&r, i, urls[i]);
    fetch_stats st;
    run_engine(&o, &r, &st);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r.r[i].status, FETCH_BAD_SCHEME);
        assert_int_equal(r.r[i].attempts, 0);
        assert_null(r.r[i].final_url);
    }
    assert_int_equal(st.requests, 0);
    run_free(&r);
}

/* Four URLs on one host; returns the seconds between the first and the last request start. */
static double start_span(const fetch_opts *o, int port)
{
    run r;
    run_init(&r, 4);
    char u[128];
    for (int i = 0; i < 4; i++) {
        snprintf(u, sizeof u, "http://127.0.0.1:%d/png?c=%d", port, i);
        run_set(&r, (size_t)i, u);
    }
    run_engine(o, &r, NULL);
    double first = 1e300, last = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r.r[i].status, FETCH_OK);
        if (r.r[i].started < first)
            first = r.r[i].started;
        if (r.r[i].started > last)
            last = r.r[i].started;
    }
    run_free(&r);
    return last - first;
}

static void test_crawl_delay(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/robots.txt", g_tmp);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("User-agent: *\nCrawl-delay: 0.4\nDisallow: /private/\n", f);
    fclose(f);
    int port = 0;
    pid_t pid = spawn_server(path, &port);
    assert_true(pid > 0);
    fetch_opts o;
    test_opts(&o);
    double span = start_span(&o, port); /* Crawl-delay 0.4 s: three gaps */
    o.max_crawl_delay = 0.05;
    double capped = start_span(&o, port);
    stop_server(pid);
    unlink(path);
    assert_true(span >= 3 * 0.4 * 0.95);
    assert_true(capped < 3 * 0.4 * 0.8);
}

static void test_host_interval(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.respect_robots = 0;
    o.host_interval = 0.3;
    assert_true(start_span(&o, g_port) >= 3 * 0.3 * 0.95); /* four starts on one host, 0.3 s apart */
}

/* per_host 1: each request on the host starts only after the previous one (200 ms) ended. The server's
 * concurrency counter alone cannot show this, as libcurl's per-host connection cap would queue them too. */
static void test_per_host_serialises(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.respect_robots = 0;
    o.per_host = 1;
    counter_reset();
    run r;
    run_init(&r, 4);
    char u[64];
    for (int i = 0; i < 4; i++) {
        snprintf(u, sizeof u, "/delay/200?s=%d", i);
        run_set(&r, (size_t)i, u);
    }
    run_engine(&o, &r, NULL);
    double first = 1e300, last = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r.r[i].status, FETCH_OK);
        if (r.r[i].started < first)
            first = r.r[i].started;
        if (r.r[i].started > last)
            last = r.r[i].started;
    }
    assert_true(last - first >= 3 * 0.2 * 0.95);
    char h[64];
    snprintf(h, sizeof h, "127.0.0.1:%d", g_port);
    assert_int_equal(max_concurrent(h), 1);
    run_free(&r);
}

static void test_many_jobs(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.concurrency = 8;
    o.per_host = 3;
    counter_reset();
    enum { N = 500 };
    run r;
    run_init(&r, N);
    char p[128];
    for (int i = 0; i < N; i++) {
        const char *hostname = i % 2 ? "localhost" : "127.0.0.1";
        if (i % 10 == 3)
            snprintf(p, sizeof p, "http://%s:%d/status/404?i=%d", hostname, g_port, i);
        else
            snprintf(p, sizeof p, "http://%s:%d/delay/10?i=%d", hostname, g_port, i);
        run_set(&r, (size_t)i, p);
    }
    fetch_stats st;
    run_engine(&o, &r, &st); /* asserts every id delivered exactly once */
    for (int i = 0; i < N; i++) {
        if (i % 10 == 3) {
            assert_int_equal(r.r[i].status, FETCH_HTTP_ERROR);
            assert_int_equal(r.r[i].http, 404);
        } else {
            assert_int_equal(r.r[i].status, FETCH_OK);
        }
    }
    char h1[64], h2[64];
    snprintf(h1, sizeof h1, "127.0.0.1:%d", g_port);
    snprintf(h2, sizeof h2, "localhost:%d", g_port);
    long m1 = max_concurrent(h1), m2 = max_concurrent(h2);
    assert_true(m1 <= 3 && m2 <= 3); /* per_host never exceeded */
    assert_true(m1 >= 2 && m2 >= 2); /* and the engine does run transfers in parallel */
    assert_int_equal(st.robots_fetches, 2);
    assert_int_equal(count_of("/delay/10"), N - N / 10);
    /* the feed is pulled lazily: at most 2 * concurrency parked plus concurrency running */
    assert_true(r.max_held <= 3 * 8);
    run_free(&r);
}

static void test_abort(void **state)
{
    (void)state;
    fetch_opts o;
    test_opts(&o);
    o.concurrency = 2;
    enum { N = 30 };
    run r;
    run_init(&r, N);
    char p[64];
    for (int i = 0; i < N; i++) {
        snprintf(p, sizeof p, "/png?a=%d", i);
        run_set(&r, (size_t)i, p);
    }
    r.abort_after = 3;
    fetch_engine *e = NULL;
    assert_int_equal(fetch_engine_new(&e, &o), 0);
    assert_int_equal(fetch_engine_run(e, feed_cb, done_cb, &r), -1);
    assert_int_equal(r.delivered, 3); /* nothing after the callback said stop */
    fetch_engine_free(e);
    run_free(&r);

    /* the feed aborting */
    run_init(&r, 5);
    for (int i = 0; i < 5; i++)
        run_set(&r, (size_t)i, "/png");
    r.feed_fail_at = 2;
    assert_int_equal(fetch_engine_new(&e, &o), 0);
    assert_int_equal(fetch_engine_run(e, feed_cb, done_cb, &r), -1);
    assert_string_equal(lvd_errmsg(), "feed: broken list at 2"); /* the feed's own message survives */
    assert_true(r.delivered <= 2);
    fetch_engine_free(e);
    run_free(&r);

    /* invalid options are refused with a message */
    o.concurrency = 0;
    assert_int_equal(fetch_engine_new(&e, &o), -1);
    assert_null(e);
    assert_non_null(strstr(lvd_errmsg(), "concurrency"));
}

int main(int argc, char **argv)
{
    snprintf(g_src, sizeof g_src, "%s", argc > 1 ? argv[1] : "../../tests");
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),    cmocka_unit_test(test_ok_file),
        cmocka_unit_test(test_http_errors),     cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_timeout),         cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_redirects),       cmocka_unit_test(test_redirect_hops),
        cmocka_unit_test(test_xrobots),         cmocka_unit_test(test_crawl_delay),
        cmocka_unit_test(test_robots),          cmocka_unit_test(test_empty),
        cmocka_unit_test(test_network_failures), cmocka_unit_test(test_blocked_address),
        cmocka_unit_test(test_bad_scheme_input), cmocka_unit_test(test_host_interval),
        cmocka_unit_test(test_per_host_serialises), cmocka_unit_test(test_many_jobs),       cmocka_unit_test(test_abort),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
