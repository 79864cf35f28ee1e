/* test_robots.c — robots.txt matching (RFC 9309 and Google's documented examples), X-Robots-Tag opt-outs,
 * and IP address classification.
 *
 * Expected values come from the texts they cite (RFC 9309 sections 2.2 and 5, Google's robots.txt
 * specification, the IANA special-purpose address registries), transcribed by hand; wildcard matching is
 * also checked against a naive dynamic-programming matcher written here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include "crawl/netaddr.h"
#include "crawl/robots.h"

struct verdict {
    const char *ua;
    const char *path;
    int allowed;
};

/* Parses txt for each row's agent and checks every path; names the failing row. */
static void check_verdicts(const char *txt, const struct verdict *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        robots *r = robots_parse(txt, strlen(txt), rows[i].ua);
        assert_non_null(r);
        int got = robots_allowed(r, rows[i].path);
        robots_free(r);
        if (got != rows[i].allowed)
            fail_msg("agent %s path %s: got %s, want %s", rows[i].ua, rows[i].path,
                     got ? "allowed" : "disallowed", rows[i].allowed ? "allowed" : "disallowed");
    }
}

/* One rule set, one agent, many paths. */
static void check_paths(const char *txt, const char *ua, const char *const *paths, size_t n, int want)
{
    robots *r = robots_parse(txt, strlen(txt), ua);
    assert_non_null(r);
    for (size_t i = 0; i < n; i++)
        if (robots_allowed(r, paths[i]) != want)
            fail_msg("path %s should be %s", paths[i], want ? "allowed" : "disallowed");
    robots_free(r);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* RFC 9309 5.1: each named agent uses only its own group, barbot/bazbot share one, quxbot's empty group
 * allows everything, and every other agent gets the "*" group. */
static void test_rfc9309_simple_example(void **state)
{
    (void)state;
    static const char txt[] = "User-Agent: *\n"
                              "Disallow: *.gif$\n"
                              "Disallow: /example/\n"
                              "Allow: /publications/\n"
                              "\n"
                              "User-Agent: foobot\n"
                              "Disallow:/\n"
                              "Allow:/example/page.html\n"
                              "Allow:/example/allowed.gif\n"
                              "\n"
                              "User-Agent: barbot\n"
                              "User-Agent: bazbot\n"
                              "Disallow: /example/page.html\n"
                              "\n"
                              "User-Agent: quxbot\n"
                              "\n"
                              "EOF\n";
    static const struct verdict rows[] = {
        {"foobot", "/example/page.html", 1},
        {"foobot", "/example/allowed.gif", 1},
        {"foobot", "/example/other.html", 0},
        {"foobot", "/", 0},
        {"foobot", "/publications/", 0}, /* the "*" group does not apply to foobot */
        {"barbot", "/example/page.html", 0},
        {"bazbot", "/example/page.html", 0},
        {"barbot", "/example/other.html", 1},
        {"bazbot", "/image.gif", 1},
        {"quxbot", "/example/page.html", 1},
        {"quxbot", "/image.gif", 1},
        {"otherbot/2.0", "/image.gif", 0},
        {"otherbot/2.0", "/dir/image.gif", 0},
        {"otherbot/2.0", "/image.gif?size=2", 1}, /* '$' anchors the end */
        {"otherbot/2.0", "/example/", 0},
        {"otherbot/2.0", "/example/page.html", 0},
        {"otherbot/2.0", "/publications/list", 1},
        {"otherbot/2.0", "/publications/a.gif", 1}, /* /publications/ is longer than *.gif$ */
        {"otherbot/2.0", "/", 1},
    };
    check_verdicts(txt, rows, N(rows));
}

/* RFC 9309 5.2: the most specific (longest) match wins whatever the order. */
static void test_rfc9309_longest_match(void **state)
{
    (void)state;
    static const char txt[] = "User-Agent: foobot\n"
                              "Allow: /example/page/\n"
                              "Disallow: /example/page/disallowed.gif\n";
    static const struct verdict rows[] = {
        {"foobot", "/example/page/", 1},
        {"foobot", "/example/page/ok.gif", 1},
        {"foobot", "/example/page/disallowed.gif", 0},
        {"foobot", "/example/page/disallowed.gif?x=1", 0},
    };
    check_verdicts(txt, rows, N(rows));
    /* The same rules in the other order give the same verdicts. */
    static const char rev[] = "User-Agent: foobot\n"
                              "Disallow: /example/page/disallowed.gif\n"
                              "Allow: /example/page/\n";
    check_verdicts(rev, rows, N(rows));
}

/* RFC 9309 2.2.2 and 2.2.3: percent-encoding and the special characters. */
static void test_rfc9309_encoding_and_special_chars(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *path;
        int match;
    } rows[] = {
        {"/foo/bar?baz=quz", "/foo/bar?baz=quz", 1},
        {"/foo/bar/\xE3\x83\x84", "/foo/bar/%E3%83%84", 1}, /* UTF-8 in the file, encoded in the URL */
        {"/foo/bar/%E3%83%84", "/foo/bar/%E3%83%84", 1},
        {"/foo/bar/%e3%83%84", "/foo/bar/%E3%83%84", 1}, /* hex case does not matter */
        {"/foo/bar/%E3%83%84", "/foo/bar/\xE3\x83\x84", 1},
        {"/foo/bar/%62%61%7A", "/foo/bar/baz", 1}, /* unreserved characters decode */
        {"/foo/bar/baz", "/foo/bar/%62%61%7a", 1},
        {"/%7Euser/", "/~user/x", 1},
        {"/a%2Fb", "/a/b", 0}, /* '/' is reserved: %2F is not the same path */
        {"/path/file-with-a-%2A.html", "/path/file-with-a-*.html", 1},
        {"/path/file-with-a-%2A.html", "/path/file-with-a-x.html", 0},
        {"/path/foo-%24", "/path/foo-$", 1},
        {"/this/path/exactly$", "/this/path/exactly", 1},
        {"/this/path/exactly$", "/this/path/exactly/", 0},
        {"/this/*/exactly", "/this/any/thing/exactly", 1},
        {"/this/*/exactly", "/this/exactly", 0},
        {"/a$b", "/a$b/c", 1}, /* a '$' that is not last is literal */
        {"/a$b", "/ab", 0},
    };
    for (size_t i = 0; i < N(rows); i++) {
        char txt[256];
        snprintf(txt, sizeof txt, "User-agent: *\nDisallow: %s\n", rows[i].pattern);
        robots *r = robots_parse(txt, strlen(txt), "lvd/1.0");
        assert_non_null(r);
        if (robots_allowed(r, rows[i].path) != !rows[i].match)
            fail_msg("pattern %s vs path %s: want %s", rows[i].pattern, rows[i].path,
                     rows[i].match ? "match" : "no match");
        robots_free(r);
    }
}

