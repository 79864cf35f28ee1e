/* fetch.c — the crawler's network engine: libcurl's multi interface driven from one thread (see fetch.h).
 *
 * Shapes of the state:
 *   job    one caller URL, alive from the feed until its result is delivered; it sits in exactly one place:
 *          a host queue (parked), a transfer (running) or the retry heap (waiting).
 *   host   per scheme://host:port: robots.txt state, in-flight count, earliest next request start, FIFO of
 *          parked jobs; kept in a chained hash table for the engine's lifetime (idle ones are swept when the
 *          table grows past HOST_CACHE_MAX).
 *   xfer   one easy handle and its response buffers; recycled through a free list so connections, TLS
 *          sessions and buffers are reused.
 * Times used for scheduling are CLOCK_MONOTONIC seconds; times reported in results are wall-clock seconds.
 */
#include "fetch.h"

#include "err.h"
#include "netaddr.h"
#include "robots.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LVD_DEFAULT_UA "lvd/0.1 (+https://github.com/lvd-project/lvd; image dataset curation)"

#define URL_CAP 16384                   /* bytes of the feed's URL buffer, including the NUL */
#define ROBOTS_MAX_BYTES (512u * 1024u) /* robots.txt beyond this is ignored (RFC 9309 asks for >= 500 KiB) */
#define DISCARD_MAX (64u * 1024u)       /* bytes of a non-2xx body read (and dropped) to keep the connection */
#define BODY_KEEP_MAX (1u << 20)        /* a recycled transfer keeps a body buffer up to this capacity */
#define XROBOTS_MAX 32                  /* X-Robots-Tag header lines kept per response */
#define HOST_CACHE_MAX 65536            /* hosts kept before idle ones are swept (robots.txt then refetched) */
#define POLL_MAX_MS 1000                /* longest single wait in curl_multi_poll */

/* ------------------------------------------------------------------------------------------------------ */
/* Public helpers                                                                                          */

static const char *const status_names[FETCH_STATUS_COUNT] = {
    "ok", "http_error", "timeout", "dns", "connect", "too_large", "opted_out",
    "robots", "blocked_address", "bad_scheme", "too_many_redirects", "empty", "error",
};

const char *fetch_status_name(fetch_status s)
{
    if ((int)s < 0 || (int)s >= FETCH_STATUS_COUNT)
        return "error";
    return status_names[s];
}

int fetch_status_transient(fetch_status s, long http_status)
{
    switch (s) {
    case FETCH_TIMEOUT:
    case FETCH_DNS:
    case FETCH_CONNECT:
    case FETCH_ERROR:
        return 1;
    case FETCH_HTTP_ERROR:
        return http_status == 408 || http_status == 429 || http_status >= 500;
    default:
        return 0;
    }
}

void fetch_opts_default(fetch_opts *o)
{
    memset(o, 0, sizeof *o);
    o->concurrency = 64;
    o->per_host = 4;
    o->host_interval = 0;
    o->connect_timeout = 10;
    o->timeout = 30;
    o->low_speed_limit = 1024;
    o->low_speed_time = 10;
    o->max_bytes = (uint64_t)32 << 20;
    o->max_redirects = 5;
    o->retries = 2;
    o->backoff_base = 1;
    o->backoff_max = 30;
    o->max_retry_after = 60;
    o->max_crawl_delay = 10;
    o->user_agent = LVD_DEFAULT_UA;
    o->allow_private = 0;
    o->respect_robots = 1;
    o->respect_xrobots = 1;
}

/* ------------------------------------------------------------------------------------------------------ */
/* State                                                                                                   */

typedef struct host host;

typedef struct job {
    struct job *next;   /* host queue link */
    host *host;         /* host of cur_url; holds one reference on it */
    uint64_t id;
    char *url;          /* as given by the feed */
    char *cur_url;      /* current hop, normalised */
    char *path;         /* cur_url's path and "?query", for robots.txt */
    char *final_url;    /* URL of the last request made, or NULL */
    char *content_type; /* of the last response, or NULL */
    long http_status;   /* last status seen, 0 if none */
    int attempts;       /* requests counted as attempts (redirect hops excluded) */
    int redirects;      /* hops followed */
    int hop;            /* 1: the next request follows a redirect and is not a new attempt */
    double started;     /* wall seconds of the first request, 0 before it */
} job;

typedef enum { ROBOTS_NONE, ROBOTS_FETCHING, ROBOTS_READY } robots_state;

struct host {
    host *hnext;          /* hash chain */
    host *aprev, *anext;  /* list of hosts with parked jobs */
    int active;           /* 1 while on that list */
    char *key;            /* "scheme://host:port" */
    uint64_t hash;
    robots_state rstate;
    robots *rules;        /* NULL: everything allowed */
    fetch_status rfail;   /* FETCH_OK, or the status every job gets because robots.txt said "disallow all" */
    char *rfail_msg;
    double delay;         /* seconds between request starts */
    double next_start;    /* monotonic seconds */
    int inflight;         /* transfers running, robots.txt included */
    size_t refs;          /* jobs pointing at this host */
    job *qhead, *qtail;
};

typedef struct xfer {
    struct xfer *next;        /* free list, or list of running transfers */
    struct xfer *prev;        /* running list only */
    CURL *easy;
    fetch_engine *e;
    job *job;                 /* NULL for a robots.txt request */
    host *host;
    char *url;
    char errbuf[CURL_ERROR_SIZE];
    /* current response (reset on every status line) */
    long code;
    int headers_done;
    int have_length;
    uint64_t content_length;
    char *content_type;
    char *location;
    char *retry_after;
    char *xrobots[XROBOTS_MAX];
    size_t n_xrobots;
    uint8_t *body;
    size_t len, cap;
    size_t discarded;
    /* why a callback stopped the transfer */
    int too_large, opted_out, blocked, discard_abort, truncated, oom;
    char blocked_msg[256]; /* "<address> is a <class> address, ...", truncated when longer */
} xfer;

typedef struct timer {
    double due; /* monotonic seconds */
    job *j;
} timer;

