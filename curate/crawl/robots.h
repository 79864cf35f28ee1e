/* robots.h — robots.txt (RFC 9309) and X-Robots-Tag opt-outs.
 *
 * robots.txt: the group whose user-agent line matches our product token (case-insensitive; the token is the
 * User-Agent up to the first '/' or space) is used, else the "*" group; several groups naming the same agent
 * merge. The most specific (longest) matching rule wins; on a tie Allow wins. '*' matches any run of
 * characters and a trailing '$' anchors the end. Paths are compared after percent-decoding unreserved
 * characters consistently on both sides. Unknown lines are ignored; a file that is not text is treated as
 * empty. Crawl-delay of the chosen group is kept.
 *
 * X-Robots-Tag (img2dataset semantics): a header value is a comma-separated list of directives, optionally
 * prefixed by "<agent>:" (that directive list then applies only to that agent, or to all with "*"). The
 * directives noai, noimageai, noindex and noimageindex (case-insensitive) opt the response out.
 */
#ifndef LVD_ROBOTS_H
#define LVD_ROBOTS_H

#include <stddef.h>

typedef struct robots robots;

/* Parses a robots.txt body for user_agent. Returns NULL only when out of memory. */
robots *robots_parse(const char *txt, size_t len, const char *user_agent);

/* Rules for the two fetch outcomes that have no body: allow everything (robots.txt missing, 4xx) and
 * disallow everything (5xx or unreachable, RFC 9309 2.3.1.4). */
robots *robots_allow_all(void);
robots *robots_disallow_all(void);

/* 1 if path (the URL's path plus "?query", starting with '/'; "" means "/") may be fetched, else 0. */
int robots_allowed(const robots *r, const char *path);

/* Crawl-delay in seconds from the chosen group, or 0. */
double robots_crawl_delay(const robots *r);

void robots_free(robots *r);

/* 1 if one X-Robots-Tag header value opts out for user_agent (product token matching as above), else 0. */
int xrobots_opted_out(const char *value, const char *user_agent);

#endif