/* Google's robots.txt specification, "Order of precedence for rules". */
static void test_google_precedence(void **state)
{
    (void)state;
    static const struct {
        const char *rules, *path;
        int allowed;
    } rows[] = {
        {"Allow: /p\nDisallow: /\n", "/page", 1},
        {"Allow: /folder\nDisallow: /folder\n", "/folder/page", 1},
        {"Allow: /page\nDisallow: /*.htm\n", "/page.htm", 0},
        {"Allow: /page\nDisallow: /*.ph\n", "/page.php5", 1},
        {"Allow: /$\nDisallow: /\n", "/", 1},
        {"Allow: /$\nDisallow: /\n", "/page.htm", 0},
        {"Allow: /$\nDisallow: /\n", "/page", 0},
    };
    for (size_t i = 0; i < N(rows); i++) {
        char txt[256];
        snprintf(txt, sizeof txt, "User-agent: *\n%s", rows[i].rules);
        robots *r = robots_parse(txt, strlen(txt), "lvd");
        assert_non_null(r);
        if (robots_allowed(r, rows[i].path) != rows[i].allowed)
            fail_msg("rules {%s} path %s: want %s", rows[i].rules, rows[i].path,
                     rows[i].allowed ? "allowed" : "disallowed");
        robots_free(r);
    }
}

/* Google's robots.txt specification, "URL matching based on path values". */
static void test_google_path_matching(void **state)
{
    (void)state;
    static const struct {
        const char *pattern;
        const char *match[8];
        const char *nomatch[6];
    } rows[] = {
        {"/fish",
         {"/fish", "/fish.html", "/fish/salmon.html", "/fishheads", "/fishheads/yummy.html", "/fish.php?id=anything"},
         {"/Fish.asp", "/catfish", "/?id=fish", "/desert/fish"}},
        {"/fish*",
         {"/fish", "/fish.html", "/fish/salmon.html", "/fishheads", "/fishheads/yummy.html", "/fish.php?id=anything"},
         {"/Fish.asp", "/catfish", "/?id=fish", "/desert/fish"}},
        {"/fish/",
         {"/fish/", "/fish/?id=anything", "/fish/salmon.htm"},
         {"/fish", "/fish.html", "/animals/fish/", "/Fish/Salmon.asp"}},
        {"/*.php",
         {"/index.php", "/filename.php", "/folder/filename.php", "/folder/filename.php?parameters",
          "/folder/any.php.file.html", "/filename.php/"},
         {"/", "/windows.PHP"}},
        {"/*.php$",
         {"/filename.php", "/folder/filename.php"},
         {"/filename.php?parameters", "/filename.php/", "/filename.php5", "/windows.PHP"}},
        {"/fish*.php",
         {"/fish.php", "/fishheads/catfish.php?parameters"},
         {"/Fish.PHP"}},
        {"/", {"/", "/anything/at/all"}, {NULL}},
        {"/*", {"/", "/anything/at/all"}, {NULL}},
        {"/$", {"/"}, {"/x", "/?q=1"}},
    };
    for (size_t i = 0; i < N(rows); i++) {
        char txt[128];
        snprintf(txt, sizeof txt, "User-agent: *\nDisallow: %s\n", rows[i].pattern);
        size_t nm = 0, nn = 0;
        while (nm < N(rows[i].match) && rows[i].match[nm])
            nm++;
        while (nn < N(rows[i].nomatch) && rows[i].nomatch[nn])
            nn++;
        check_paths(txt, "lvd", rows[i].match, nm, 0);
        check_paths(txt, "lvd", rows[i].nomatch, nn, 1);
    }
}

