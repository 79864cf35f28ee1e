/* urllist.c — placeholder */
