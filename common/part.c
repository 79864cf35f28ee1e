/* part.c — placeholder */
