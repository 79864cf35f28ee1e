/* test_npy.c — .npy files against numpy: files numpy wrote are read with numpy's values, files we write are
 * loaded by np.load with the right dtype/shape/values, float16 rounding equals numpy's for special and random
 * values, and malformed files fail with a message naming the file and the problem.
 * References come from tests/unit/tensor_ref.py (numpy), run as a subprocess. */
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
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "npy.h"

static char scratch[64];
static char script[1024]; /* tensor_ref.py */
static char gen_dir[128]; /* numpy-written fixtures */

/* ---------------------------------------------------------------------------------------------------- */
/* helpers */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int half_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

/* Expects npy_read(path) to fail with a message containing the path and each of the given words. */
static void expect_read_error(const char *path, const char *word1, const char *word2)
{
    npy_array a;
    lvd_err_clear();
    assert_int_equal(npy_read(path, &a), -1);
    const char *msg = lvd_errmsg();
    if (!strstr(msg, path) || (word1 && !strstr(msg, word1)) || (word2 && !strstr(msg, word2)))
        fail_msg("error for %s lacks the path or '%s'/'%s': %s", path, word1 ? word1 : "", word2 ? word2 : "", msg);
    assert_null(a.data);
    assert_int_equal(a.ndim, 0);
}

/* ---------------------------------------------------------------------------------------------------- */
/* float16 */

static void test_f16_rounding_vs_numpy(void **state)
{
    (void)state;
    enum { N_SPECIAL = 64, N = 200000 };
    float *v = malloc(N * sizeof *v);
    assert_non_null(v);
    const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x3f800000u, 0xbf800000u, /* 0, -0, 1, -1 */
        0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, /* inf, -inf, qNaN, -qNaN */
        0x7f800001u, 0x7fa00000u, 0x7fffffffu, 0xff812345u, /* sNaN and payloads */
        0x477fe000u, 0x477fefffu, 0x477ff000u, 0x477ff001u, /* 65504, just under 65520, 65520 (tie->inf), above */
        0x47800000u, 0x7f7fffffu, 0xc77ff000u, 0x4f000000u, /* 65536, FLT_MAX, -65520, 2^31 */
        0x38800000u, 0x387fffffu, 0x387fe000u, 0x387ff000u, /* 2^-14 (min normal), just below, subnormal edges */
        0x33800000u, 0x33000000u, 0x33000001u, 0x32ffffffu, /* 2^-24 (min subnormal), 2^-25 tie, above, below */
        0x33c00000u, 0x34200000u, 0x34400000u, 0x34a00000u, /* 1.5 * 2^-24 (tie to even 2), 2.5 * 2^-24, ... */
        0x3f801000u, 0x3f803000u, 0x3f801001u, 0x3f802fffu, /* normal ties to even (down/up) and near ties */
        0x00000001u, 0x80000001u, 0x007fffffu, 0x00400000u, /* float32 subnormals */
        0x3dcccccdu, 0x3e4ccccdu, 0x3e99999au, 0x40490fdbu, /* 0.1, 0.2, 0.3, pi */
        0x387fc000u, 0x38000000u, 0x37800000u, 0x377fffffu, /* more subnormal halves */
    };
    size_t ns = sizeof special / sizeof special[0];
    for (size_t i = 0; i < ns; i++)
        v[i] = u2f(special[i]);
    for (size_t i = ns; i < N; i++) {
        uint32_t r = (uint32_t)rng();
        switch (i % 4) {
        case 0: /* any bit pattern */
            v[i] = u2f(r);
            break;
        case 1: /* the half range, exponent 2^-26 .. 2^17 */
            v[i] = u2f((r & 0x807fffffu) | ((uint32_t)(101 + (r >> 8) % 44) << 23));
            break;
        case 2: { /* exact ties and +-1 ulp around them in the half range */
            uint32_t base = (r & 0x807fe000u) | ((uint32_t)(103 + (r >> 9) % 40) << 23) | 0x1000u;
            uint32_t k = (r >> 28) & 3u;
            v[i] = u2f(k == 1 ? base + 1 : k == 2 ? base - 1 : base);
            break;
        }
        default: /* half subnormal range */
            v[i] = u2f((r & 0x807fffffu) | ((uint32_t)(100 + (r >> 8) % 13) << 23));
            break;
        }
    }
    char in[256], out[256], args[600];
    scratch_join(in, sizeof in, scratch, "f16_in.raw");
    scratch_join(out, sizeof out, scratch, "f16_out.raw");
    scratch_spit(in, v, N * sizeof *v);
    snprintf(args, sizeof args, "f16 '%s' '%s'", in, out);
    scratch_python(script, args, NULL, 0);
    size_t len;
    uint16_t *ref = (uint16_t *)scratch_slurp(out, &len);
    assert_int_equal(len, N * 2);
    size_t bad = 0;
    for (size_t i = 0; i < N; i++) {
        uint16_t h = npy_f32_to_f16(v[i]);
        int ok = half_is_nan(ref[i]) ? (half_is_nan(h) && (h & 0x8000u) == (ref[i] & 0x8000u)) : h == ref[i];
        if (!ok && bad++ < 5)
            print_message("f32 0x%08x: got half 0x%04x, numpy 0x%04x\n", f2u(v[i]), h, ref[i]);
    }
    assert_int_equal(bad, 0);
    free(ref);
    free(v);
}

