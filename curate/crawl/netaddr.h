/* netaddr.h — classify IP addresses, so the crawler can refuse non-public destinations (SSRF safety).
 *
 * IPv4 and IPv6 are both handled, including IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible IPv6
 * addresses, which are classified as the IPv4 address they carry.
 */
#ifndef LVD_NETADDR_H
#define LVD_NETADDR_H

#include <sys/socket.h>

typedef enum addr_class {
    ADDR_PUBLIC = 0,
    ADDR_LOOPBACK,    /* 127/8, ::1 */
    ADDR_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7 */
    ADDR_LINK_LOCAL,  /* 169.254/16, fe80::/10 */
    ADDR_MULTICAST,   /* 224/4, ff00::/8 */
    ADDR_UNSPECIFIED, /* 0.0.0.0/8, :: */
    ADDR_RESERVED,    /* 240/4, 255.255.255.255, 192.0.0/24, 198.18/15, documentation ranges, ... */
    ADDR_INVALID      /* not an IP address */
} addr_class;

addr_class addr_classify(const struct sockaddr *sa);

/* The address in text form, e.g. "10.1.2.3" or "fe80::1". */
addr_class addr_classify_text(const char *ip);

/* "public", "loopback", "private", "link-local", "multicast", "unspecified", "reserved", "invalid". */
const char *addr_class_name(addr_class c);

#endif