/* Group selection by product token: case-insensitive, the token of our User-Agent is what precedes '/',
 * a group line's token is what precedes non-token characters, a specific group replaces "*". */
static void test_agent_selection(void **state)
{
    (void)state;
    static const char txt[] = "User-agent: *\n"
                              "Disallow: /\n"
                              "\n"
                              "User-agent: LVD/2.0\n" /* version suffix on the group line is ignored */
                              "Disallow: /private/\n"
                              "\n"
                              "user-AGENT: lvdbot\n"
                              "Disallow: /lvdbot-only/\n"
                              "\n"
                              "User-agent: emptybot\n"
                              "Crawl-delay: 1\n";
    static const struct verdict rows[] = {
        {"lvd/0.1 (+https://example.org/bot)", "/public", 1}, /* overrides "Disallow: /" of "*" */
        {"lvd/0.1 (+https://example.org/bot)", "/private/x", 0},
        {"LvD", "/public", 1},
        {"lvd", "/lvdbot-only/x", 1}, /* "lvdbot" is another agent, not a prefix match for "lvd" */
        {"lvdbot/3", "/lvdbot-only/x", 0},
        {"lvdbot/3", "/private/x", 1},
        {"lv", "/public", 0}, /* neither group names "lv": "*" applies */
        {"otherbot", "/public", 0},
        {"", "/public", 0},
        {"emptybot", "/anything", 1}, /* a named group without rules allows all */
    };
    check_verdicts(txt, rows, N(rows));

    /* Without a "*" group and without our group there are no rules. */
    static const char only_other[] = "User-agent: otherbot\nDisallow: /\n";
    static const struct verdict rows2[] = {{"lvd", "/x", 1}, {"otherbot", "/x", 0}};
    check_verdicts(only_other, rows2, N(rows2));

    /* A NULL user agent gets the "*" group. */
    robots *r = robots_parse(txt, strlen(txt), NULL);
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/public"), 0);
    robots_free(r);
}

/* Groups naming the same agent merge; consecutive user-agent lines form one group; a user-agent line
 * after rules starts a new group. */
static void test_group_merge(void **state)
{
    (void)state;
    static const char txt[] = "User-agent: lvd\n"
                              "Disallow: /a/\n"
                              "\n"
                              "User-agent: *\n"
                              "Disallow: /star/\n"
                              "\n"
                              "User-agent: LVD\n"
                              "Disallow: /b/\n"
                              "Allow: /a/open/\n"
                              "\n"
                              "User-agent: first\n"
                              "User-agent: lvd\n"
                              "Disallow: /c/\n"
                              "User-agent: second\n" /* after a rule: a new group without lvd */
                              "Disallow: /d/\n";
    static const struct verdict rows[] = {
        {"lvd", "/a/x", 0},
        {"lvd", "/b/x", 0},
        {"lvd", "/a/open/x", 1}, /* an Allow from the second group beats a Disallow from the first */
        {"lvd", "/c/x", 0},
        {"lvd", "/d/x", 1},
        {"lvd", "/star/x", 1}, /* "*" is not merged in */
        {"first", "/c/x", 0},
        {"first", "/a/x", 1},
        {"second", "/d/x", 0},
        {"second", "/c/x", 1},
    };
    check_verdicts(txt, rows, N(rows));
}

