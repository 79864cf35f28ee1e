/* test_safetensors.c — safetensors reading against a file written by torch (F32/F16/BF16/I64 tensors and
 * torch's float32 values of the halves), our writer checked by an independent Python parser, and malformed
 * headers (offsets outside the file, overlaps, sizes not matching shapes, bad JSON, a header length beyond the
 * file, ...) failing with messages that name the file and the tensor.
 * References come from tests/unit/tensor_ref.py, run as a subprocess. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "safetensors.h"

static char scratch[64];
static char script[1024];
static char gen_dir[128];

/* ---------------------------------------------------------------------------------------------------- */
/* helpers */

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Writes a safetensors file: 8-byte length (hlen_field, or the header's length when UINT64_MAX), the header
 * text, then data_len bytes of data (a byte ramp). */
static void make_st(const char *path, const char *header, size_t data_len, uint64_t hlen_field)
{
    size_t hl = strlen(header);
    uint64_t field = hlen_field == UINT64_MAX ? (uint64_t)hl : hlen_field;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t l8[8];
    for (int i = 0; i < 8; i++)
        l8[i] = (uint8_t)(field >> (8 * i));
    fwrite(l8, 1, 8, f);
    fwrite(header, 1, hl, f);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(i & 0x7f), f);
    fclose(f);
}

/* Expects st_open to fail with a message naming the file and containing word1 and word2 (either may be NULL). */
static void expect_open_error(const char *path, const char *word1, const char *word2)
{
    st_file *f = (st_file *)(uintptr_t)1;
    lvd_err_clear();
    assert_int_equal(st_open(path, &f), -1);
    assert_null(f);
    const char *msg = lvd_errmsg();
    if (!strstr(msg, path) || (word1 && !strstr(msg, word1)) || (word2 && !strstr(msg, word2)))
        fail_msg("error for %s lacks the path or '%s'/'%s': %s", path, word1 ? word1 : "", word2 ? word2 : "", msg);
}

/* ---------------------------------------------------------------------------------------------------- */
/* reading torch's file */

static void check_tensor_vs_raw(const st_file *f, const char *name, st_dtype dtype, const char *dtype_name,
                                int32_t ndim, const int64_t *shape)
{
    const st_tensor *t = st_find(f, name);
    if (!t)
        fail_msg("tensor %s not found", name);
    assert_string_equal(t->name, name);
    assert_int_equal(t->dtype, dtype);
    assert_string_equal(t->dtype_name, dtype_name);
    assert_int_equal(t->ndim, ndim);
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) {
        assert_int_equal(t->shape[i], shape[i]);
        n *= shape[i];
    }
    assert_int_equal(st_numel(t), n);
    char raw[256];
    snprintf(raw, sizeof raw, "%s/%s.raw", gen_dir, name);
    size_t len;
    uint32_t *ref = (uint32_t *)scratch_slurp(raw, &len);
    assert_int_equal(len, (size_t)n * 4);
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    if (st_to_f32(t, v) != 0)
        fail_msg("st_to_f32 %s: %s", name, lvd_errmsg());
    for (int64_t i = 0; i < n; i++)
        if (f2u(v[i]) != ref[i])
            fail_msg("%s[%lld]: got 0x%08x (%g), torch 0x%08x", name, (long long)i, f2u(v[i]), v[i], ref[i]);
    free(v);
    free(ref);
}

static void test_read_torch_file(void **state)
{
    (void)state;
    char p[256];
    scratch_join(p, sizeof p, gen_dir, "ref.safetensors");
    st_file *f;
    if (st_open(p, &f) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_int_equal(st_count(f), 4);
    const char *order[] = {"a.f32", "b.f16", "c.bf16", "d.i64"};
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(st_at(f, i)->name, order[i]);
    assert_null(st_at(f, 4));
    check_tensor_vs_raw(f, "a.f32", ST_F32, "F32", 3, (int64_t[]){2, 3, 4});
    check_tensor_vs_raw(f, "b.f16", ST_F16, "F16", 2, (int64_t[]){4, 6});
    check_tensor_vs_raw(f, "c.bf16", ST_BF16, "BF16", 1, (int64_t[]){24});

    const st_tensor *t = st_find(f, "d.i64");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_OTHER);
    assert_string_equal(t->dtype_name, "I64");
    assert_int_equal(t->nbytes, 48);
    int64_t first;
    memcpy(&first, t->data + 8, 8);
    assert_int_equal(first, 1); /* arange(6)[1], straight from the mapping */
    float tmp[6];
    lvd_err_clear();
    assert_int_equal(st_to_f32(t, tmp), -1);
    assert_non_null(strstr(lvd_errmsg(), "d.i64"));
    assert_non_null(strstr(lvd_errmsg(), "I64"));

    assert_null(st_find(f, "a.f3"));
    assert_null(st_find(f, "__metadata__"));
    assert_string_equal(st_meta(f, "who"), "torch");
    assert_string_equal(st_meta(f, "n"), "4");
    assert_null(st_meta(f, "missing"));
    st_close(f);
}