struct fetch_engine {
    fetch_opts o;
    char *ua;
    CURLM *multi;
    host **buckets;
    size_t nbuckets, nhosts;
    host *ahead, *atail;
    xfer *free_xfers;
    xfer *running_xfers;
    size_t running;       /* transfers in flight (jobs and robots.txt) */
    size_t parked;        /* jobs in host queues */
    size_t held;          /* jobs accepted and not yet delivered */
    timer *heap;          /* retries, min-heap on due */
    size_t heap_len, heap_cap;
    double next_wake;     /* earliest host interval end seen by the last dispatch, or HUGE_VAL */
    fetch_stats st;
    uint64_t rng;
    int in_run, aborted, feed_done;
    fetch_done_fn done;
    void *ctx;
    char *feedbuf;        /* URL_CAP bytes */
};

/* ------------------------------------------------------------------------------------------------------ */
/* Small utilities                                                                                         */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64: the jitter only needs to decorrelate clients, not to be unpredictable. */
static double rand_unit(fetch_engine *e)
{
    uint64_t z = (e->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static char *vfmt(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static void lower_ascii(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

static long ms_of(double seconds)
{
    if (seconds <= 0)
        return 0;
    if (seconds > 1e9)
        return 1000000000L;
    return (long)(seconds * 1000.0 + 0.5);
}

/* ------------------------------------------------------------------------------------------------------ */
/* URLs                                                                                                    */

/* A syntactic scheme ("[A-Za-z][A-Za-z0-9+.-]*:") at the start of url, so "mailto:" and "data:" URLs are
 * reported as bad schemes even though the URL parser rejects them for other reasons. Returns its length. */
static size_t scheme_len(const char *url)
{
    size_t i = 0;
    if (!((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z')))
        return 0;
    for (i = 1; url[i]; i++) {
        char c = url[i];
        if (c == ':')
            return i;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
              c == '-' || c == '.'))
            return 0;
    }
    return 0;
}

static int is_http_scheme(const char *s, size_t n)
{
    return (n == 4 && strncasecmp(s, "http", 4) == 0) || (n == 5 && strncasecmp(s, "https", 5) == 0);
}

typedef struct target {
    char *url;  /* normalised */
    char *key;  /* "scheme://host:port" */
    char *path; /* "/path?query" */
} target;

static void target_free(target *t)
{
    free(t->url);
    free(t->key);
    free(t->path);
    memset(t, 0, sizeof *t);
}

/* Parses url (relative to base when base is not NULL) into *t. Returns FETCH_OK, FETCH_BAD_SCHEME (not
 * http/https) or FETCH_ERROR (malformed; also out of memory), with *why a readable reason. */
static fetch_status parse_target(const char *base, const char *url, target *t, char *why, size_t why_cap)
{
    const unsigned flags = CURLU_NON_SUPPORT_SCHEME | CURLU_URLENCODE;
    memset(t, 0, sizeof *t);
    size_t sl = scheme_len(url);
    if (!base && sl == 0) {
        snprintf(why, why_cap, "no http(s) scheme");
        return FETCH_BAD_SCHEME;
    }
    if (sl > 0 && !is_http_scheme(url, sl)) {
        snprintf(why, why_cap, "scheme %.*s is not http or https", (int)(sl > 32 ? 32 : sl), url);
        return FETCH_BAD_SCHEME;
    }
    CURLU *u = curl_url();
    if (!u) {
        snprintf(why, why_cap, "out of memory");
        return FETCH_ERROR;
    }
    fetch_status st = FETCH_ERROR;
    char *scheme = NULL, *hostname = NULL, *port = NULL, *path = NULL, *query = NULL, *full = NULL;
    CURLUcode rc = CURLUE_OK;
    if (base)
        rc = curl_url_set(u, CURLUPART_URL, base, flags);
    if (rc == CURLUE_OK)
        rc = curl_url_set(u, CURLUPART_URL, url, flags);
    if (rc != CURLUE_OK) {
        snprintf(why, why_cap, "malformed URL: %s", curl_url_strerror(rc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        snprintf(why, why_cap, "malformed URL: no scheme");
        goto out;
    }
    if (!is_http_scheme(scheme, strlen(scheme))) {
        snprintf(why, why_cap, "scheme %.32s is not http or https", scheme);
        st = FETCH_BAD_SCHEME;
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &hostname, 0) != CURLUE_OK || hostname[0] == '\0') {
        snprintf(why, why_cap, "malformed URL: no host");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK) {
        snprintf(why, why_cap, "malformed URL");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_QUERY, &query, 0) != CURLUE_OK)
        query = NULL;
    lower_ascii(scheme);
    lower_ascii(hostname);
    if (asprintf(&t->key, "%s://%s:%s", scheme, hostname, port) < 0)
        t->key = NULL;
    if (asprintf(&t->path, "%s%s%s", path, query ? "?" : "", query ? query : "") < 0)
        t->path = NULL;
    t->url = xstrdup(full);
    if (!t->key || !t->path || !t->url) {
        target_free(t);
        snprintf(why, why_cap, "out of memory");
        goto out;
    }
    st = FETCH_OK;
out:
    curl_free(scheme);
    curl_free(hostname);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_free(full);
    curl_url_cleanup(u);
    return st;
}

/* Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3). Returns 0 and *secs (>= 0), or -1. */
static int parse_retry_after(const char *v, double *secs)
{
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v >= '0' && *v <= '9') {
        double d = 0;
        const char *p = v;
        for (; *p >= '0' && *p <= '9'; p++)
            if (d < 1e12)
                d = d * 10 + (*p - '0');
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '\0')
            return -1;
        *secs = d;
        return 0;
    }
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1)
        return -1;
    double d = (double)t - wall_now();
    *secs = d > 0 ? d : 0;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------ */
/* Hosts                                                                                                   */

static void host_free(host *h)
{
    robots_free(h->rules);
    free(h->rfail_msg);
    free(h->key);
    free(h);
}

static void active_add(fetch_engine *e, host *h)
{
    if (h->active)
        return;
    h->active = 1;
    h->anext = NULL;
    h->aprev = e->atail;
    if (e->atail)
        e->atail->anext = h;
    else
        e->ahead = h;
    e->atail = h;
}

static void active_remove(fetch_engine *e, host *h)
{
    if (!h->active)
        return;
    if (h->aprev)
        h->aprev->anext = h->anext;
    else
        e->ahead = h->anext;
    if (h->anext)
        h->anext->aprev = h->aprev;
    else
        e->atail = h->aprev;
    h->active = 0;
    h->aprev = h->anext = NULL;
}

/* Drops hosts nothing refers to, so a crawl over millions of hosts keeps bounded memory. */
static void hosts_sweep(fetch_engine *e)
{
    for (size_t b = 0; b < e->nbuckets; b++) {
        host **pp = &e->buckets[b];
        while (*pp) {
            host *h = *pp;
            if (h->refs == 0 && h->inflight == 0 && h->rstate != ROBOTS_FETCHING && !h->qhead) {
                *pp = h->hnext;
                host_free(h);
                e->nhosts--;
            } else {
                pp = &h->hnext;
            }
        }
    }
}

static int hosts_grow(fetch_engine *e)
{
    size_t n = e->nbuckets ? e->nbuckets * 2 : 256;
    host **nb = calloc(n, sizeof *nb);
    if (!nb)
        return -1;
    for (size_t b = 0; b < e->nbuckets; b++) {
        host *h = e->buckets[b];
        while (h) {
            host *next = h->hnext;
            size_t i = (size_t)(h->hash & (n - 1));
            h->hnext = nb[i];
            nb[i] = h;
            h = next;
        }
    }
    free(e->buckets);
    e->buckets = nb;
    e->nbuckets = n;
    return 0;
}

/* The host for key, created on first use. NULL when out of memory. */
static host *host_get(fetch_engine *e, const char *key)
{
    uint64_t hash = fnv1a(key);
    if (e->nbuckets) {
        for (host *h = e->buckets[hash & (e->nbuckets - 1)]; h; h = h->hnext)
            if (h->hash == hash && strcmp(h->key, key) == 0)
                return h;
    }
    if (e->nhosts >= HOST_CACHE_MAX)
        hosts_sweep(e);
    if (e->nhosts + 1 > e->nbuckets / 4 * 3 && hosts_grow(e) != 0)
        return NULL;
    host *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->key = strdup(key);
    if (!h->key) {
        free(h);
        return NULL;
    }
    h->hash = hash;
    h->rstate = e->o.respect_robots ? ROBOTS_NONE : ROBOTS_READY;
    h->rfail = FETCH_OK;
    h->delay = e->o.host_interval > 0 ? e->o.host_interval : 0;
    size_t i = (size_t)(hash & (e->nbuckets - 1));
    h->hnext = e->buckets[i];
    e->buckets[i] = h;
    e->nhosts++;
    return h;
}

static void host_push(fetch_engine *e, host *h, job *j)
{
    j->next = NULL;
    if (h->qtail)
        h->qtail->next = j;
    else
        h->qhead = j;
    h->qtail = j;
    e->parked++;
    active_add(e, h);
}

static job *host_pop(fetch_engine *e, host *h)
{
    job *j = h->qhead;
    if (!j)
        return NULL;
    h->qhead = j->next;
    if (!h->qhead)
        h->qtail = NULL;
    j->next = NULL;
    e->parked--;
    return j;
}

static void job_set_host(job *j, host *h)
{
    if (j->host == h)
        return;
    if (j->host)
        j->host->refs--;
    j->host = h;
    if (h)
        h->refs++;
}

/* ------------------------------------------------------------------------------------------------------ */
/* Jobs and delivery                                                                                       */

static void job_free(job *j)
{
    if (!j)
        return;
    job_set_host(j, NULL);
    free(j->url);
    free(j->cur_url);
    free(j->path);
    free(j->final_url);
    free(j->content_type);
    free(j);
}

/* Delivers j's result exactly once (unless the run was aborted) and frees j. fmt is NULL for FETCH_OK. */
static void finish_job(fetch_engine *e, job *j, fetch_status s, const uint8_t *body, size_t len, const char *fmt,
                       ...) LVD_PRINTF(6, 7);

static void finish_job(fetch_engine *e, job *j, fetch_status s, const uint8_t *body, size_t len, const char *fmt,
                       ...)
{
    char *msg = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        msg = vfmt(fmt, ap);
        va_end(ap);
    }
    if (!e->aborted) {
        fetch_result r;
        memset(&r, 0, sizeof r);
        r.id = j->id;
        r.url = j->url;
        r.status = s;
        r.http_status = j->http_status;
        r.final_url = j->final_url;
        r.content_type = j->content_type;
        r.body = s == FETCH_OK ? body : NULL;
        r.body_len = s == FETCH_OK ? len : 0;
        r.attempts = j->attempts;
        r.error = s == FETCH_OK ? NULL : (msg ? msg : fetch_status_name(s));
        r.finished = wall_now();
        r.started = j->started > 0 ? j->started : r.finished;
        if (e->done(e->ctx, &r) != 0)
            e->aborted = 1;
    }
    free(msg);
    e->held--;
    job_free(j);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Retry heap                                                                                              */

static int heap_push(fetch_engine *e, double due, job *j)
{
    if (e->heap_len == e->heap_cap) {
        size_t n = e->heap_cap ? e->heap_cap * 2 : 64;
        timer *nh = realloc(e->heap, n * sizeof *nh);
        if (!nh)
            return -1;
        e->heap = nh;
        e->heap_cap = n;
    }
    size_t i = e->heap_len++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e->heap[p].due <= due)
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i].due = due;
    e->heap[i].j = j;
    return 0;
}

static job *heap_pop(fetch_engine *e)
{
    job *top = e->heap[0].j;
    timer last = e->heap[--e->heap_len];
    size_t i = 0, n = e->heap_len;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && e->heap[c + 1].due < e->heap[c].due)
            c++;
        if (last.due <= e->heap[c].due)
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

/* Uniform in [0, min(base * 2^n, max)] ("full jitter"); n counts retries already made. */
static double backoff_delay(fetch_engine *e, int n)
{
    double cap = e->o.backoff_base;
    for (int i = 0; i < n && cap < e->o.backoff_max; i++)
        cap *= 2;
    if (cap > e->o.backoff_max)
        cap = e->o.backoff_max;
    if (cap <= 0)
        return 0;
    return cap * rand_unit(e);
}

static int can_retry(const fetch_engine *e, const job *j)
{
    return j->attempts <= e->o.retries;
}

static void schedule_retry(fetch_engine *e, job *j, double delay)
{
    if (heap_push(e, mono_now() + delay, j) != 0)
        finish_job(e, j, FETCH_ERROR, NULL, 0, "out of memory scheduling a retry of %s", j->cur_url);
}

/* ------------------------------------------------------------------------------------------------------ */
/* libcurl callbacks                                                                                       */

static void response_reset(xfer *t)
{
    t->code = 0;
    t->headers_done = 0;
    t->have_length = 0;
    t->content_length = 0;
    free(t->content_type);
    free(t->location);
    free(t->retry_after);
    t->content_type = t->location = t->retry_after = NULL;
    for (size_t i = 0; i < t->n_xrobots; i++)
        free(t->xrobots[i]);
    t->n_xrobots = 0;
    t->len = 0;
    t->discarded = 0;
}

static int replace_str(char **dst, const char *v, size_t n)
{
    char *s = xstrndup(v, n);
    if (!s)
        return -1;
    free(*dst);
    *dst = s;
    return 0;
}

/* End of one response's headers: the place to refuse a 2xx by its Content-Length or X-Robots-Tag before
 * any body byte is read. Returns 0 to go on, -1 to abort the transfer. */
static int headers_end(xfer *t)
{
    fetch_engine *e = t->e;
    if (!t->job || t->code < 200 || t->code >= 300)
        return 0;
    if (t->have_length && t->content_length > e->o.max_bytes) {
        t->too_large = 1;
        return -1;
    }
    if (e->o.respect_xrobots) {
        for (size_t i = 0; i < t->n_xrobots; i++) {
            if (xrobots_opted_out(t->xrobots[i], e->ua)) {
                t->opted_out = 1;
                return -1;
            }
        }
    }
    return 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    xfer *t = ud;
    size_t total = size * nitems, n = total;
    while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n'))
        n--;
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* "HTTP/1.1 200 OK" or "HTTP/2 200": a new response (after 1xx) starts over */
        response_reset(t);
        size_t i = 5;
        while (i < n && buf[i] != ' ')
            i++;
        while (i < n && buf[i] == ' ')
            i++;
        long code = 0;
        for (int k = 0; k < 3 && i < n && buf[i] >= '0' && buf[i] <= '9'; k++, i++)
            code = code * 10 + (buf[i] - '0');
        t->code = code;
        return total;
    }
    if (n == 0) {
        if (t->code >= 100 && t->code < 200)
            return total; /* interim response; the final one follows */
        t->headers_done = 1;
        return headers_end(t) == 0 ? total : 0;
    }
    if (t->headers_done)
        return total; /* trailers */
    const char *colon = memchr(buf, ':', n);
    if (!colon)
        return total;
    size_t name_len = (size_t)(colon - buf);
    const char *v = colon + 1;
    const char *end = buf + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    int rc = 0;
    if (name_len == 12 && strncasecmp(buf, "Content-Type", 12) == 0) {
        rc = replace_str(&t->content_type, v, vlen);
    } else if (name_len == 8 && strncasecmp(buf, "Location", 8) == 0) {
        rc = replace_str(&t->location, v, vlen);
    } else if (name_len == 11 && strncasecmp(buf, "Retry-After", 11) == 0) {
        rc = replace_str(&t->retry_after, v, vlen);
    } else if (name_len == 12 && strncasecmp(buf, "X-Robots-Tag", 12) == 0) {
        if (t->n_xrobots < XROBOTS_MAX) {
            char *s = xstrndup(v, vlen);
            if (s)
                t->xrobots[t->n_xrobots++] = s;
            else
                rc = -1;
        }
    } else if (name_len == 14 && strncasecmp(buf, "Content-Length", 14) == 0) {
        uint64_t x = 0;
        int digits = 0;
        for (size_t i = 0; i < vlen && v[i] >= '0' && v[i] <= '9'; i++, digits++)
            x = x > UINT64_MAX / 10 - 1 ? UINT64_MAX : x * 10 + (uint64_t)(v[i] - '0');
        if (digits > 0) {
            t->have_length = 1;
            t->content_length = x;
        }
    }
    if (rc != 0) {
        t->oom = 1;
        return 0;
    }
    return total;
}