/* CR, LF and CRLF line ends, a UTF-8 BOM, comments, whitespace and record-name case. */
static void test_syntax(void **state)
{
    (void)state;
    static const char crlf[] = "\xEF\xBB\xBFUser-agent: lvd\r\nDisallow: /x # not part of the path\r\n"
                               "# Disallow: /commented\r\n  DISALLOW :\t/y  \r\n";
    static const char cr[] = "User-agent: lvd\rDisallow: /x\r\rDisallow: /y\r";
    static const char lf[] = "User-agent: lvd\nDisallow: /x\n\nDisallow: /y";
    const char *files[] = {crlf, cr, lf};
    for (size_t i = 0; i < N(files); i++) {
        robots *r = robots_parse(files[i], strlen(files[i]), "lvd");
        assert_non_null(r);
        assert_int_equal(robots_allowed(r, "/x"), 0);
        assert_int_equal(robots_allowed(r, "/x/deeper"), 0);
        assert_int_equal(robots_allowed(r, "/y"), 0);
        assert_int_equal(robots_allowed(r, "/z"), 1);
        assert_int_equal(robots_allowed(r, "/commented"), 1);
        robots_free(r);
    }
    /* Without the BOM handling the first line would read "\xEF\xBB\xBFUser-agent" and be ignored. */
    static const char bom[] = "\xEF\xBB\xBFUser-agent: *\nDisallow: /\n";
    robots *r = robots_parse(bom, strlen(bom), "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/"), 0);
    robots_free(r);
}

/* Files with nothing usable: everything allowed. Rules before any user-agent and empty paths ignored. */
static void test_garbage_and_empty(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "",
        "<html><body><h1>Not Found</h1>Disallow /</body></html>\n",
        "this is not: a robots file\n\x01\x02\x03 : \xff\xfe\nDisallow /\n::::\n",
        "Disallow: /\nAllow: /x\n", /* rules outside any group */
        "User-agent: *\nDisallow:\n",
        "User-agent: *\nDisallow:   # nothing\n",
    };
    for (size_t i = 0; i < N(texts); i++) {
        robots *r = robots_parse(texts[i], strlen(texts[i]), "lvd");
        assert_non_null(r);
        if (!robots_allowed(r, "/") || !robots_allowed(r, "/x/y"))
            fail_msg("text %zu should allow everything", i);
        assert_true(robots_crawl_delay(r) == 0);
        robots_free(r);
    }
    /* Binary content (here a NUL before a rule) is not text: treated as empty. */
    static const char bin[] = "User-agent: *\nDisallow: /\n\0\x1f\x8b";
    robots *r = robots_parse(bin, sizeof bin - 1, "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/x"), 1);
    robots_free(r);
    r = robots_parse(NULL, 0, "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/x"), 1);
    robots_free(r);
}

static void test_allow_all_disallow_all(void **state)
{
    (void)state;
    robots *a = robots_allow_all(), *d = robots_disallow_all();
    assert_non_null(a);
    assert_non_null(d);
    const char *paths[] = {"/", "", "/x", "/x/y?z=1", "/robots.txt.bak"};
    for (size_t i = 0; i < N(paths); i++) {
        assert_int_equal(robots_allowed(a, paths[i]), 1);
        assert_int_equal(robots_allowed(d, paths[i]), 0);
    }
    assert_true(robots_crawl_delay(a) == 0);
    assert_true(robots_crawl_delay(d) == 0);
    robots_free(a);
    robots_free(d);
    robots_free(NULL);
}

/* /robots.txt is always allowed; "" means "/"; queries take part in matching. */
static void test_special_paths(void **state)
{
    (void)state;
    static const char txt[] = "User-agent: *\nDisallow: /$\nDisallow: /robots\nDisallow: /*?\n";
    robots *r = robots_parse(txt, strlen(txt), "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/robots.txt"), 1);
    assert_int_equal(robots_allowed(r, "/robots.txt2"), 0);
    assert_int_equal(robots_allowed(r, ""), 0);
    assert_int_equal(robots_allowed(r, NULL), 0);
    assert_int_equal(robots_allowed(r, "/page"), 1);
    assert_int_equal(robots_allowed(r, "/page?x=1"), 0);
    robots_free(r);
}

static void test_crawl_delay(void **state)
{
    (void)state;
    static const char txt[] = "User-agent: *\n"
                              "Crawl-delay: 7\n"
                              "Disallow: /x\n"
                              "\n"
                              "User-agent: lvd\n"
                              "Crawl-delay: 2.5\n"
                              "Disallow: /y\n"
                              "\n"
                              "User-agent: slowbot\n"
                              "crawl-delay: 0.25 # seconds\n"
                              "User-agent: junkbot\n"
                              "Crawl-delay: soon\n";
    static const struct {
        const char *ua;
        double delay;
    } rows[] = {{"lvd/1", 2.5}, {"otherbot", 7}, {"slowbot", 0.25}, {"junkbot", 0}};
    for (size_t i = 0; i < N(rows); i++) {
        robots *r = robots_parse(txt, strlen(txt), rows[i].ua);
        assert_non_null(r);
        if (robots_crawl_delay(r) != rows[i].delay)
            fail_msg("%s: crawl-delay %g, want %g", rows[i].ua, robots_crawl_delay(r), rows[i].delay);
        robots_free(r);
    }
}