static void test_f16_to_f32_vs_numpy(void **state)
{
    (void)state;
    char out[256], args[400];
    scratch_join(out, sizeof out, scratch, "f16to32.raw");
    snprintf(args, sizeof args, "f16to32 '%s'", out);
    scratch_python(script, args, NULL, 0);
    size_t len;
    uint32_t *ref = (uint32_t *)scratch_slurp(out, &len);
    assert_int_equal(len, 65536 * 4);
    for (uint32_t h = 0; h < 65536; h++) {
        float f = npy_f16_to_f32((uint16_t)h);
        if (half_is_nan((uint16_t)h)) {
            if (!isnan(f) || !isnan(u2f(ref[h])))
                fail_msg("half 0x%04x: not NaN", h);
            continue;
        }
        if (f2u(f) != ref[h])
            fail_msg("half 0x%04x: got 0x%08x, numpy 0x%08x", h, f2u(f), ref[h]);
        /* every non-NaN half survives the round trip */
        assert_int_equal(npy_f32_to_f16(f), h);
    }
    free(ref);
}

/* ---------------------------------------------------------------------------------------------------- */
/* reading numpy's files */

static void check_numpy_file(const char *name, npy_dtype dtype, int32_t ndim, const int64_t *shape)
{
    char npy[256], raw[256];
    snprintf(npy, sizeof npy, "%s/%s.npy", gen_dir, name);
    snprintf(raw, sizeof raw, "%s/%s.raw", gen_dir, name);
    npy_array a;
    if (npy_read(npy, &a) != 0)
        fail_msg("npy_read %s: %s", npy, lvd_errmsg());
    assert_int_equal(a.dtype, dtype);
    assert_int_equal(a.ndim, ndim);
    int64_t count = 1;
    for (int32_t i = 0; i < ndim; i++) {
        assert_int_equal(a.shape[i], shape[i]);
        count *= shape[i];
    }
    assert_int_equal(npy_count(&a), count);
    size_t len;
    uint32_t *ref = (uint32_t *)scratch_slurp(raw, &len);
    assert_int_equal(len, (size_t)count * 4);
    if (count == 0)
        assert_null(a.data);
    for (int64_t i = 0; i < count; i++)
        if (f2u(a.data[i]) != ref[i])
            fail_msg("%s[%lld]: got %g (0x%08x), numpy %g (0x%08x)", name, (long long)i, a.data[i], f2u(a.data[i]),
                     u2f(ref[i]), ref[i]);
    free(ref);
    npy_free(&a);
    assert_null(a.data);
    assert_int_equal(a.ndim, 0);
}