static size_t on_body(char *buf, size_t size, size_t nitems, void *ud)
{
    xfer *t = ud;
    fetch_engine *e = t->e;
    size_t n = size * nitems;
    e->st.bytes += n;
    if (t->code < 200 || t->code >= 300) {
        /* error and redirect bodies are not needed; reading a little keeps the connection reusable */
        t->discarded += n;
        if (t->discarded > DISCARD_MAX) {
            t->discard_abort = 1;
            return 0;
        }
        return n;
    }
    uint64_t limit = t->job ? e->o.max_bytes : ROBOTS_MAX_BYTES;
    if ((uint64_t)t->len + n > limit) {
        if (t->job) {
            t->too_large = 1;
            return 0;
        }
        n = (size_t)(limit - t->len); /* robots.txt: keep the first ROBOTS_MAX_BYTES and parse those */
        t->truncated = 1;
    }
    if (t->len + n > t->cap) {
        size_t c = t->cap ? t->cap : 16384;
        while (c < t->len + n)
            c *= 2;
        uint8_t *nb = realloc(t->body, c);
        if (!nb) {
            t->oom = 1;
            return 0;
        }
        t->body = nb;
        t->cap = c;
    }
    memcpy(t->body + t->len, buf, n);
    t->len += n;
    return t->truncated ? 0 : size * nitems;
}