/* Content past 500 KiB is ignored, and a line cut by the limit is dropped rather than read short. */
static void test_size_limit(void **state)
{
    (void)state;
    const size_t limit = 500 * 1024;
    size_t cap = limit + 4096;
    char *buf = malloc(cap);
    assert_non_null(buf);

    /* Rule A before the limit, then comment padding, then rule B after the limit. */
    size_t n = (size_t)snprintf(buf, cap, "User-agent: *\nDisallow: /early\n");
    static const char pad[] = "# padding padding padding padding padding padding padding padding\n";
    while (n < limit + 100) {
        memcpy(buf + n, pad, sizeof pad - 1);
        n += sizeof pad - 1;
    }
    n += (size_t)snprintf(buf + n, cap - n, "Disallow: /late\n");
    robots *r = robots_parse(buf, n, "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/early"), 0);
    assert_int_equal(robots_allowed(r, "/late"), 1);
    robots_free(r);

    /* The same rule before the limit is honoured. */
    static const char small[] = "User-agent: *\nDisallow: /early\n# padding\nDisallow: /late\n";
    r = robots_parse(small, strlen(small), "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/late"), 0);
    robots_free(r);

    /* "Disallow: /straddle" with the limit falling right after "Disallow: /". */
    n = (size_t)snprintf(buf, cap, "User-agent: *\n");
    const char *line = "Disallow: /straddle\n";
    size_t start = limit - strlen("Disallow: /");
    memset(buf + n, '#', start - n - 1);
    buf[start - 1] = '\n';
    memcpy(buf + start, line, strlen(line));
    n = start + strlen(line);
    r = robots_parse(buf, n, "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/other"), 1);
    robots_free(r);
    free(buf);
}

/* Reference matcher: textbook O(n*m) dynamic programming over (pattern prefix, path prefix). */
static int dp_match(const char *p, const char *q)
{
    size_t m = strlen(p), n = strlen(q);
    int anchored = m > 0 && p[m - 1] == '$';
    if (anchored)
        m--;
    /* row[j]: p[0..i) matches q[0..j) entirely. */
    unsigned char *row = calloc(n + 1, 1), *next = calloc(n + 1, 1);
    assert_non_null(row);
    assert_non_null(next);
    row[0] = 1;
    for (size_t i = 0; i < m; i++) {
        memset(next, 0, n + 1);
        for (size_t j = 0; j <= n; j++) {
            if (p[i] == '*')
                next[j] = row[j] || (j > 0 && next[j - 1]);
            else
                next[j] = j > 0 && row[j - 1] && q[j - 1] == p[i];
        }
        unsigned char *t = row;
        row = next;
        next = t;
    }
    int ok = 0;
    if (anchored)
        ok = row[n];
    else
        for (size_t j = 0; j <= n; j++)
            ok |= row[j];
    free(row);
    free(next);
    return ok;
}

/* Wildcard matching agrees with the reference matcher on random patterns over a small alphabet, where
 * overlaps and backtracking cases are frequent. */
