/* store.c — placeholder */