/* Every connection's peer address is checked here, after DNS and before connect(): this covers redirects,
 * DNS rebinding between requests and every address of a multi-address name. */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    xfer *t = ud;
    (void)purpose;
    if (!t->e->o.allow_private) {
        addr_class c = addr_classify(&a->addr);
        if (c != ADDR_PUBLIC) {
            char ip[INET6_ADDRSTRLEN] = "?";
            if (a->family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)&a->addr)->sin_addr, ip, sizeof ip);
            else if (a->family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)&a->addr)->sin6_addr, ip,
                          sizeof ip);
            /* a name can resolve to several refused addresses: list them while they fit */
            size_t used = strlen(t->blocked_msg);
            snprintf(t->blocked_msg + used, sizeof t->blocked_msg - used, "%s%s is a %s address", used ? ", " : "",
                     ip, addr_class_name(c));
            t->blocked = 1;
            return CURL_SOCKET_BAD;
        }
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Transfers                                                                                               */

static void xfer_destroy(xfer *t)
{
    response_reset(t);
    if (t->easy)
        curl_easy_cleanup(t->easy);
    free(t->body);
    free(t->url);
    free(t);
}

static xfer *xfer_get(fetch_engine *e)
{
    xfer *t = e->free_xfers;
    if (t) {
        e->free_xfers = t->next;
        curl_easy_reset(t->easy);
    } else {
        t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        t->easy = curl_easy_init();
        if (!t->easy) {
            free(t);
            return NULL;
        }
        t->e = e;
    }
    t->next = t->prev = NULL;
    return t;
}