static void test_wildcard_against_reference(void **state)
{
    (void)state;
    static const char alpha[] = "ab/";
    unsigned seed = 12345;
    for (int iter = 0; iter < 20000; iter++) {
        char pat[16], path[20];
        size_t pl = 1, ql = 1;
        pat[0] = path[0] = '/';
        size_t pn = 1 + (size_t)(rand_r(&seed) % 8), qn = (size_t)(rand_r(&seed) % 12);
        while (pl < pn) {
            int k = rand_r(&seed) % 5;
            pat[pl++] = k >= 3 ? '*' : alpha[k];
        }
        if (rand_r(&seed) % 3 == 0)
            pat[pl++] = '$';
        pat[pl] = '\0';
        while (ql < qn + 1)
            path[ql++] = alpha[rand_r(&seed) % 3];
        path[ql] = '\0';

        char txt[64];
        snprintf(txt, sizeof txt, "User-agent: *\nDisallow: %s\n", pat);
        robots *r = robots_parse(txt, strlen(txt), "lvd");
        assert_non_null(r);
        int got = !robots_allowed(r, path);
        robots_free(r);
        int want = strcmp(path, "/robots.txt") != 0 && dp_match(pat, path);
        if (got != want)
            fail_msg("pattern %s path %s: got %d want %d", pat, path, got, want);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "/a*a*...*b" against a long run of 'a' takes exponential time in a backtracking matcher; here it must be
 * quick and still right. */
static void test_pathological_pattern(void **state)
{
    (void)state;
    enum { STARS = 40, LEN = 200000 };
    char pat[2 * STARS + 8], pat_anchored[2 * STARS + 9];
    size_t k = 0;
    pat[k++] = '/';
    for (int i = 0; i < STARS; i++) {
        pat[k++] = 'a';
        pat[k++] = '*';
    }
    pat[k++] = 'b';
    pat[k] = '\0';
    snprintf(pat_anchored, sizeof pat_anchored, "%s$", pat);

    char *path = malloc(LEN + 3);
    assert_non_null(path);
    path[0] = '/';
    memset(path + 1, 'a', LEN);
    path[LEN + 1] = '\0';

    char txt[256];
    double t0 = now_s();
    snprintf(txt, sizeof txt, "User-agent: *\nDisallow: %s\n", pat);
    robots *r = robots_parse(txt, strlen(txt), "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, path), 1); /* no 'b': no match */
    path[LEN + 1] = 'b';
    path[LEN + 2] = '\0';
    assert_int_equal(robots_allowed(r, path), 0);
    robots_free(r);

    snprintf(txt, sizeof txt, "User-agent: *\nDisallow: %s\n", pat_anchored);
    r = robots_parse(txt, strlen(txt), "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, path), 0);  /* ends in 'b' */
    path[LEN + 1] = 'a';
    assert_int_equal(robots_allowed(r, path), 1); /* ends in 'a' */
    robots_free(r);
    /* Fewer 'a' than the pattern needs. */
    snprintf(txt, sizeof txt, "User-agent: *\nDisallow: %s\n", pat);
    r = robots_parse(txt, strlen(txt), "lvd");
    assert_non_null(r);
    assert_int_equal(robots_allowed(r, "/aaaab"), 1);
    robots_free(r);
    double dt = now_s() - t0;
    free(path);
    if (dt > 1.0)
        fail_msg("pathological pattern took %.3f s", dt);
}

static void test_xrobots(void **state)
{
    (void)state;
    static const struct {
        const char *value, *ua;
        int out;
    } rows[] = {
        {"noai", "lvd/0.1 (+https://example.org/bot)", 1},
        {"noimageai", "lvd", 1},
        {"noindex", "lvd", 1},
        {"noimageindex", "lvd", 1},
        {"none", "lvd", 1},
        {"NOAI", "lvd", 1},
        {"  NoImageIndex\t ", "lvd", 1},
        {"nofollow", "lvd", 0},
        {"noarchive", "lvd", 0},
        {"nofollow, noarchive, nosnippet", "lvd", 0},
        {"all", "lvd", 0},
        {"", "lvd", 0},
        {"nofollow,noindex", "lvd", 1},
        {"noindexing", "lvd", 0},
        {"googlebot: noindex", "lvd", 0},
        {"otherbot: noai", "lvd", 0},
        {"lvd: noai", "lvd/1.0", 1},
        {"LVD:NoAI", "lvd", 1},
        {"lvdbot: noai", "lvd", 0},
        {"*: noai", "lvd", 1},
        {"googlebot: noindex, lvd: noai", "lvd", 1},
        {"lvd: noai, googlebot: nofollow", "lvd", 1},
        {"lvd: nofollow, googlebot: noindex", "lvd", 0},
        {"googlebot: nofollow, noindex", "lvd", 0}, /* noindex is still in googlebot's section */
        {"noindex, googlebot: nofollow", "lvd", 1},
        {"googlebot: noindex", "googlebot/2.1", 1},
        {"unavailable_after: 25 Jun 2010 15:00:00 PST", "lvd", 0},
        {"unavailable_after: Sunday, 01-Nov-2020 15:00:00 PST, noai", "lvd", 1},
        {"max-image-preview: none", "lvd", 0}, /* "none" here is the preview size, not the directive */
        {"lvd: max-image-preview: none", "lvd", 0},
        {"noai", NULL, 1},
        {"lvd: noai", NULL, 0},
    };
    for (size_t i = 0; i < N(rows); i++)
        if (xrobots_opted_out(rows[i].value, rows[i].ua) != rows[i].out)
            fail_msg("X-Robots-Tag \"%s\" for %s: want %s", rows[i].value, rows[i].ua ? rows[i].ua : "(null)",
                     rows[i].out ? "opted out" : "not opted out");
    assert_int_equal(xrobots_opted_out(NULL, "lvd"), 0);
}

static void test_netaddr_text(void **state)
{
    (void)state;
    static const struct {
        const char *ip;
        addr_class cls;
    } rows[] = {
        {"0.0.0.0", ADDR_UNSPECIFIED},
        {"0.1.2.3", ADDR_UNSPECIFIED},
        {"127.0.0.1", ADDR_LOOPBACK},
        {"127.255.255.254", ADDR_LOOPBACK},
        {"10.0.0.1", ADDR_PRIVATE},
        {"10.255.255.255", ADDR_PRIVATE},
        {"172.16.0.1", ADDR_PRIVATE},
        {"172.31.255.255", ADDR_PRIVATE},
        {"172.15.255.255", ADDR_PUBLIC},
        {"172.32.0.0", ADDR_PUBLIC},
        {"192.168.1.1", ADDR_PRIVATE},
        {"192.169.0.1", ADDR_PUBLIC},
        {"100.64.0.1", ADDR_PRIVATE},
        {"100.127.255.255", ADDR_PRIVATE},
        {"100.63.255.255", ADDR_PUBLIC},
        {"100.128.0.0", ADDR_PUBLIC},
        {"169.254.169.254", ADDR_LINK_LOCAL},
        {"169.253.255.255", ADDR_PUBLIC},
        {"224.0.0.1", ADDR_MULTICAST},
        {"239.255.255.250", ADDR_MULTICAST},
        {"240.0.0.1", ADDR_RESERVED},
        {"255.255.255.255", ADDR_RESERVED},
        {"192.0.0.8", ADDR_RESERVED},
        {"192.0.2.1", ADDR_RESERVED},
        {"192.0.3.1", ADDR_PUBLIC},
        {"198.18.0.1", ADDR_RESERVED},
        {"198.19.255.255", ADDR_RESERVED},
        {"198.20.0.0", ADDR_PUBLIC},
        {"198.51.100.7", ADDR_RESERVED},
        {"203.0.113.9", ADDR_RESERVED},
        {"8.8.8.8", ADDR_PUBLIC},
        {"93.184.216.34", ADDR_PUBLIC},
        {"223.255.255.255", ADDR_PUBLIC},
        {"::", ADDR_UNSPECIFIED},
        {"::1", ADDR_LOOPBACK},
        {"fe80::1", ADDR_LINK_LOCAL},
        {"febf:ffff::1", ADDR_LINK_LOCAL},
        {"fe80::1%eth0", ADDR_LINK_LOCAL},
        {"fc00::1", ADDR_PRIVATE},
        {"fd12:3456:789a::1", ADDR_PRIVATE},
        {"fe00::1", ADDR_RESERVED},
        {"ff02::1", ADDR_MULTICAST},
        {"ff0e::fb", ADDR_MULTICAST},
        {"2001:db8::1", ADDR_RESERVED},
        {"2001:db9::1", ADDR_PUBLIC},
        {"2606:4700:4700::1111", ADDR_PUBLIC},
        {"2a00:1450:4001:82a::200e", ADDR_PUBLIC},
        {"4000::1", ADDR_RESERVED},
        {"::ffff:127.0.0.1", ADDR_LOOPBACK},
        {"::ffff:10.1.2.3", ADDR_PRIVATE},
        {"::ffff:169.254.169.254", ADDR_LINK_LOCAL},
        {"::ffff:8.8.8.8", ADDR_PUBLIC},
        {"::ffff:c0a8:101", ADDR_PRIVATE}, /* 192.168.1.1 written in hex */
        {"::127.0.0.1", ADDR_LOOPBACK},    /* IPv4-compatible */
        {"::8.8.8.8", ADDR_PUBLIC},
        {"::0.0.0.2", ADDR_UNSPECIFIED},
        {"64:ff9b::10.0.0.1", ADDR_PRIVATE},
        {"64:ff9b::7f00:1", ADDR_LOOPBACK},
        {"64:ff9b::8.8.8.8", ADDR_PUBLIC},
        {"64:ff9b::224.0.0.1", ADDR_MULTICAST},
        {"2002:c0a8:101::1", ADDR_PRIVATE}, /* 6to4 of 192.168.1.1 */
        {"2002:7f00:1::", ADDR_LOOPBACK},
        {"2002:a9fe:a9fe::1", ADDR_LINK_LOCAL},
        {"2002:808:808::1", ADDR_PUBLIC},
        {"", ADDR_INVALID},
        {"localhost", ADDR_INVALID},
        {"1.2.3", ADDR_INVALID},
        {"256.1.1.1", ADDR_INVALID},
        {"1.2.3.4%eth0", ADDR_INVALID},
        {"[::1]", ADDR_INVALID},
        {"fe80::1%", ADDR_INVALID},
        {"::ffff:1.2.3.4.5", ADDR_INVALID},
        {"1:2:3:4:5:6:7:8:9", ADDR_INVALID},
    };
    for (size_t i = 0; i < N(rows); i++) {
        addr_class got = addr_classify_text(rows[i].ip);
        if (got != rows[i].cls)
            fail_msg("%s: got %s, want %s", rows[i].ip, addr_class_name(got), addr_class_name(rows[i].cls));
    }
    assert_int_equal(addr_classify_text(NULL), ADDR_INVALID);
}

static void test_netaddr_sockaddr(void **state)
{
    (void)state;
    static const struct {
        uint32_t v4; /* host order */
        addr_class cls;
    } v4[] = {
        {0x0A000001u, ADDR_PRIVATE},    /* 10.0.0.1 */
        {0x7F000001u, ADDR_LOOPBACK},   /* 127.0.0.1 */
        {0xA9FEA9FEu, ADDR_LINK_LOCAL}, /* 169.254.169.254 */
        {0x08080808u, ADDR_PUBLIC},     /* 8.8.8.8 */
        {0xFFFFFFFFu, ADDR_RESERVED},   /* 255.255.255.255 */
        {0x00000000u, ADDR_UNSPECIFIED},
    };
    for (size_t i = 0; i < N(v4); i++) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_port = htons(443);
        sin.sin_addr.s_addr = htonl(v4[i].v4);
        if (addr_classify((const struct sockaddr *)&sin) != v4[i].cls)
            fail_msg("sockaddr_in %08x: want %s", (unsigned)v4[i].v4, addr_class_name(v4[i].cls));
    }

    static const struct {
        uint8_t b[16];
        addr_class cls;
    } v6[] = {
        {{0}, ADDR_UNSPECIFIED},
        {{[15] = 1}, ADDR_LOOPBACK},
        {{0xfe, 0x80, [15] = 1}, ADDR_LINK_LOCAL},
        {{0xfd, 0x00, [15] = 1}, ADDR_PRIVATE},
        {{0xff, 0x02, [15] = 1}, ADDR_MULTICAST},
        {{0x20, 0x01, 0x0d, 0xb8, [15] = 1}, ADDR_RESERVED},
        {{0x26, 0x06, 0x47, 0x00, [15] = 1}, ADDR_PUBLIC},
        {{[10] = 0xff, [11] = 0xff, [12] = 10, [13] = 0, [14] = 0, [15] = 1}, ADDR_PRIVATE},     /* mapped */
        {{[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1}, ADDR_LOOPBACK},                      /* mapped */
        {{0x00, 0x64, 0xff, 0x9b, [12] = 169, [13] = 254, [14] = 169, [15] = 254}, ADDR_LINK_LOCAL}, /* NAT64 */
        {{0x20, 0x02, 172, 16, 0, 1, [15] = 1}, ADDR_PRIVATE},                                  /* 6to4 */
        {{0x20, 0x02, 8, 8, 4, 4, [15] = 1}, ADDR_PUBLIC},                                      /* 6to4 */
    };
    for (size_t i = 0; i < N(v6); i++) {
        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof sin6);
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(80);
        memcpy(sin6.sin6_addr.s6_addr, v6[i].b, 16);
        if (addr_classify((const struct sockaddr *)&sin6) != v6[i].cls)
            fail_msg("sockaddr_in6 row %zu: want %s", i, addr_class_name(v6[i].cls));
    }

    struct sockaddr_un su;
    memset(&su, 0, sizeof su);
    su.sun_family = AF_UNIX;
    assert_int_equal(addr_classify((const struct sockaddr *)&su), ADDR_INVALID);
    assert_int_equal(addr_classify(NULL), ADDR_INVALID);
}

static void test_netaddr_names(void **state)
{
    (void)state;
    assert_string_equal(addr_class_name(ADDR_PUBLIC), "public");
    assert_string_equal(addr_class_name(ADDR_LOOPBACK), "loopback");
    assert_string_equal(addr_class_name(ADDR_PRIVATE), "private");
    assert_string_equal(addr_class_name(ADDR_LINK_LOCAL), "link-local");
    assert_string_equal(addr_class_name(ADDR_MULTICAST), "multicast");
    assert_string_equal(addr_class_name(ADDR_UNSPECIFIED), "unspecified");
    assert_string_equal(addr_class_name(ADDR_RESERVED), "reserved");
    assert_string_equal(addr_class_name(ADDR_INVALID), "invalid");
    assert_string_equal(addr_class_name((addr_class)99), "invalid");
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc9309_simple_example),
        cmocka_unit_test(test_rfc9309_longest_match),
        cmocka_unit_test(test_rfc9309_encoding_and_special_chars),
        cmocka_unit_test(test_google_precedence),
        cmocka_unit_test(test_google_path_matching),
        cmocka_unit_test(test_agent_selection),
        cmocka_unit_test(test_group_merge),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_garbage_and_empty),
        cmocka_unit_test(test_allow_all_disallow_all),
        cmocka_unit_test(test_special_paths),
        cmocka_unit_test(test_crawl_delay),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_wildcard_against_reference),
        cmocka_unit_test(test_pathological_pattern),
        cmocka_unit_test(test_xrobots),
        cmocka_unit_test(test_netaddr_text),
        cmocka_unit_test(test_netaddr_sockaddr),
        cmocka_unit_test(test_netaddr_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
