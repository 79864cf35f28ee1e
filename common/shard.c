/* shard.c — placeholder */