static void xfer_put(fetch_engine *e, xfer *t)
{
    response_reset(t);
    free(t->url);
    t->url = NULL;
    t->job = NULL;
    t->host = NULL;
    t->too_large = t->opted_out = t->blocked = t->discard_abort = t->truncated = t->oom = 0;
    t->blocked_msg[0] = '\0';
    t->errbuf[0] = '\0';
    if (t->cap > BODY_KEEP_MAX) {
        free(t->body);
        t->body = NULL;
        t->cap = 0;
    }
    t->next = e->free_xfers;
    t->prev = NULL;
    e->free_xfers = t;
}

static void running_add(fetch_engine *e, xfer *t)
{
    t->prev = NULL;
    t->next = e->running_xfers;
    if (e->running_xfers)
        e->running_xfers->prev = t;
    e->running_xfers = t;
}

static void running_remove(fetch_engine *e, xfer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        e->running_xfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->next = t->prev = NULL;
}

/* Starts a request for job j (or robots.txt of h when j is NULL). Returns 0, or -1 with *why set. */
static int xfer_start(fetch_engine *e, host *h, job *j, const char **why)
{
    xfer *t = xfer_get(e);
    if (!t) {
        *why = "out of memory";
        return -1;
    }
    if (j)
        t->url = strdup(j->cur_url);
    else if (asprintf(&t->url, "%s/robots.txt", h->key) < 0)
        t->url = NULL;
    if (!t->url) {
        xfer_put(e, t);
        *why = "out of memory";
        return -1;
    }
    t->job = j;
    t->host = h;
    const fetch_opts *o = &e->o;
    CURL *c = t->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                                          \
    do {                                                                                                       \
        if (rc == CURLE_OK)                                                                                    \
            rc = curl_easy_setopt(c, opt, val);                                                                \
    } while (0)
    SET(CURLOPT_URL, t->url);
    SET(CURLOPT_PRIVATE, (void *)t);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    SET(CURLOPT_PIPEWAIT, 1L);
    SET(CURLOPT_USERAGENT, e->ua);
    SET(CURLOPT_PROXY, ""); /* the address policy must see the origin's address, not a proxy's */
    SET(CURLOPT_CONNECTTIMEOUT_MS, ms_of(o->connect_timeout));
    SET(CURLOPT_TIMEOUT_MS, ms_of(o->timeout));
    SET(CURLOPT_LOW_SPEED_LIMIT, o->low_speed_limit > 0 ? o->low_speed_limit : 0L);
    SET(CURLOPT_LOW_SPEED_TIME, o->low_speed_time > 0 ? o->low_speed_time : 0L);
    SET(CURLOPT_DNS_CACHE_TIMEOUT, 600L);
    SET(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SET(CURLOPT_OPENSOCKETDATA, (void *)t);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)t);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)t);
    if (j) {
        SET(CURLOPT_FOLLOWLOCATION, 0L);
        if (o->max_bytes > 0 && o->max_bytes <= (uint64_t)INT64_MAX)
            SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_bytes);
    } else {
        /* robots.txt redirects need no per-hop policy beyond the scheme and address checks (RFC 9309 2.3.1.2
         * asks for at least five hops) */
        SET(CURLOPT_FOLLOWLOCATION, 1L);
        SET(CURLOPT_MAXREDIRS, 5L);
        SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    }
#undef SET
    if (rc != CURLE_OK) {
        xfer_put(e, t);
        *why = curl_easy_strerror(rc);
        return -1;
    }
    CURLMcode mc = curl_multi_add_handle(e->multi, c);
    if (mc != CURLM_OK) {
        xfer_put(e, t);
        *why = curl_multi_strerror(mc);
        return -1;
    }
    running_add(e, t);
    e->running++;
    h->inflight++;
    double now = mono_now();
    h->next_start = now + h->delay;
    e->st.requests++;
    if (!j) {
        e->st.robots_fetches++;
    } else {
        if (j->hop) {
            j->hop = 0;
        } else {
            j->attempts++;
            if (j->attempts > 1)
                e->st.retries++;
        }
        if (j->started <= 0)
            j->started = wall_now();
        free(j->final_url);
        j->final_url = strdup(j->cur_url);
    }
    return 0;
}

/* What a failed transfer means, and whether trying again soon can help. */
static fetch_status curl_status(CURLcode rc, int *retry)
{
    *retry = 0;
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return FETCH_DNS; /* libcurl does not tell "try again" from "no such name": left to --retry-failed */
    case CURLE_OPERATION_TIMEDOUT:
        *retry = 1;
        return FETCH_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
        *retry = 1;
        return FETCH_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return FETCH_CONNECT;
    case CURLE_UNSUPPORTED_PROTOCOL:
        return FETCH_BAD_SCHEME;
    case CURLE_TOO_MANY_REDIRECTS:
        return FETCH_TOO_MANY_REDIRECTS;
    case CURLE_FILESIZE_EXCEEDED:
        return FETCH_TOO_LARGE;
    default:
        return FETCH_ERROR;
    }
}

static const char *curl_reason(const xfer *t, CURLcode rc)
{
    return t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
}

/* robots.txt of t->host is in: 2xx parse; 3xx (unfollowable) and 4xx allow all; 5xx, 429 and network
 * failures disallow all (RFC 9309 2.3.1). Jobs parked on the host proceed at the next dispatch. */
