/* robots.c — robots.txt (RFC 9309) parsing and matching, X-Robots-Tag opt-outs (see robots.h). */
#include "robots.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9309 2.5: crawlers must parse at least the first 500 KiB; anything after is ignored. */
#define ROBOTS_MAX_BYTES ((size_t)500 * 1024)

/* Crawl-delay values are clamped here so absurd digit strings never become inf. */
#define ROBOTS_MAX_DELAY 1e9

/* One Allow/Disallow rule. The pattern is kept in canonical form (canon() below) in the owning set's text
 * arena, without a final '$'; '*' in it is a wildcard, every literal '*' and '$' is percent-encoded. */
struct rule {
    size_t off;             /* pattern start in rule_set.text */
    size_t len;             /* pattern bytes, excluding the '$' anchor */
    size_t prio;            /* len + anchored: the longer pattern is the more specific (RFC 9309 2.2.2) */
    unsigned char allow;    /* 1 Allow, 0 Disallow */
    unsigned char anchored; /* 1 if the pattern ended in '$': the path must end where the pattern does */
};

/* The rules of every group that applies to one agent class (ours, or "*"), merged. */
struct rule_set {
    struct rule *rules;
    size_t n, cap;
    char *text; /* concatenated canonical patterns, not NUL-terminated */
    size_t text_len, text_cap;
    double crawl_delay; /* seconds; the largest value seen, 0 if none */
    int seen;           /* 1 once any group for this agent class appeared, even with no rules */
};

struct robots {
    struct rule_set set;
};

static void set_free(struct rule_set *s)
{
    free(s->rules);
    free(s->text);
    memset(s, 0, sizeof *s);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f'; }

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return (unsigned)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (unsigned)(c - 'a' + 10);
    return (unsigned)(c - 'A' + 10);
}

/* RFC 3986 2.3 unreserved characters: the only ones whose percent-encoding is equivalent to the literal. */
static int is_unreserved(unsigned c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static char *put_pct(char *o, unsigned c)
{
    static const char hex[] = "0123456789ABCDEF";
    *o++ = '%';
    *o++ = hex[(c >> 4) & 0xf];
    *o++ = hex[c & 0xf];
    return o;
}

/* Writes the canonical form of s[0..n) to out, which must hold 3n bytes; returns the bytes written.
 * Canonical: %XX of an unreserved character is decoded, other %XX get uppercase hex, a '%' not starting an
 * escape becomes %25, bytes outside printable ASCII are encoded, and '$' is encoded. In a path (is_path) a
 * '*' is a literal and is encoded too; in a pattern it stays, as the wildcard. Both sides of a comparison go
 * through here, so "%7Efoo", "~foo" and "%7efoo" are one path, and a pattern's "%2A" matches a path's '*'. */
static size_t canon(const char *s, size_t n, int is_path, char *out)
{
    char *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n && is_hex(s[i + 1]) && is_hex(s[i + 2])) {
            unsigned v = hex_val(s[i + 1]) << 4 | hex_val(s[i + 2]);
            if (is_unreserved(v))
                *o++ = (char)v;
            else
                o = put_pct(o, v);
            i += 2;
        } else if (c == '%' || c <= 0x20 || c >= 0x7f || c == '$' || (is_path && c == '*')) {
            o = put_pct(o, c);
        } else {
            *o++ = (char)c;
        }
    }
    return (size_t)(o - out);
}

/* Appends one rule, value[0..n) as written in the file. Returns -1 when out of memory. */
static int set_add_rule(struct rule_set *s, int allow, const char *value, size_t n)
{
    int anchored = n > 0 && value[n - 1] == '$';
    if (anchored)
        n--;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        struct rule *r = realloc(s->rules, cap * sizeof *r);
        if (!r)
            return -1;
        s->rules = r;
        s->cap = cap;
    }
    if (s->text_cap - s->text_len < 3 * n) {
        size_t cap = s->text_cap ? s->text_cap : 1024;
        while (cap - s->text_len < 3 * n)
            cap *= 2;
        char *t = realloc(s->text, cap);
        if (!t)
            return -1;
        s->text = t;
        s->text_cap = cap;
    }
    struct rule *r = &s->rules[s->n++];
    r->off = s->text_len;
    r->len = canon(value, n, 0, s->text + s->text_len);
    r->prio = r->len + (size_t)anchored;
    r->allow = (unsigned char)allow;
    r->anchored = (unsigned char)anchored;
    s->text_len += r->len;
    return 0;
}

