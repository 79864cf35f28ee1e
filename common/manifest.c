/* manifest.c — reading an lvd manifest (manifest.h). Not written yet: every entry point fails. */
#include "manifest.h"

#include "err.h"

int manifest_open(manifest **out, const char *path)
{
    *out = NULL;
    return lvd_fail("%s: manifest reader not implemented yet", path);
}
void manifest_close(manifest *m) { (void)m; }
size_t manifest_count(const manifest *m) { (void)m; return 0; }
size_t manifest_shard_count(const manifest *m) { (void)m; return 0; }
const char *manifest_shard_path(const manifest *m, size_t shard) { (void)m; (void)shard; return NULL; }
uint64_t manifest_shard_bytes(const manifest *m, size_t shard) { (void)m; (void)shard; return 0; }
const char *manifest_info(const manifest *m, const char *key) { (void)m; (void)key; return NULL; }
int manifest_sample_meta(const manifest *m, size_t i, manifest_sample *out)
{
    (void)m; (void)i; (void)out;
    return lvd_fail("manifest reader not implemented yet");
}
int manifest_read(const manifest *m, size_t i, void *buf, size_t cap, size_t *len)
{
    (void)m; (void)i; (void)buf; (void)cap; (void)len;
    return lvd_fail("manifest reader not implemented yet");
}
int manifest_read_checked(const manifest *m, size_t i, void *buf, size_t cap, size_t *len)
{
    return manifest_read(m, i, buf, cap, len);
}
uint64_t manifest_epoch_length(const manifest *m) { (void)m; return 0; }
int manifest_order(const manifest *m, uint64_t seed, uint64_t epoch, uint32_t rank, uint32_t ranks,
                   uint32_t **out, size_t *n)
{
    (void)m; (void)seed; (void)epoch; (void)rank; (void)ranks; (void)out; (void)n;
    return lvd_fail("manifest reader not implemented yet");
}
