/* catalog.c — placeholder */