/* The product token of a User-Agent string: everything before the first '/' or whitespace. */
static size_t product_token_len(const char *ua)
{
    size_t n = 0;
    while (ua[n] && ua[n] != '/' && !is_space(ua[n]) && ua[n] != '\r' && ua[n] != '\n')
        n++;
    return n;
}

static int is_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Case-insensitive equality of a[0..an) and b[0..bn). */
static int same_ci(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && an > 0 && strncasecmp(a, b, an) == 0;
}

enum key { KEY_OTHER, KEY_USER_AGENT, KEY_ALLOW, KEY_DISALLOW, KEY_CRAWL_DELAY };

/* Record names are case-insensitive; a few spellings seen in the wild are accepted as the major crawlers do. */
static enum key classify_key(const char *k, size_t n)
{
    static const struct {
        const char *name;
        enum key key;
    } keys[] = {
        {"user-agent", KEY_USER_AGENT}, {"useragent", KEY_USER_AGENT},   {"user agent", KEY_USER_AGENT},
        {"allow", KEY_ALLOW},           {"disallow", KEY_DISALLOW},      {"dissallow", KEY_DISALLOW},
        {"disalow", KEY_DISALLOW},      {"crawl-delay", KEY_CRAWL_DELAY}, {"crawldelay", KEY_CRAWL_DELAY},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (same_ci(k, n, keys[i].name, strlen(keys[i].name)))
            return keys[i].key;
    return KEY_OTHER;
}

/* Parses the leading decimal number of v[0..n) ("10", "2.5"), without the locale dependence of strtod.
 * Returns -1 if v does not start with a digit or '.' followed by one. */
static double parse_delay(const char *v, size_t n)
{
    double x = 0, scale = 1;
    int digits = 0, frac = 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c >= '0' && c <= '9') {
            digits++;
            if (frac) {
                scale /= 10;
                x += (c - '0') * scale;
            } else if (x < ROBOTS_MAX_DELAY) {
                x = x * 10 + (c - '0');
            }
        } else if (c == '.' && !frac) {
            frac = 1;
        } else {
            break;
        }
    }
    if (!digits)
        return -1;
    return x < ROBOTS_MAX_DELAY ? x : ROBOTS_MAX_DELAY;
}

static void trim(const char **s, const char **e)
{
    while (*s < *e && is_space(**s))
        (*s)++;
    while (*e > *s && is_space((*e)[-1]))
        (*e)--;
}

/* Parser state across lines. A group is a run of user-agent lines followed by rules; a user-agent line
 * that follows a rule starts a new group (so agents separated only by blank lines or comments share one
 * group, as in Google's reference parser). */
struct parse_state {
    const char *token; /* our product token */
    size_t token_len;
    int in_agents;     /* 1 while the current group's user-agent lines are still being read */
    int cur_ours;      /* the current group names our token */
    int cur_global;    /* the current group names "*" */
    struct rule_set ours, global;
};

