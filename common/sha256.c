/* sha256.c — SHA-256 digests through OpenSSL's EVP interface (see sha256.h). */
#include "sha256.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

struct sha256_ctx {
    EVP_MD_CTX *md; /* owned; freed by sha256_final */
    int failed;     /* an EVP call failed: sha256_final yields an all-zero digest */
};

/* The EVP calls below fail only when OpenSSL cannot allocate. The void contract has no error path, so a
 * failure yields an all-zero digest, which never matches real content and so cannot alias another image. */
void sha256_buf(const void *data, size_t len, uint8_t out[SHA256_BYTES])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != SHA256_BYTES)
        memset(out, 0, SHA256_BYTES);
}

void sha256_to_hex(const uint8_t digest[SHA256_BYTES], char out[SHA256_HEX])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < SHA256_BYTES; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[2 * SHA256_BYTES] = '\0';
}

void sha256_hex(const void *data, size_t len, char out[SHA256_HEX])
{
    uint8_t d[SHA256_BYTES];
    sha256_buf(data, len, d);
    sha256_to_hex(d, out);
}

sha256_ctx *sha256_new(void)
{
    sha256_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c->md);
        free(c);
        return NULL;
    }
    return c;
}

void sha256_update(sha256_ctx *c, const void *data, size_t len)
{
    if (!c->failed && len > 0 && EVP_DigestUpdate(c->md, data, len) != 1)
        c->failed = 1;
}

void sha256_final(sha256_ctx *c, uint8_t out[SHA256_BYTES])
{
    unsigned int n = 0;
    if (c->failed || EVP_DigestFinal_ex(c->md, out, &n) != 1 || n != SHA256_BYTES)
        memset(out, 0, SHA256_BYTES);
    EVP_MD_CTX_free(c->md);
    free(c);
}

int sha256_file(const char *path, char out[SHA256_HEX])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail_errno("cannot open %s", path);
    sha256_ctx *c = sha256_new();
    if (!c) {
        fclose(f);
        return lvd_fail("%s: out of memory", path);
    }
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0)
        sha256_update(c, buf, k);
    int err = ferror(f);
    fclose(f);
    uint8_t d[SHA256_BYTES];
    sha256_final(c, d);
    if (err)
        return lvd_fail_errno("reading %s", path);
    sha256_to_hex(d, out);
    return 0;
}