static void robots_finished(fetch_engine *e, xfer *t, CURLcode rc)
{
    host *h = t->host;
    robots *rules = NULL;
    fetch_status fail = FETCH_OK;
    char *msg = NULL;
    int answered = rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && (t->truncated || t->discard_abort));
    if (t->oom) {
        fail = FETCH_ERROR;
        if (asprintf(&msg, "%s/robots.txt: out of memory", h->key) < 0)
            msg = NULL;
    } else if (answered) {
        long code = t->code;
        if (code >= 200 && code < 300) {
            rules = robots_parse((const char *)t->body, t->len, e->ua);
            if (!rules) {
                fail = FETCH_ERROR;
                if (asprintf(&msg, "%s/robots.txt: out of memory parsing it", h->key) < 0)
                    msg = NULL;
            }
        } else if (code >= 500 || code == 429) {
            fail = FETCH_ROBOTS;
            if (asprintf(&msg, "%s/robots.txt answered HTTP %ld: everything disallowed (RFC 9309)", h->key,
                         code) < 0)
                msg = NULL;
        }
        /* 3xx left over and 4xx: no robots.txt, everything allowed */
    } else if (rc == CURLE_TOO_MANY_REDIRECTS) {
        /* unavailable, like a 4xx (RFC 9309 2.3.1.2) */
    } else {
        int retry;
        fail = t->blocked ? FETCH_BLOCKED_ADDRESS : curl_status(rc, &retry);
        if (fail == FETCH_OK || fail == FETCH_TOO_LARGE)
            fail = FETCH_ERROR;
        if (asprintf(&msg, "%s/robots.txt unreachable, host skipped: %s%s", h->key,
                     t->blocked ? t->blocked_msg : curl_reason(t, rc),
                     t->blocked ? " (allow_private is off)" : "") < 0)
            msg = NULL;
    }
    robots_free(h->rules);
    h->rules = rules;
    free(h->rfail_msg);
    h->rfail = fail;
    h->rfail_msg = msg;
    h->rstate = ROBOTS_READY;
    double delay = e->o.host_interval > 0 ? e->o.host_interval : 0;
    if (rules) {
        double cd = robots_crawl_delay(rules);
        if (cd > e->o.max_crawl_delay)
            cd = e->o.max_crawl_delay;
        if (cd > delay)
            delay = cd;
    }
    h->delay = delay;
}

/* A 3xx with Location: the next hop goes back through a host queue, so it gets the target's robots.txt,
 * per-host limits and (at connect) the address policy like any first request. */
static void follow_redirect(fetch_engine *e, job *j, const xfer *t)
{
    if (!t->location || !t->location[0]) {
        finish_job(e, j, FETCH_TOO_MANY_REDIRECTS, NULL, 0, "HTTP %ld redirect without Location from %s", t->code,
                   j->cur_url);
        return;
    }
    if (j->redirects >= e->o.max_redirects) {
        finish_job(e, j, FETCH_TOO_MANY_REDIRECTS, NULL, 0, "more than %d redirects (last from %s)",
                   e->o.max_redirects, j->cur_url);
        return;
    }
    char why[160];
    target tg;
    fetch_status s = parse_target(j->cur_url, t->location, &tg, why, sizeof why);
    if (s == FETCH_BAD_SCHEME) {
        finish_job(e, j, FETCH_BAD_SCHEME, NULL, 0, "redirect from %s to %.512s: %s", j->cur_url, t->location, why);
        return;
    }
    if (s != FETCH_OK) {
        finish_job(e, j, FETCH_TOO_MANY_REDIRECTS, NULL, 0, "redirect from %s to unusable Location %.512s: %s",
                   j->cur_url, t->location, why);
        return;
    }
    host *h = host_get(e, tg.key);
    if (!h) {
        target_free(&tg);
        finish_job(e, j, FETCH_ERROR, NULL, 0, "out of memory following a redirect from %s", j->cur_url);
        return;
    }
    free(j->cur_url);
    free(j->path);
    j->cur_url = tg.url;
    j->path = tg.path;
    free(tg.key);
    j->redirects++;
    j->hop = 1;
    job_set_host(j, h);
    host_push(e, h, j);
}

/* A response (or a failure) for job t->job is in: deliver, retry, or follow. */
static void job_finished(fetch_engine *e, xfer *t, CURLcode rc)
{
    job *j = t->job;
    long code = t->code;
    if (code > 0)
        j->http_status = code;
    free(j->content_type);
    j->content_type = t->content_type;
    t->content_type = NULL;

    if (t->oom) {
        finish_job(e, j, FETCH_ERROR, NULL, 0, "out of memory fetching %s", j->cur_url);
        return;
    }
    if (t->opted_out) {
        char *v = NULL;
        for (size_t i = 0; i < t->n_xrobots && !v; i++)
            if (xrobots_opted_out(t->xrobots[i], e->ua))
                v = t->xrobots[i];
        finish_job(e, j, FETCH_OPTED_OUT, NULL, 0, "X-Robots-Tag: %.256s", v ? v : "?");
        return;
    }
    int is_2xx = code >= 200 && code < 300;
    if (t->too_large || (rc == CURLE_FILESIZE_EXCEEDED && (is_2xx || code == 0))) {
        if (t->have_length && t->content_length > e->o.max_bytes)
            finish_job(e, j, FETCH_TOO_LARGE, NULL, 0, "Content-Length %llu over max_bytes %llu",
                       (unsigned long long)t->content_length, (unsigned long long)e->o.max_bytes);
        else
            finish_job(e, j, FETCH_TOO_LARGE, NULL, 0, "body over max_bytes %llu",
                       (unsigned long long)e->o.max_bytes);
        return;
    }
    /* A non-2xx answer is judged by its status even when its body was cut short on purpose. */
    int answered = rc == CURLE_OK || (code >= 300 && (t->discard_abort || rc == CURLE_FILESIZE_EXCEEDED));
    if (!answered) {
        int retry = 0;
        fetch_status s = t->blocked ? FETCH_BLOCKED_ADDRESS : curl_status(rc, &retry);
        if (t->blocked)
            retry = 0;
        if (retry && can_retry(e, j)) {
            schedule_retry(e, j, backoff_delay(e, j->attempts - 1));
            return;
        }
        if (t->blocked)
            finish_job(e, j, s, NULL, 0, "%s: %s, refused (allow_private is off)", j->cur_url, t->blocked_msg);
        else
            finish_job(e, j, s, NULL, 0, "%s", curl_reason(t, rc));
        return;
    }
    if (is_2xx) {
        if (t->len == 0)
            finish_job(e, j, FETCH_EMPTY, NULL, 0, "HTTP %ld with an empty body", code);
        else
            finish_job(e, j, FETCH_OK, t->body, t->len, NULL);
        return;
    }
    if (code == 301 || code == 302 || code == 303 || code == 307 || code == 308) {
        follow_redirect(e, j, t);
        return;
    }
    if (code == 408 || code == 429 || code >= 500) {
        double delay = -1;
        if ((code == 429 || code == 503) && t->retry_after) {
            double ra;
            if (parse_retry_after(t->retry_after, &ra) == 0) {
                if (ra > e->o.max_retry_after) {
                    finish_job(e, j, FETCH_HTTP_ERROR, NULL, 0,
                               "HTTP %ld with Retry-After %.0f s, over max_retry_after %.0f s", code, ra,
                               e->o.max_retry_after);
                    return;
                }
                delay = ra;
                /* the whole host asked for a pause, not just this URL */
                double until = mono_now() + ra;
                if (j->host && j->host->next_start < until)
                    j->host->next_start = until;
            }
        }
        if (can_retry(e, j)) {
            schedule_retry(e, j, delay >= 0 ? delay : backoff_delay(e, j->attempts - 1));
            return;
        }
        finish_job(e, j, FETCH_HTTP_ERROR, NULL, 0, "HTTP %ld after %d attempt%s", code, j->attempts,
                   j->attempts == 1 ? "" : "s");
        return;
    }
    finish_job(e, j, FETCH_HTTP_ERROR, NULL, 0, "HTTP %ld", code);
}

