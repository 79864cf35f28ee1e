/* netaddr.c — IP address classification for SSRF safety (see netaddr.h). */
#include "netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

/* One special-purpose prefix. Tables are scanned in order, first match wins. */
struct prefix4 {
    uint32_t net; /* host byte order */
    unsigned bits;
    addr_class cls;
};

struct prefix6 {
    uint8_t net[16];
    unsigned bits;
    addr_class cls;
};

#define V4(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

/* IANA IPv4 Special-Purpose Address Registry (RFC 6890 and successors), the parts that matter for deciding
 * whether a destination is on the public Internet. */
static const struct prefix4 special4[] = {
    {V4(0, 0, 0, 0), 8, ADDR_UNSPECIFIED},      /* "this network" */
    {V4(127, 0, 0, 0), 8, ADDR_LOOPBACK},
    {V4(10, 0, 0, 0), 8, ADDR_PRIVATE},         /* RFC 1918 */
    {V4(172, 16, 0, 0), 12, ADDR_PRIVATE},      /* RFC 1918 */
    {V4(192, 168, 0, 0), 16, ADDR_PRIVATE},     /* RFC 1918 */
    {V4(100, 64, 0, 0), 10, ADDR_PRIVATE},      /* RFC 6598 carrier-grade NAT */
    {V4(169, 254, 0, 0), 16, ADDR_LINK_LOCAL},  /* includes cloud metadata 169.254.169.254 */
    {V4(224, 0, 0, 0), 4, ADDR_MULTICAST},
    {V4(240, 0, 0, 0), 4, ADDR_RESERVED},       /* future use, and 255.255.255.255 broadcast */
    {V4(192, 0, 0, 0), 24, ADDR_RESERVED},      /* IETF protocol assignments */
    {V4(192, 0, 2, 0), 24, ADDR_RESERVED},      /* TEST-NET-1 documentation */
    {V4(198, 18, 0, 0), 15, ADDR_RESERVED},     /* benchmarking */
    {V4(198, 51, 100, 0), 24, ADDR_RESERVED},   /* TEST-NET-2 documentation */
    {V4(203, 0, 113, 0), 24, ADDR_RESERVED},    /* TEST-NET-3 documentation */
};

/* IPv6 prefixes that carry no embedded IPv4 address. The embedded forms (mapped, compatible, NAT64, 6to4)
 * are handled in classify6 before this table. */
static const struct prefix6 special6[] = {
    {{0xfe, 0x80}, 10, ADDR_LINK_LOCAL},
    {{0xfc}, 7, ADDR_PRIVATE},                           /* unique local */
    {{0xff}, 8, ADDR_MULTICAST},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, ADDR_RESERVED},       /* documentation */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, ADDR_RESERVED}, /* RFC 8215 local-use NAT64 */
    {{0x01, 0x00}, 64, ADDR_RESERVED},                   /* discard-only */
    {{0xfe, 0xc0}, 10, ADDR_RESERVED},                   /* deprecated site-local */
    {{0x20, 0x01, 0x00, 0x02}, 48, ADDR_RESERVED},       /* benchmarking */
    {{0x20, 0x01, 0x00, 0x10}, 28, ADDR_RESERVED},       /* ORCHID */
    {{0x20, 0x01, 0x00, 0x20}, 28, ADDR_RESERVED},       /* ORCHIDv2 */
};

static addr_class classify4(uint32_t a)
{
    for (size_t i = 0; i < sizeof special4 / sizeof special4[0]; i++) {
        uint32_t mask = special4[i].bits ? ~(uint32_t)0 << (32 - special4[i].bits) : 0;
        if ((a & mask) == special4[i].net)
            return special4[i].cls;
    }
    return ADDR_PUBLIC;
}

static int has_prefix6(const uint8_t *a, const uint8_t *net, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, net, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (net[whole] & mask);
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* a is the 16-byte address in network order. */
static addr_class classify6(const uint8_t *a)
{
    static const uint8_t zero[16];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};

    if (memcmp(a, zero, 15) == 0)
        return a[15] == 0 ? ADDR_UNSPECIFIED : a[15] == 1 ? ADDR_LOOPBACK : classify4(load_be32(a + 12));
    /* Forms that reach an IPv4 host are as dangerous as that host: ::ffff:0:0/96 mapped, ::/96 compatible,
     * 64:ff9b::/96 NAT64 (RFC 6052), 2002::/16 6to4 (RFC 3056, IPv4 in bits 16..47). */
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, zero, 12) == 0 || memcmp(a, nat64, 12) == 0)
        return classify4(load_be32(a + 12));
    if (a[0] == 0x20 && a[1] == 0x02)
        return classify4(load_be32(a + 2));
    for (size_t i = 0; i < sizeof special6 / sizeof special6[0]; i++)
        if (has_prefix6(a, special6[i].net, special6[i].bits))
            return special6[i].cls;
    /* Only 2000::/3 is allocated for global unicast; anything else is not a public destination. */
    if ((a[0] & 0xe0) != 0x20)
        return ADDR_RESERVED;
    return ADDR_PUBLIC;
}

addr_class addr_classify(const struct sockaddr *sa)
{
    if (!sa)
        return ADDR_INVALID;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return classify4(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return classify6(in6->sin6_addr.s6_addr);
    }
    return ADDR_INVALID;
}

addr_class addr_classify_text(const char *ip)
{
    if (!ip)
        return ADDR_INVALID;
    struct in_addr a4;
    if (inet_pton(AF_INET, ip, &a4) == 1)
        return classify4(ntohl(a4.s_addr));
    /* An IPv6 zone ("fe80::1%eth0") names an interface, not a different address: classify without it. */
    char buf[INET6_ADDRSTRLEN];
    const char *pct = strchr(ip, '%');
    size_t n = pct ? (size_t)(pct - ip) : strlen(ip);
    if (n >= sizeof buf || (pct && pct[1] == '\0'))
        return ADDR_INVALID;
    memcpy(buf, ip, n);
    buf[n] = '\0';
    struct in6_addr a6;
    if (inet_pton(AF_INET6, buf, &a6) == 1)
        return classify6(a6.s6_addr);
    return ADDR_INVALID;
}

const char *addr_class_name(addr_class c)
{
    switch (c) {
    case ADDR_PUBLIC: return "public";
    case ADDR_LOOPBACK: return "loopback";
    case ADDR_PRIVATE: return "private";
    case ADDR_LINK_LOCAL: return "link-local";
    case ADDR_MULTICAST: return "multicast";
    case ADDR_UNSPECIFIED: return "unspecified";
    case ADDR_RESERVED: return "reserved";
    case ADDR_INVALID: return "invalid";
    }
    return "invalid";
}
