/* image.c — placeholder */