static void test_read_numpy_files(void **state)
{
    (void)state;
    check_numpy_file("f4_2d", NPY_F32, 2, (int64_t[]){3, 4});
    check_numpy_file("f2_3d", NPY_F16, 3, (int64_t[]){2, 3, 5});
    check_numpy_file("scalar", NPY_F32, 0, (int64_t[]){0});
    check_numpy_file("v1d", NPY_F32, 1, (int64_t[]){7});
    check_numpy_file("empty", NPY_F32, 2, (int64_t[]){0, 5});
    check_numpy_file("v2", NPY_F32, 2, (int64_t[]){2, 2});
    check_numpy_file("v3", NPY_F16, 1, (int64_t[]){3});
}

/* ---------------------------------------------------------------------------------------------------- */
/* numpy reading our files */

typedef struct wcase {
    const char *name;
    npy_dtype dtype;
    int32_t ndim;
    int64_t shape[4];
} wcase;

static void test_write_read_by_numpy(void **state)
{
    (void)state;
    char dir[128], p[256], list[256];
    scratch_join(dir, sizeof dir, scratch, "written");
    assert_int_equal(mkdir(dir, 0755), 0);
    const wcase cases[] = {
        {"a_f32_2d.npy", NPY_F32, 2, {5, 7}},     {"b_f16_2d.npy", NPY_F16, 2, {33, 17}},
        {"c_f32_0d.npy", NPY_F32, 0, {0}},         {"d_f16_1d.npy", NPY_F16, 1, {1}},
        {"e_f32_4d.npy", NPY_F32, 4, {2, 3, 1, 4}}, {"f_f16_empty.npy", NPY_F16, 2, {0, 128}},
        {"g_f32_1d.npy", NPY_F32, 1, {1000}},     {"h_f16_big.npy", NPY_F16, 1, {20000}},
    };
    scratch_join(list, sizeof list, dir, "written.txt");
    FILE *lf = fopen(list, "w");
    assert_non_null(lf);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const wcase *w = &cases[c];
        int64_t count = 1;
        for (int32_t i = 0; i < w->ndim; i++)
            count *= w->shape[i];
        float *v = malloc((size_t)(count ? count : 1) * sizeof *v);
        assert_non_null(v);
        for (int64_t i = 0; i < count; i++) {
            uint32_t r = (uint32_t)rng();
            /* mixed magnitudes, including half overflow, subnormals, inf and NaN */
            v[i] = (i % 97 == 5) ? u2f(r) : ldexpf((float)(r % 2000000) / 1000000.0f - 1.0f, (int)(r >> 27) - 20);
        }
        scratch_join(p, sizeof p, dir, w->name);
        if (npy_write(p, count ? v : NULL, w->ndim, w->shape, w->dtype) != 0)
            fail_msg("npy_write %s: %s", p, lvd_errmsg());
        char raw[300];
        snprintf(raw, sizeof raw, "%s.raw", p);
        scratch_spit(raw, v, (size_t)count * 4);
        fprintf(lf, "%s %s", w->name, w->dtype == NPY_F32 ? "f4" : "f2");
        for (int32_t i = 0; i < w->ndim; i++)
            fprintf(lf, " %lld", (long long)w->shape[i]);
        fprintf(lf, "\n");

        /* and we read back what we wrote */
        npy_array a;
        assert_int_equal(npy_read(p, &a), 0);
        assert_int_equal(a.dtype, w->dtype);
        assert_int_equal(a.ndim, w->ndim);
        for (int64_t i = 0; i < count; i++) {
            float want = w->dtype == NPY_F32 ? v[i] : npy_f16_to_f32(npy_f32_to_f16(v[i]));
            if (!(isnan(want) && isnan(a.data[i])) && f2u(want) != f2u(a.data[i]))
                fail_msg("%s[%lld] read back as %g, wrote %g", w->name, (long long)i, a.data[i], want);
        }
        npy_free(&a);
        free(v);
    }
    fclose(lf);
    char args[400], out[256];
    snprintf(args, sizeof args, "npy-check '%s'", dir);
    scratch_python(script, args, out, sizeof out);
    assert_non_null(strstr(out, "OK 8"));

    /* no temporary files left behind */
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp"))
            fail_msg("temporary file left: %s", e->d_name);
    closedir(d);

    /* overwriting an existing file replaces it */
    scratch_join(p, sizeof p, dir, "a_f32_2d.npy");
    float one = 1.5f;
    assert_int_equal(npy_write(p, &one, 1, (int64_t[]){1}, NPY_F32), 0);
    npy_array a;
    assert_int_equal(npy_read(p, &a), 0);
    assert_int_equal(a.ndim, 1);
    assert_int_equal(a.shape[0], 1);
    assert_true(a.data[0] == 1.5f);
    npy_free(&a);
}

