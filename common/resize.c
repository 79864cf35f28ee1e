/* resize.c — placeholder */