static void xfer_done(fetch_engine *e, CURL *easy, CURLcode rc)
{
    char *priv = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
    xfer *t = (xfer *)(void *)priv;
    if (!t)
        return;
    curl_multi_remove_handle(e->multi, easy);
    running_remove(e, t);
    e->running--;
    t->host->inflight--;
    if (t->code == 0 && rc == CURLE_OK)
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &t->code);
    if (t->job)
        job_finished(e, t, rc);
    else
        robots_finished(e, t, rc);
    xfer_put(e, t);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Scheduling                                                                                              */

/* Takes a job from the feed into its host queue, or delivers it at once when its URL is unusable. */
static void accept_job(fetch_engine *e, uint64_t id, const char *url)
{
    job *j = calloc(1, sizeof *j);
    char *u = strdup(url);
    if (!j || !u) {
        free(j);
        free(u);
        lvd_fail("out of memory queueing %.200s", url);
        e->aborted = 1;
        return;
    }
    j->id = id;
    j->url = u;
    e->held++;
    char why[160];
    target tg;
    fetch_status s = parse_target(NULL, url, &tg, why, sizeof why);
    if (s != FETCH_OK) {
        finish_job(e, j, s, NULL, 0, "%s", why);
        return;
    }
    host *h = host_get(e, tg.key);
    if (!h) {
        target_free(&tg);
        finish_job(e, j, FETCH_ERROR, NULL, 0, "out of memory");
        return;
    }
    j->cur_url = tg.url;
    j->path = tg.path;
    free(tg.key);
    job_set_host(j, h);
    host_push(e, h, j);
}

/* Pulls jobs while few enough are held: at most 2 * concurrency parked in host queues (and 4 * concurrency
 * parked or waiting for a retry), so a long URL list never sits in memory and a queue full of jobs for
 * saturated hosts stops the pulling until something finishes. */
static void pull_feed(fetch_engine *e, fetch_feed_fn feed)
{
    size_t conc = (size_t)e->o.concurrency;
    while (!e->feed_done && !e->aborted && e->parked < 2 * conc && e->parked + e->heap_len < 4 * conc) {
        uint64_t id = 0;
        e->feedbuf[0] = '\0';
        int r = feed(e->ctx, &id, e->feedbuf, URL_CAP);
        if (r == 0) {
            e->feed_done = 1;
            break;
        }
        if (r < 0) {
            if (!lvd_errmsg()[0])
                lvd_fail("the feed aborted the run");
            e->aborted = 1;
            break;
        }
        e->feedbuf[URL_CAP - 1] = '\0';
        accept_job(e, id, e->feedbuf);
    }
}

static void fire_timers(fetch_engine *e)
{
    double now = mono_now();
    while (e->heap_len > 0 && e->heap[0].due <= now) {
        job *j = heap_pop(e);
        host_push(e, j->host, j);
    }
}

/* Runs one parked job's robots.txt check and starts its request. */
static void start_job(fetch_engine *e, host *h, job *j)
{
    if (h->rfail != FETCH_OK) {
        finish_job(e, j, h->rfail, NULL, 0, "%s", h->rfail_msg ? h->rfail_msg : "robots.txt disallows everything");
        return;
    }
    if (h->rules && !robots_allowed(h->rules, j->path)) {
        finish_job(e, j, FETCH_ROBOTS, NULL, 0, "%s disallowed by %s/robots.txt", j->cur_url, h->key);
        return;
    }
    const char *why = NULL;
    if (xfer_start(e, h, j, &why) != 0)
        finish_job(e, j, FETCH_ERROR, NULL, 0, "starting %s: %s", j->cur_url, why);
}

/* Starts what the limits allow: global concurrency, per-host concurrency, per-host interval, and
 * robots.txt first. Records in e->next_wake when an interval ends. */
static void dispatch(fetch_engine *e)
{
    size_t conc = (size_t)e->o.concurrency;
    double now = mono_now();
    e->next_wake = HUGE_VAL;
    host *h = e->ahead;
    while (h && e->running < conc && !e->aborted) {
        host *next = h->anext;
        while (h->qhead && e->running < conc && !e->aborted) {
            if (h->rstate == ROBOTS_FETCHING)
                break;
            if (h->inflight >= e->o.per_host)
                break;
            if (h->next_start > now) {
                if (h->next_start < e->next_wake)
                    e->next_wake = h->next_start;
                break;
            }
            if (h->rstate == ROBOTS_NONE) {
                const char *why = NULL;
                if (xfer_start(e, h, NULL, &why) == 0) {
                    h->rstate = ROBOTS_FETCHING;
                } else {
                    h->rstate = ROBOTS_READY;
                    h->rfail = FETCH_ERROR;
                    free(h->rfail_msg);
                    if (asprintf(&h->rfail_msg, "%s/robots.txt: %s", h->key, why) < 0)
                        h->rfail_msg = NULL;
                }
                continue;
            }
            start_job(e, h, host_pop(e, h));
        }
        if (!h->qhead)
            active_remove(e, h);
        h = next;
    }
}