static void test_write_errors(void **state)
{
    (void)state;
    float v[2] = {1, 2};
    lvd_err_clear();
    assert_int_equal(npy_write("/nonexistent-dir/x.npy", v, 1, (int64_t[]){2}, NPY_F32), -1);
    assert_non_null(strstr(lvd_errmsg(), "/nonexistent-dir/x.npy"));
    char p[256];
    scratch_join(p, sizeof p, scratch, "neg.npy");
    assert_int_equal(npy_write(p, v, 1, (int64_t[]){-2}, NPY_F32), -1);
    assert_non_null(strstr(lvd_errmsg(), "negative"));
    assert_int_equal(npy_write(p, v, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 2}, NPY_F32), -1);
    assert_non_null(strstr(lvd_errmsg(), "dimensions"));
    assert_int_equal(access(p, F_OK), -1);
}

/* ---------------------------------------------------------------------------------------------------- */
/* malformed files */

/* Writes a version 1.0 file with the given header dict text and data bytes. */
static void write_handmade(const char *path, const char *dict, const void *data, size_t len, uint8_t major)
{
    char hdr[512];
    size_t n = (size_t)snprintf(hdr, sizeof hdr, "%s", dict);
    size_t pre = major == 1 ? 10 : 12;
    while ((pre + n + 1) % 64)
        hdr[n++] = ' ';
    hdr[n++] = '\n';
    uint8_t head[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', major, 0};
    if (major == 1) {
        head[8] = (uint8_t)n;
        head[9] = (uint8_t)(n >> 8);
    } else {
        head[8] = (uint8_t)n;
        head[9] = (uint8_t)(n >> 8);
        head[10] = head[11] = 0;
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(head, 1, pre, f);
    fwrite(hdr, 1, n, f);
    if (len)
        fwrite(data, 1, len, f);
    fclose(f);
}

static void test_malformed(void **state)
{
    (void)state;
    char p[256];
    float data[12] = {0};

    /* numpy-written files we do not accept */
    snprintf(p, sizeof p, "%s/bad_fortran.npy", gen_dir);
    expect_read_error(p, "Fortran", NULL);
    snprintf(p, sizeof p, "%s/bad_be.npy", gen_dir);
    expect_read_error(p, "big-endian", "'>f4'");
    snprintf(p, sizeof p, "%s/bad_f8.npy", gen_dir);
    expect_read_error(p, "unsupported", "'<f8'");
    snprintf(p, sizeof p, "%s/bad_i4.npy", gen_dir);
    expect_read_error(p, "unsupported", "'<i4'");
    snprintf(p, sizeof p, "%s/bad_struct.npy", gen_dir);
    expect_read_error(p, "unsupported", "structured");

    /* bad magic */
    scratch_join(p, sizeof p, scratch, "magic.npy");
    write_handmade(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data, 12, 1);
    {
        size_t len;
        uint8_t *b = scratch_slurp(p, &len);
        b[1] = 'n';
        scratch_spit(p, b, len);
        free(b);
    }
    expect_read_error(p, "magic", NULL);

    /* too short, empty, missing */
    scratch_join(p, sizeof p, scratch, "short.npy");
    scratch_spit(p, "\x93NUMPY\x01", 7);
    expect_read_error(p, "not a .npy", NULL);
    scratch_join(p, sizeof p, scratch, "missing.npy");
    expect_read_error(p, "cannot open", NULL);

    /* truncated data: numpy's file minus 3 bytes */
    {
        char src[256];
        snprintf(src, sizeof src, "%s/f4_2d.npy", gen_dir);
        size_t len;
        uint8_t *b = scratch_slurp(src, &len);
        scratch_join(p, sizeof p, scratch, "trunc.npy");
        scratch_spit(p, b, len - 3);
        free(b);
        expect_read_error(p, "truncated", "(3, 4)");
    }

    /* header lying about the shape: more elements than data, and fewer (trailing bytes) */
    scratch_join(p, sizeof p, scratch, "lie_big.npy");
    write_handmade(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5), }", data, 48, 1);
    expect_read_error(p, "(3, 5)", "truncated");
    scratch_join(p, sizeof p, scratch, "lie_small.npy");
    write_handmade(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 5), }", data, 48, 1);
    expect_read_error(p, "(2, 5)", "trailing");

    /* header length beyond the file */
    scratch_join(p, sizeof p, scratch, "hlen.npy");
    scratch_spit(p, "\x93NUMPY\x01\x00\xff\x7f{'descr'", 17);
    expect_read_error(p, "header length", NULL);

    /* unsupported version, broken dicts */
    scratch_join(p, sizeof p, scratch, "v9.npy");
    write_handmade(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data, 12, 1);
    {
        size_t len;
        uint8_t *b = scratch_slurp(p, &len);
        b[6] = 9;
        scratch_spit(p, b, len);
        free(b);
    }
    expect_read_error(p, "version 9.0", NULL);
    scratch_join(p, sizeof p, scratch, "nokey.npy");
    write_handmade(p, "{'descr': '<f4', 'shape': (3,), }", data, 12, 1);
    expect_read_error(p, "fortran_order", NULL);
    scratch_join(p, sizeof p, scratch, "extrakey.npy");
    write_handmade(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}", data, 12, 1);
    expect_read_error(p, "'x'", NULL);
    scratch_join(p, sizeof p, scratch, "badshape.npy");
    write_handmade(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -1), }", data, 12, 1);
    expect_read_error(p, "shape", NULL);
    scratch_join(p, sizeof p, scratch, "notdict.npy");
    write_handmade(p, "['descr', '<f4']", data, 12, 1);
    expect_read_error(p, "malformed", NULL);
    scratch_join(p, sizeof p, scratch, "toomanydims.npy");
    write_handmade(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", data, 4, 1);
    expect_read_error(p, "dimensions", NULL);

    /* a handmade version 2.0 file with keys in another order is fine */
    scratch_join(p, sizeof p, scratch, "v2order.npy");
    for (int i = 0; i < 3; i++)
        data[i] = (float)i + 0.25f;
    write_handmade(p, "{\"shape\": (3,), \"fortran_order\": False, \"descr\": \"<f4\"}", data, 12, 2);
    npy_array a;
    if (npy_read(p, &a) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_int_equal(a.ndim, 1);
    assert_true(a.data[2] == 2.25f);
    npy_free(&a);
}

/* The scratch directory, and gen/ in it filled by tensor_ref.py npy-gen. */
static int setup(void **state)
{
    return scratch_setup_fixtures(state, scratch, sizeof scratch, "npy", gen_dir, sizeof gen_dir, script, "npy-gen");
}

int main(int argc, char **argv)
{
    snprintf(script, sizeof script, "%s/unit/tensor_ref.py", argc > 1 ? argv[1] : "tests");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_rounding_vs_numpy),
        cmocka_unit_test(test_f16_to_f32_vs_numpy),
        cmocka_unit_test(test_read_numpy_files),
        cmocka_unit_test(test_write_read_by_numpy),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
