/* phash.c — placeholder */
