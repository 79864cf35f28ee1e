/* progress.c — placeholder */