static void drain_messages(fetch_engine *e)
{
    CURLMsg *m;
    int left;
    while (!e->aborted && (m = curl_multi_info_read(e->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle; /* m dies with curl_multi_remove_handle */
        CURLcode rc = m->data.result;
        xfer_done(e, easy, rc);
    }
}

/* Drops everything still held after an abort; nothing more is delivered. */
static void cancel_all(fetch_engine *e)
{
    while (e->running_xfers) {
        xfer *t = e->running_xfers;
        curl_multi_remove_handle(e->multi, t->easy);
        running_remove(e, t);
        e->running--;
        t->host->inflight--;
        if (t->job) {
            e->held--;
            job_free(t->job);
        } else if (t->host->rstate == ROBOTS_FETCHING) {
            t->host->rstate = ROBOTS_NONE;
        }
        xfer_put(e, t);
    }
    while (e->ahead) {
        host *h = e->ahead;
        job *j;
        while ((j = host_pop(e, h)) != NULL) {
            e->held--;
            job_free(j);
        }
        active_remove(e, h);
    }
    while (e->heap_len > 0) {
        e->held--;
        job_free(heap_pop(e));
    }
}

/* ------------------------------------------------------------------------------------------------------ */
/* Engine                                                                                                  */

int fetch_engine_new(fetch_engine **out, const fetch_opts *opts)
{
    *out = NULL;
    if (opts->concurrency < 1 || opts->per_host < 1)
        return lvd_fail("fetch: concurrency (%d) and per_host (%d) must be at least 1", opts->concurrency,
                        opts->per_host);
    if (opts->max_redirects < 0 || opts->retries < 0)
        return lvd_fail("fetch: max_redirects (%d) and retries (%d) must not be negative", opts->max_redirects,
                        opts->retries);
    if (opts->concurrency > 1000000)
        return lvd_fail("fetch: concurrency %d is too large", opts->concurrency);
    if (!(opts->backoff_base >= 0) || !(opts->backoff_max >= 0) || !(opts->max_retry_after >= 0) ||
        !(opts->max_crawl_delay >= 0) || !(opts->host_interval >= 0) || !(opts->timeout >= 0) ||
        !(opts->connect_timeout >= 0))
        return lvd_fail("fetch: timeouts, intervals and backoff must be non-negative numbers");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return lvd_fail("fetch: libcurl initialisation failed");
    fetch_engine *e = calloc(1, sizeof *e);
    if (!e) {
        curl_global_cleanup();
        return lvd_fail("fetch: out of memory");
    }
    e->o = *opts;
    e->ua = strdup(opts->user_agent ? opts->user_agent : LVD_DEFAULT_UA);
    e->o.user_agent = e->ua;
    e->feedbuf = malloc(URL_CAP);
    e->multi = curl_multi_init();
    if (!e->ua || !e->feedbuf || !e->multi || hosts_grow(e) != 0) {
        fetch_engine_free(e);
        return lvd_fail("fetch: out of memory");
    }
    curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)opts->per_host);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)e;
    *out = e;
    return 0;
}

int fetch_engine_run(fetch_engine *e, fetch_feed_fn feed, fetch_done_fn done, void *ctx)
{
    if (e->in_run)
        return lvd_fail("fetch: fetch_engine_run called from inside a callback");
    e->in_run = 1;
    lvd_err_clear(); /* so an abort without a message from the callback gets a generic one */
    e->done = done;
    e->ctx = ctx;
    e->aborted = 0;
    e->feed_done = 0;
    int rc = 0;
    for (;;) {
        pull_feed(e, feed);
        fire_timers(e);
        dispatch(e);
        if (e->aborted)
            break;
        if (e->feed_done && e->held == 0)
            break;
        double wake = e->next_wake;
        if (e->heap_len > 0 && e->heap[0].due < wake)
            wake = e->heap[0].due;
        int timeout_ms = POLL_MAX_MS;
        if (wake < HUGE_VAL) {
            double d = (wake - mono_now()) * 1000.0;
            timeout_ms = d <= 0 ? 0 : d >= POLL_MAX_MS ? POLL_MAX_MS : (int)d + 1;
        }
        CURLMcode mc = curl_multi_poll(e->multi, NULL, 0, timeout_ms, NULL);
        if (mc == CURLM_OK) {
            int still = 0;
            mc = curl_multi_perform(e->multi, &still);
        }
        if (mc != CURLM_OK) {
            lvd_fail("fetch: libcurl multi interface failed: %s", curl_multi_strerror(mc));
            e->aborted = 1;
            break;
        }
        drain_messages(e);
        if (e->aborted)
            break;
    }
    if (e->aborted) {
        cancel_all(e);
        if (!lvd_errmsg()[0])
            lvd_fail("fetch: a callback aborted the run");
        rc = -1;
    }
    e->in_run = 0;
    return rc;
}

void fetch_engine_stats(const fetch_engine *e, fetch_stats *out)
{
    *out = e->st;
}

void fetch_engine_free(fetch_engine *e)
{
    if (!e)
        return;
    if (e->multi)
        cancel_all(e);
    while (e->free_xfers) {
        xfer *t = e->free_xfers;
        e->free_xfers = t->next;
        xfer_destroy(t);
    }
    for (size_t b = 0; b < e->nbuckets; b++) {
        host *h = e->buckets[b];
        while (h) {
            host *next = h->hnext;
            host_free(h);
            h = next;
        }
    }
    free(e->buckets);
    free(e->heap);
    if (e->multi)
        curl_multi_cleanup(e->multi);
    free(e->feedbuf);
    free(e->ua);
    free(e);
    curl_global_cleanup();
}