/* ---------------------------------------------------------------------------------------------------- */
/* round trip and Python's view of our files */

static void test_write_round_trip(void **state)
{
    (void)state;
    char dir[128], p[256];
    scratch_join(dir, sizeof dir, scratch, "rt");
    assert_int_equal(mkdir(dir, 0755), 0);
    float w[15], s = -0.0f, x4[12], empty_dummy = 0;
    for (int i = 0; i < 15; i++)
        w[i] = (float)i * 0.1f - 0.7f;
    w[3] = INFINITY;
    w[4] = 1e-42f; /* subnormal */
    for (int i = 0; i < 12; i++)
        x4[i] = (float)(i * i) - 3.5f;
    (void)empty_dummy;
    const st_write_tensor t[] = {
        {"blocks.0.w", 2, {3, 5}, w},
        {"scalar", 0, {0}, &s},
        {"empty", 2, {0, 4}, NULL},
        {"x4d", 4, {2, 1, 3, 2}, x4},
        {"we\"ird\\name", 1, {2}, w + 5},
    };
    const size_t n = sizeof t / sizeof t[0];
    const char *meta[] = {"format", "lvd-vit", "text", "line\nbreak \"quoted\" \\ tab\t", "utf8", "\xc3\xbc\xc3\xaf"};
    scratch_join(p, sizeof p, dir, "m.safetensors");
    if (st_write(p, t, n, meta, 3) != 0)
        fail_msg("%s", lvd_errmsg());

    /* header length field and 8-byte alignment of the data */
    size_t len;
    uint8_t *b = scratch_slurp(p, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | b[i];
    assert_int_equal((8 + hl) % 8, 0);
    assert_int_equal(len, 8 + hl + 4 * (15 + 1 + 0 + 12 + 2));
    free(b);

    st_file *f;
    if (st_open(p, &f) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_int_equal(st_count(f), n);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *r = st_at(f, i);
        assert_string_equal(r->name, t[i].name);
        assert_int_equal(r->dtype, ST_F32);
        assert_int_equal(r->ndim, t[i].ndim);
        int64_t cnt = 1;
        for (int32_t k = 0; k < r->ndim; k++) {
            assert_int_equal(r->shape[k], t[i].shape[k]);
            cnt *= t[i].shape[k];
        }
        assert_int_equal(r->nbytes, (size_t)cnt * 4);
        float got[16];
        assert_int_equal(st_to_f32(r, got), 0);
        if (cnt)
            assert_memory_equal(got, t[i].data, (size_t)cnt * 4);
    }
    assert_string_equal(st_meta(f, "format"), "lvd-vit");
    assert_string_equal(st_meta(f, "text"), meta[3]);
    assert_string_equal(st_meta(f, "utf8"), meta[5]);
    st_close(f);

    /* the independent parser: raw values per tensor, metadata and order as JSON */
    for (size_t i = 0; i < n; i++) {
        char raw[300];
        snprintf(raw, sizeof raw, "%s/%s.raw", dir, t[i].name);
        int64_t cnt = 1;
        for (int32_t k = 0; k < t[i].ndim; k++)
            cnt *= t[i].shape[k];
        scratch_spit(raw, t[i].data, (size_t)cnt * 4);
    }
    scratch_join(p, sizeof p, dir, "meta.json");
    static const char meta_json[] =
        "{\"meta\": {\"format\": \"lvd-vit\", \"text\": \"line\\nbreak \\\"quoted\\\" \\\\ tab\\t\", "
        "\"utf8\": \"\\u00fc\\u00ef\"},\n"
        " \"order\": [\"blocks.0.w\", \"scalar\", \"empty\", \"x4d\", \"we\\\"ird\\\\name\"],\n"
        " \"shapes\": {\"blocks.0.w\": [3, 5], \"scalar\": [], \"empty\": [0, 4], \"x4d\": [2, 1, 3, 2],"
        " \"we\\\"ird\\\\name\": [2]}}\n";
    scratch_spit(p, meta_json, strlen(meta_json));
    char args[600], out[256];
    snprintf(args, sizeof args, "st-check '%s/m.safetensors' '%s'", dir, dir);
    scratch_python(script, args, out, sizeof out);
    assert_non_null(strstr(out, "OK 5"));

    /* no metadata, no tensors */
    scratch_join(p, sizeof p, dir, "none.safetensors");
    assert_int_equal(st_write(p, NULL, 0, NULL, 0), 0);
    assert_int_equal(st_open(p, &f), 0);
    assert_int_equal(st_count(f), 0);
    assert_null(st_meta(f, "format"));
    st_close(f);
}

static void test_write_errors(void **state)
{
    (void)state;
    float v[2] = {1, 2};
    char p[256];
    scratch_join(p, sizeof p, scratch, "bad-write.safetensors");
    const st_write_tensor dup[] = {{"a", 1, {2}, v}, {"a", 1, {2}, v}};
    lvd_err_clear();
    assert_int_equal(st_write(p, dup, 2, NULL, 0), -1);
    assert_non_null(strstr(lvd_errmsg(), "'a'"));
    const st_write_tensor neg[] = {{"neg", 1, {-2}, v}};
    assert_int_equal(st_write(p, neg, 1, NULL, 0), -1);
    assert_non_null(strstr(lvd_errmsg(), "neg"));
    const st_write_tensor meta_name[] = {{"__metadata__", 1, {2}, v}};
    assert_int_equal(st_write(p, meta_name, 1, NULL, 0), -1);
    assert_int_equal(access(p, F_OK), -1);
    const st_write_tensor ok[] = {{"a", 1, {2}, v}};
    assert_int_equal(st_write("/nonexistent-dir/x.safetensors", ok, 1, NULL, 0), -1);
    assert_non_null(strstr(lvd_errmsg(), "/nonexistent-dir/x.safetensors"));
}

/* ---------------------------------------------------------------------------------------------------- */
/* malformed files */

static void test_malformed(void **state)
{
    (void)state;
    char p[256];
#define CASE(file, header, data_len, hlen, w1, w2)                                                              \
    do {                                                                                                        \
        scratch_join(p, sizeof p, scratch, file);                                                                    \
        make_st(p, header, data_len, hlen);                                                                     \
        expect_open_error(p, w1, w2);                                                                           \
    } while (0)
    const uint64_t H = UINT64_MAX; /* the true header length */

    /* a valid file first, so the cases below fail for their one defect */
    scratch_join(p, sizeof p, scratch, "valid.safetensors");
    make_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, H);
    st_file *f;
    if (st_open(p, &f) != 0)
        fail_msg("%s", lvd_errmsg());
    st_close(f);

    CASE("outside.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16, H,
         "'a'", "outside");
    CASE("outside2.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
         16, H, "'b'", "outside");
    CASE("overlap.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
         24, H, "overlap", "'b'");
    CASE("same.safetensors",
         "{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}",
         8, H, "overlap", "'a'");
    CASE("size.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 16, H, "'a'",
         "needs 24");
    CASE("size16.safetensors", "{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, H, "'a'",
         "needs 8");
    CASE("badjson.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}", 16, H,
         "not valid JSON", NULL);
    CASE("badjson2.safetensors", "{\"a\": }", 0, H, "not valid JSON", NULL);
    CASE("trailing.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} xx", 4, H,
         "after the JSON", NULL);
    CASE("hlen.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 5000,
         "header length 5000", "larger than the file");
    CASE("hlen_huge.safetensors", "{}", 0, UINT64_MAX - 1, "larger than the file", NULL);
    CASE("notobj.safetensors", "[1, 2, 3]", 0, H, "'{'", NULL);
    CASE("dtype.safetensors", "{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, H, "'a'",
         "unknown dtype 'F7'");
    CASE("nodtype.safetensors", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, H, "'a'", "dtype");
    CASE("negoff.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, H, "'a'",
         "data_offsets");
    CASE("reversed.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, H, "'a'",
         "data_offsets");
    CASE("fracoff.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4.5]}}", 8, H,
         "'a'", "data_offsets");
    CASE("threeoff.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, H,
         "'a'", "data_offsets");
    CASE("negshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, H,
         "'a'", "shape");
    CASE("strshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, H,
         "'a'", "shape");
    CASE("dims.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, H, "'a'",
         "dimensions");
    CASE("dup.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, H, "'a'", "twice");
    CASE("meta.safetensors", "{\"__metadata__\":{\"k\":3}}", 0, H, "metadata", "'k'");
    CASE("notentry.safetensors", "{\"a\":[1]}", 0, H, "'a'", NULL);

    /* shorter than the length field; missing */
    scratch_join(p, sizeof p, scratch, "tiny.safetensors");
    scratch_spit(p, "\x02\0\0", 3);
    expect_open_error(p, "not a safetensors file", NULL);
    scratch_join(p, sizeof p, scratch, "absent.safetensors");
    expect_open_error(p, "cannot open", NULL);

    /* a torch-written file cut short: its last tensor now ends outside */
    {
        char src[256];
        scratch_join(src, sizeof src, gen_dir, "ref.safetensors");
        size_t len;
        uint8_t *b = scratch_slurp(src, &len);
        scratch_join(p, sizeof p, scratch, "cut.safetensors");
        scratch_spit(p, b, len - 1);
        free(b);
        expect_open_error(p, "'d.i64'", "outside");
    }
#undef CASE
}

/* The scratch directory, and gen/ in it filled by tensor_ref.py st-gen. */
static int setup(void **state)
{
    return scratch_setup_fixtures(state, scratch, sizeof scratch, "st", gen_dir, sizeof gen_dir, script, "st-gen");
}

int main(int argc, char **argv)
{
    snprintf(script, sizeof script, "%s/unit/tensor_ref.py", argc > 1 ? argv[1] : "tests");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_torch_file),
        cmocka_unit_test(test_write_round_trip),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
