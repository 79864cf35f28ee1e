/* opts.c — placeholder */
