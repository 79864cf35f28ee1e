/* netaddr.c — placeholder */
