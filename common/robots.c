/* robots.c — placeholder */
