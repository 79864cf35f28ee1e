/* config.c — placeholder */
