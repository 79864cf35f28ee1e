/* sha256.h — SHA-256 digests (OpenSSL EVP underneath), used for content addressing. */
#ifndef LVD_SHA256_H
#define LVD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32
#define SHA256_HEX 65 /* 64 lowercase hex digits + NUL */

/* digest of len bytes at data. */
void sha256_buf(const void *data, size_t len, uint8_t out[SHA256_BYTES]);

/* Lowercase hex of a digest. */
void sha256_to_hex(const uint8_t digest[SHA256_BYTES], char out[SHA256_HEX]);

/* sha256_buf + sha256_to_hex. */
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX]);

/* Streaming digest. sha256_new returns NULL only when out of memory. */
typedef struct sha256_ctx sha256_ctx;
sha256_ctx *sha256_new(void);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[SHA256_BYTES]); /* also frees c */

/* Lowercase hex digest of the whole file at path, read in 64 KiB blocks. Returns 0 or -1 (message names path:
 * cannot open, read error, out of memory). */
int sha256_file(const char *path, char out[SHA256_HEX]);

#endif