static int handle_line(struct parse_state *ps, const char *s, const char *e)
{
    const char *hash = memchr(s, '#', (size_t)(e - s));
    if (hash)
        e = hash;
    const char *colon = memchr(s, ':', (size_t)(e - s));
    if (!colon)
        return 0;
    const char *ks = s, *ke = colon, *vs = colon + 1, *ve = e;
    trim(&ks, &ke);
    trim(&vs, &ve);
    enum key key = classify_key(ks, (size_t)(ke - ks));

    if (key == KEY_USER_AGENT) {
        if (!ps->in_agents) {
            ps->cur_ours = ps->cur_global = 0;
            ps->in_agents = 1;
        }
        if (vs < ve && *vs == '*' && (vs + 1 == ve || is_space(vs[1]))) {
            ps->cur_global = 1;
            ps->global.seen = 1;
        } else {
            size_t n = 0;
            while (vs + n < ve && is_token_char(vs[n]))
                n++;
            if (same_ci(vs, n, ps->token, ps->token_len)) {
                ps->cur_ours = 1;
                ps->ours.seen = 1;
            }
        }
        return 0;
    }
    if (key == KEY_ALLOW || key == KEY_DISALLOW) {
        ps->in_agents = 0;
        /* RFC 9309 2.2.2: a rule with an empty path is ignored ("Disallow:" allows everything). */
        if (vs == ve)
            return 0;
        int allow = key == KEY_ALLOW;
        if (ps->cur_ours && set_add_rule(&ps->ours, allow, vs, (size_t)(ve - vs)) < 0)
            return -1;
        if (ps->cur_global && set_add_rule(&ps->global, allow, vs, (size_t)(ve - vs)) < 0)
            return -1;
        return 0;
    }
    if (key == KEY_CRAWL_DELAY) {
        double d = parse_delay(vs, (size_t)(ve - vs));
        if (d < 0)
            return 0;
        if (ps->cur_ours && d > ps->ours.crawl_delay)
            ps->ours.crawl_delay = d;
        if (ps->cur_global && d > ps->global.crawl_delay)
            ps->global.crawl_delay = d;
    }
    return 0;
}

