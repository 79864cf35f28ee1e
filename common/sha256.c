/* sha256.c — placeholder */
