/* fetch.h — the crawler's network engine: libcurl's multi interface in one event loop.
 *
 * The engine pulls jobs (id, url) from the caller through a feed callback whenever it has room, so memory is
 * bounded by the concurrency, not by the list length. Per host (scheme://host:port) it keeps a small queue,
 * a concurrency cap and a minimum interval between request starts (the larger of --host-interval and the
 * robots.txt Crawl-delay, capped). All transfers share one DNS cache and connection pool (the multi handle),
 * and HTTP/2 multiplexing is used where offered.
 *
 * Before the first request to a host its robots.txt is fetched once and cached (4xx: allow all; 5xx or
 * network failure: disallow all, RFC 9309). Redirects are followed by the engine itself, hop by hop
 * (max_redirects), so every hop is checked: http/https only, robots.txt of the target host, address policy,
 * per-host limits. Every connection's resolved address is classified (netaddr.h) in libcurl's
 * open-socket callback; loopback, private, link-local, multicast and reserved destinations are refused
 * unless allow_private.
 *
 * Bodies are capped: a Content-Length over max_bytes is refused from the headers, before the body; a body
 * growing past it is aborted. An X-Robots-Tag opt-out (robots.h) discards the body. Transient failures
 * (timeout, connection reset/refused, DNS "try again", HTTP 408/429/5xx) are retried up to `retries` times
 * with exponential backoff and full jitter; 429/503 honour Retry-After (seconds or HTTP date) up to
 * max_retry_after, beyond which the result is final for this run (and transient for --retry-failed).
 */
#ifndef LVD_FETCH_H
#define LVD_FETCH_H

#include <stddef.h>
#include <stdint.h>

typedef enum fetch_status {
    FETCH_OK = 0,             /* 2xx with a body */
    FETCH_HTTP_ERROR,         /* final non-2xx status (http_status says which) */
    FETCH_TIMEOUT,            /* connect/total timeout or low-speed abort */
    FETCH_DNS,                /* name did not resolve */
    FETCH_CONNECT,            /* connection refused/reset/unreachable, TLS failure */
    FETCH_TOO_LARGE,          /* Content-Length or body over max_bytes */
    FETCH_OPTED_OUT,          /* X-Robots-Tag noai/noimageai/noindex/noimageindex */
    FETCH_ROBOTS,             /* disallowed by robots.txt */
    FETCH_BLOCKED_ADDRESS,    /* resolves to a non-public address and allow_private is off */
    FETCH_BAD_SCHEME,         /* not http/https, or a redirect to another scheme */
    FETCH_TOO_MANY_REDIRECTS, /* more than max_redirects hops, or a redirect without a usable Location */
    FETCH_EMPTY,              /* 2xx with an empty body */
    FETCH_ERROR               /* anything else (message in error) */
} fetch_status;

#define FETCH_STATUS_COUNT 13

/* "ok", "http_error", "timeout", "dns", "connect", "too_large", "opted_out", "robots", "blocked_address",
 * "bad_scheme", "too_many_redirects", "empty", "error". These strings are what the catalog stores. */
const char *fetch_status_name(fetch_status s);

/* 1 for outcomes worth retrying in a later run (--retry-failed): timeout, dns, connect, error, and
 * http_error with status 408, 429 or >= 500. */
int fetch_status_transient(fetch_status s, long http_status);

typedef struct fetch_opts {
    int concurrency;          /* transfers in flight, all hosts (default 64) */
    int per_host;             /* transfers in flight per host (default 4) */
    double host_interval;     /* seconds between request starts on one host (default 0) */
    double connect_timeout;   /* seconds (default 10) */
    double timeout;           /* seconds for a whole request (default 30) */
    long low_speed_limit;     /* bytes/s; slower than this for low_speed_time aborts (default 1024) */
    long low_speed_time;      /* seconds (default 10) */
    uint64_t max_bytes;       /* body cap (default 32 MiB) */
    int max_redirects;        /* default 5 */
    int retries;              /* extra attempts for transient failures (default 2) */
    double backoff_base;      /* seconds; attempt n waits uniform(0, base * 2^n) (default 1) */
    double backoff_max;       /* seconds, cap of one backoff (default 30) */
    double max_retry_after;   /* seconds; a longer Retry-After ends the job (default 60) */
    double max_crawl_delay;   /* seconds; cap on robots.txt Crawl-delay (default 10) */
    const char *user_agent;   /* sent on every request and used for robots.txt matching */
    int allow_private;        /* 1: allow loopback/private/link-local destinations (tests, demo) */
    int respect_robots;       /* 1: fetch and honour robots.txt (default 1) */
    int respect_xrobots;      /* 1: honour X-Robots-Tag opt-outs (default 1) */
} fetch_opts;

/* Fills *o with the defaults above (user_agent = LVD's default UA string). */
void fetch_opts_default(fetch_opts *o);

typedef struct fetch_result {
    uint64_t id;              /* the caller's id for the job */
    const char *url;          /* as given */
    fetch_status status;
    long http_status;         /* last HTTP status seen, 0 if none */
    const char *final_url;    /* URL of the last hop (NULL if no request was made) */
    const char *content_type; /* Content-Type of the last response, or NULL */
    const uint8_t *body;      /* FETCH_OK: the body; otherwise NULL */
    size_t body_len;
    int attempts;             /* requests made for this job, counting retries (not redirects) */
    const char *error;        /* readable reason when status != FETCH_OK (NULL on success) */
    double started;           /* wall-clock seconds since the epoch: first request */
    double finished;          /* wall-clock seconds since the epoch: completion */
} fetch_result;

/* Supplies the next job: copy the URL into url (capacity url_cap) and set *id. Return 1 for a job, 0 when
 * there are no more jobs, -1 to abort the run. A URL longer than url_cap - 1 is the caller's to reject. */
typedef int (*fetch_feed_fn)(void *ctx, uint64_t *id, char *url, size_t url_cap);

/* Receives each finished job exactly once. Pointers in *r are valid only during the call. Return 0 to go
 * on, -1 to abort the run (fetch_engine_run then returns -1 after cancelling transfers in flight). */
typedef int (*fetch_done_fn)(void *ctx, const fetch_result *r);

typedef struct fetch_engine fetch_engine;

int fetch_engine_new(fetch_engine **out, const fetch_opts *opts);

/* Runs until the feed is exhausted and every job has been delivered, or until a callback aborts. */
int fetch_engine_run(fetch_engine *e, fetch_feed_fn feed, fetch_done_fn done, void *ctx);

/* Counters of the engine's lifetime (for --json summaries and tests). */
typedef struct fetch_stats {
    uint64_t requests;       /* HTTP requests started, including robots.txt, redirects and retries */
    uint64_t robots_fetches; /* robots.txt requests */
    uint64_t retries;        /* retry attempts */
    uint64_t bytes;          /* body bytes received */
} fetch_stats;

void fetch_engine_stats(const fetch_engine *e, fetch_stats *out);

void fetch_engine_free(fetch_engine *e);

#endif