robots *robots_parse(const char *txt, size_t len, const char *user_agent)
{
    robots *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (!txt || len == 0)
        return r;
    /* Binary content (NUL bytes) is not a robots.txt; treat it as empty, i.e. allow all. */
    if (memchr(txt, '\0', len < ROBOTS_MAX_BYTES ? len : ROBOTS_MAX_BYTES))
        return r;

    struct parse_state ps;
    memset(&ps, 0, sizeof ps);
    ps.token = user_agent ? user_agent : "";
    while (*ps.token && is_space(*ps.token))
        ps.token++;
    ps.token_len = product_token_len(ps.token);

    const char *p = txt, *end = txt + len;
    int truncated = 0;
    if (len > ROBOTS_MAX_BYTES) {
        end = txt + ROBOTS_MAX_BYTES;
        truncated = 1;
    }
    if (end - p >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    while (p < end) {
        const char *e = p;
        while (e < end && *e != '\n' && *e != '\r')
            e++;
        /* A line cut by the size limit is dropped: its truncated path could block far more than intended. */
        if (e == end && truncated)
            break;
        if (handle_line(&ps, p, e) < 0) {
            set_free(&ps.ours);
            set_free(&ps.global);
            free(r);
            return NULL;
        }
        /* Line ends: LF, CR or CRLF. */
        p = e;
        if (p < end && *p == '\r')
            p++;
        if (p < end && *p == '\n' && (p == e || p[-1] == '\r'))
            p++;
    }

    /* RFC 9309 2.2.1: the group(s) naming our token, else the "*" group(s), else no rules at all. A group
     * that names us but holds no rules still wins over "*" (RFC 9309 5.1, quxbot). */
    if (ps.ours.seen) {
        r->set = ps.ours;
        set_free(&ps.global);
    } else {
        r->set = ps.global;
        set_free(&ps.ours);
    }
    return r;
}

robots *robots_allow_all(void) { return calloc(1, sizeof(robots)); }

robots *robots_disallow_all(void)
{
    robots *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (set_add_rule(&r->set, 0, "/", 1) < 0) {
        robots_free(r);
        return NULL;
    }
    r->set.seen = 1;
    return r;
}

/* 1 if pattern p[0..m) (canonical, '*' wildcards) matches path q[0..n) (canonical). Without the anchor a
 * pattern matches any path it is a prefix of. The pattern is split at '*' into literal segments; each is
 * matched at its leftmost occurrence after the previous one, which is optimal for '*'-only globs, so the
 * cost is O(n * m) at worst (memmem is linear) and never exponential in the number of wildcards. */
static int pattern_matches(const char *p, size_t m, int anchored, const char *q, size_t n)
{
    const char *star = memchr(p, '*', m);
    size_t seg = star ? (size_t)(star - p) : m;
    if (!star) {
        if (anchored)
            return n == m && memcmp(p, q, m) == 0;
        return n >= m && memcmp(p, q, m) == 0;
    }
    if (seg > n || memcmp(p, q, seg) != 0)
        return 0;
    size_t pi = seg + 1, qi = seg;
    for (;;) {
        star = memchr(p + pi, '*', m - pi);
        seg = star ? (size_t)(star - (p + pi)) : m - pi;
        if (!star) {
            if (anchored)
                return n - qi >= seg && memcmp(q + n - seg, p + pi, seg) == 0;
            return seg == 0 || memmem(q + qi, n - qi, p + pi, seg) != NULL;
        }
        if (seg > 0) {
            const char *hit = memmem(q + qi, n - qi, p + pi, seg);
            if (!hit)
                return 0;
            qi = (size_t)(hit - q) + seg;
        }
        pi += seg + 1;
    }
}

int robots_allowed(const robots *r, const char *path)
{
    if (!r)
        return 0;
    if (!path || !*path)
        path = "/";
    size_t n = strlen(path);
    if (n > (SIZE_MAX - 1) / 3)
        return 0;
    char stack[1024];
    char *q = 3 * n <= sizeof stack ? stack : malloc(3 * n);
    if (!q)
        return 0; /* out of memory: refusing is the safe answer */
    size_t qn = canon(path, n, 1, q);

    int allowed = 1;
    /* RFC 9309 2.2.2: /robots.txt is implicitly allowed. */
    if (!(qn == 11 && memcmp(q, "/robots.txt", 11) == 0)) {
        const struct rule_set *s = &r->set;
        size_t best = 0;
        int matched = 0;
        for (size_t i = 0; i < s->n; i++) {
            const struct rule *ru = &s->rules[i];
            /* Longest pattern wins; on equal length Allow wins (RFC 9309 2.2.2). Rules that could not
             * change the verdict are not matched at all. */
            int better = !matched || ru->prio > best || (ru->prio == best && ru->allow && !allowed);
            if (!better || !pattern_matches(s->text + ru->off, ru->len, ru->anchored, q, qn))
                continue;
            matched = 1;
            best = ru->prio;
            allowed = ru->allow;
        }
    }
    if (q != stack)
        free(q);
    return allowed;
}

double robots_crawl_delay(const robots *r) { return r ? r->set.crawl_delay : 0; }

void robots_free(robots *r)
{
    if (!r)
        return;
    set_free(&r->set);
    free(r);
}

/* Directives of the form "name: value" whose colon does not introduce an agent. */
static int is_valued_directive(const char *s, size_t n)
{
    static const char *const names[] = {"unavailable_after", "max-snippet", "max-image-preview",
                                        "max-video-preview"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (same_ci(s, n, names[i], strlen(names[i])))
            return 1;
    return 0;
}

/* The directives that opt a response out of use: img2dataset's four, plus "none" (= noindex, nofollow). */
static int is_optout_directive(const char *s, size_t n)
{
    static const char *const names[] = {"noai", "noimageai", "noindex", "noimageindex", "none"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (same_ci(s, n, names[i], strlen(names[i])))
            return 1;
    return 0;
}

int xrobots_opted_out(const char *value, const char *user_agent)
{
    if (!value)
        return 0;
    const char *tok = user_agent ? user_agent : "";
    while (*tok && is_space(*tok))
        tok++;
    size_t tok_len = product_token_len(tok);

    /* Directives before any "agent:" prefix apply to every agent; a prefix applies to the directives after
     * it up to the next prefix, so "googlebot: noindex, lvd: noai" holds one section per agent. */
    int applies = 1;
    const char *p = value;
    for (;;) {
        const char *e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        const char *s = p, *t = e;
        trim(&s, &t);
        const char *colon = memchr(s, ':', (size_t)(t - s));
        if (colon) {
            const char *ns = s, *ne = colon;
            trim(&ns, &ne);
            size_t nn = (size_t)(ne - ns), k = 0;
            while (k < nn && is_token_char(ns[k]))
                k++;
            int is_agent = (nn == 1 && *ns == '*') || (nn > 0 && k == nn && !is_valued_directive(ns, nn));
            if (is_agent) {
                applies = (nn == 1 && *ns == '*') || same_ci(ns, nn, tok, tok_len);
                s = colon + 1;
                trim(&s, &t);
            }
        }
        if (applies && is_optout_directive(s, (size_t)(t - s)))
            return 1;
        if (!*e)
            return 0;
        p = e + 1;
    }
}
