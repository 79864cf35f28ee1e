/* fetch.c — placeholder */
