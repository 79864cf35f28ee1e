/* test_shard.c — SHA-256 against published vectors; tar shards checked against Python's tarfile and GNU tar. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "sha256.h"
#include "shard.h"

static char scratch[64]; /* mkdtemp directory for this run */

/* ---------------------------------------------------------------------------------------------------- */
/* helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng() >> 24);
}

static uint64_t pad512(uint64_t n) { return (n + 511) / 512 * 512; }

static void scratch_path(char *out, size_t cap, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", scratch, name);
    assert_true(n > 0 && (size_t)n < cap);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = (size_t)file_size(path);
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, n, f), n);
    fclose(f);
    *len = n;
    return buf;
}

static void spit(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void assert_msg_has(const char *needle)
{
    if (!strstr(lvd_errmsg(), needle))
        fail_msg("error message \"%s\" lacks \"%s\"", lvd_errmsg(), needle);
}

/* One member as Python's tarfile sees it. */
typedef struct py_member {
    uint64_t offset;      /* first header (pax / GNU long-name header included) */
    uint64_t offset_data;
    uint64_t size;
    unsigned mode, uid, gid;
    long long mtime;
    char type;
    char sha[SHA256_HEX];
    size_t name_len;                /* bytes of the name as tarfile reads it */
    char name[SHARD_NAME_MAX + 1];  /* the name, or "" when it is longer than SHARD_NAME_MAX */
} py_member;

/* Lists the archive with /usr/bin/python3's tarfile; fails the test if Python raises. Returns the count. */
static size_t py_list(const char *path, py_member *out, size_t max)
{
    static const char script[] =
        "import sys,tarfile,hashlib\n"
        "with tarfile.open(sys.argv[1], \"r:\") as tf:\n"
        "    for m in tf:\n"
        "        d = tf.extractfile(m).read() if m.isreg() else b\"\"\n"
        "        print(m.offset, m.offset_data, m.size, m.mode, m.uid, m.gid, int(m.mtime), m.type.decode(),\n"
        "              hashlib.sha256(d).hexdigest(), len(m.name.encode()), m.name if len(m.name.encode()) <= 255\n"
        "              else \"\", sep=\"\\t\")\n";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c '%s' '%s'", script, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = 0;
    char line[1024];
    while (fgets(line, sizeof line, p)) {
        assert_true(n < max);
        py_member *m = &out[n++];
        char type[8];
        int used = 0;
        int k = sscanf(line, "%" SCNu64 "\t%" SCNu64 "\t%" SCNu64 "\t%u\t%u\t%u\t%lld\t%7s\t%64s\t%zu\t%n",
                       &m->offset, &m->offset_data, &m->size, &m->mode, &m->uid, &m->gid, &m->mtime, type, m->sha,
                       &m->name_len, &used);
        if (k != 10)
            fail_msg("unexpected tarfile output: %s", line);
        m->type = type[0];
        size_t nl = strcspn(line + used, "\n");
        assert_true(nl <= SHARD_NAME_MAX);
        memcpy(m->name, line + used, nl);
        m->name[nl] = '\0';
    }
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("python tarfile failed on %s", path);
    return n;
}

/* `tar -tf` must succeed without a word on stderr and list exactly `names`. */
static void tar_lists(const char *path, char names[][SHARD_NAME_MAX + 1], size_t count)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "tar -tf '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[1024];
    size_t n = 0;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        if (n >= count)
            fail_msg("tar lists an extra line: %s", line);
        assert_string_equal(line, names[n]);
        n++;
    }
    int st = pclose(p);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(n, count);
}

typedef struct member {
    char name[SHARD_NAME_MAX + 1];
    uint8_t *data;
    size_t len;
    uint64_t offset; /* data offset reported by the writer */
} member;

static void make_member(member *m, const char *name, size_t len)
{
    snprintf(m->name, sizeof m->name, "%s", name);
    m->len = len;
    m->data = malloc(len ? len : 1);
    assert_non_null(m->data);
    fill_random(m->data, len);
}

static void free_members(member *ms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ms[i].data);
}

static void add_all(shard_writer *w, member *ms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (shard_writer_add(w, ms[i].name, ms[i].data, ms[i].len, &ms[i].offset) != 0)
            fail_msg("add %s: %s", ms[i].name, lvd_errmsg());
}

/* Python's tarfile and `tar -t` both see exactly `ms` (names, bytes, ustar attributes); returns the end of
 * the last member according to Python. */
static uint64_t check_with_python(const char *path, const member *ms, size_t n)
{
    py_member *py = calloc(n + 4, sizeof *py);
    assert_non_null(py);
    size_t got = py_list(path, py, n + 4);
    assert_int_equal(got, n);
    long long now = (long long)time(NULL);
    char (*names)[SHARD_NAME_MAX + 1] = calloc(n, sizeof *names);
    assert_non_null(names);
    uint64_t end = 0;
    for (size_t i = 0; i < n; i++) {
        char hex[SHA256_HEX];
        sha256_hex(ms[i].data, ms[i].len, hex);
        assert_string_equal(py[i].name, ms[i].name);
        assert_int_equal(py[i].size, ms[i].len);
        assert_int_equal(py[i].offset_data, ms[i].offset); /* the offset the writer promised */
        assert_string_equal(py[i].sha, hex);
        assert_int_equal(py[i].type, '0');
        assert_int_equal(py[i].mode, 0644);
        assert_int_equal(py[i].uid, 0);
        assert_int_equal(py[i].gid, 0);
        assert_true(py[i].mtime > now - 600 && py[i].mtime <= now + 1);
        memcpy(names[i], ms[i].name, sizeof names[i]);
        end = py[i].offset_data + pad512(py[i].size);
    }
    tar_lists(path, names, n);
    free(names);
    free(py);
    return end;
}

/* Our reader sees exactly `ms`, complete, ending at `end`. */
static void check_with_reader(const char *path, const member *ms, size_t n, uint64_t end)
{
    shard_reader *r = NULL;
    assert_int_equal(shard_reader_open(&r, path), 0);
    shard_member m;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(shard_reader_next(r, &m), 1);
        assert_string_equal(m.name, ms[i].name);
        assert_int_equal(m.size, ms[i].len);
        assert_int_equal(m.type, '0');
        assert_int_equal(m.data_offset, ms[i].offset);
        assert_int_equal(m.end, m.data_offset + pad512(m.size));
        uint8_t *buf = malloc(m.size + 1);
        assert_non_null(buf);
        assert_int_equal(shard_reader_read(r, &m, buf), 0);
        assert_memory_equal(buf, ms[i].data, m.size);
        free(buf);
    }
    assert_int_equal(shard_reader_next(r, &m), 0);
    assert_int_equal(shard_reader_torn(r), 0);
    assert_int_equal(shard_reader_valid_end(r), end);
    shard_reader_close(r);
}

/* ---------------------------------------------------------------------------------------------------- */
/* sha256 */

static void test_sha256_vectors(void **state)
{
    (void)state;
    char hex[SHA256_HEX];
    sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *v448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(v448, strlen(v448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    /* sha256_buf gives the raw bytes that sha256_to_hex spells out */
    uint8_t d[SHA256_BYTES];
    sha256_buf("abc", 3, d);
    assert_int_equal(d[0], 0xba);
    assert_int_equal(d[1], 0x78);
    assert_int_equal(d[31], 0xad);

    /* one million 'a' fed in uneven pieces, crossing the 64-byte block boundary every way */
    char piece[1000];
    memset(piece, 'a', sizeof piece);
    static const size_t steps[] = {1, 7, 63, 64, 65, 127, 1000};
    sha256_ctx *c = sha256_new();
    assert_non_null(c);
    size_t done = 0;
    for (size_t i = 0; done < 1000000; i++) {
        size_t k = steps[i % 7];
        if (k > 1000000 - done)
            k = 1000000 - done;
        sha256_update(c, piece, k);
        done += k;
    }
    sha256_final(c, d);
    sha256_to_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_sha256_hex_and_streaming(void **state)
{
    (void)state;
    uint8_t d[SHA256_BYTES];
    for (int i = 0; i < SHA256_BYTES; i++)
        d[i] = (uint8_t)(i * 8 + 7);
    char hex[SHA256_HEX];
    sha256_to_hex(d, hex);
    assert_string_equal(hex, "070f171f272f373f474f575f676f777f878f979fa7afb7bfc7cfd7dfe7eff7ff");

    size_t n = 200003;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    fill_random(buf, n);
    for (int round = 0; round < 20; round++) {
        uint8_t one[SHA256_BYTES], streamed[SHA256_BYTES];
        size_t len = round == 0 ? n : (size_t)(rng() % n);
        sha256_buf(buf, len, one);
        sha256_ctx *c = sha256_new();
        assert_non_null(c);
        size_t at = 0;
        while (at < len) {
            size_t k = (size_t)(rng() % 5000);
            if (k > len - at)
                k = len - at;
            sha256_update(c, buf + at, k);
            at += k;
        }
        sha256_final(c, streamed);
        assert_memory_equal(one, streamed, SHA256_BYTES);
    }
    /* different data, different digest: guards against a digest that ignores its input */
    uint8_t a[SHA256_BYTES], b[SHA256_BYTES];
    sha256_buf(buf, n, a);
    buf[n / 2] ^= 1;
    sha256_buf(buf, n, b);
    assert_memory_not_equal(a, b, SHA256_BYTES);
    free(buf);
}

/* ---------------------------------------------------------------------------------------------------- */
/* shard round trips */

static void test_round_trip(void **state)
{
    (void)state;
    char path[PATH_MAX];
    scratch_path(path, sizeof path, "round.tar");
    static const size_t fixed[] = {0, 1, 511, 512, 513, (1u << 20) + 7, 300000};
    enum { N_FIXED = 7, N_RANDOM = 40, N = N_FIXED + N_RANDOM };
    member ms[N + 2];
    for (size_t i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "%06zu.%s", i, i % 3 == 0 ? "jpg" : i % 3 == 1 ? "json" : "png");
        make_member(&ms[i], name, i < N_FIXED ? fixed[i] : (size_t)(rng() % 100000));
    }

    shard_writer *w = NULL;
    assert_int_equal(shard_writer_open(&w, path, 0), 0);
    add_all(w, ms, N);
    uint64_t end = 0;
    assert_int_equal(shard_writer_flush(w, &end), 0);
    assert_int_equal(shard_writer_size(w), end);

    /* end marker: exactly two zero blocks after the last member */
    assert_int_equal(file_size(path), end + 1024);
    size_t len = 0;
    uint8_t *bytes = slurp(path, &len);
    for (size_t i = end; i < len; i++)
        assert_int_equal(bytes[i], 0);
    assert_memory_equal(bytes + 257, "ustar\0" "00", 8);
    free(bytes);

    assert_int_equal(check_with_python(path, ms, N), end);
    check_with_reader(path, ms, N, end);
    for (size_t i = 0; i < N; i++) {
        uint8_t *buf = malloc(ms[i].len + 1);
        assert_non_null(buf);
        assert_int_equal(shard_read_at(path, ms[i].offset, buf, ms[i].len), 0);
        assert_memory_equal(buf, ms[i].data, ms[i].len);
        free(buf);
    }

    /* appending after a flush replaces the end marker, in the same session and after a reopen */
    make_member(&ms[N], "after-flush.bin", 777);
    add_all(w, &ms[N], 1);
    uint64_t end2 = 0;
    assert_int_equal(shard_writer_flush(w, &end2), 0);
    assert_int_equal(end2, end + 512 + pad512(777));
    assert_int_equal(shard_writer_close(w), 0);
    assert_int_equal(check_with_python(path, ms, N + 1), end2);

    assert_int_equal(shard_writer_open(&w, path, end2), 0);
    assert_int_equal(file_size(path), end2);
    make_member(&ms[N + 1], "after-reopen.bin", 5000);
    add_all(w, &ms[N + 1], 1);
    assert_int_equal(shard_writer_close(w), 0);
    uint64_t end3 = check_with_python(path, ms, N + 2);
    check_with_reader(path, ms, N + 2, end3);
    free_members(ms, N + 2);
}

static void long_name(char *out, size_t len, char tag)
{
    snprintf(out, 8, "%03zu-%c", len, tag);
    for (size_t i = 5; i < len; i++)
        out[i] = (char)('a' + i % 26);
    memcpy(out + len - 4, ".jpg", 4);
    out[len] = '\0';
}

static void test_long_names(void **state)
{
    (void)state;
    char path[PATH_MAX];
    scratch_path(path, sizeof path, "long.tar");
    static const size_t lens[] = {99, 100, 101, 150, 255, 150};
    enum { N = 6 };
    member ms[N];
    for (size_t i = 0; i < N; i++) {
        char name[SHARD_NAME_MAX + 1];
        long_name(name, lens[i], (char)('A' + i));
        make_member(&ms[i], name, 100 * i + 3);
    }
    /* a directory-like prefix, as webdataset keys may have */
    memcpy(ms[5].name + 20, "/", 1);

    shard_writer *w = NULL;
    assert_int_equal(shard_writer_open(&w, path, 0), 0);
    add_all(w, ms, 3);

    /* rejected names leave the writer usable and the shard unchanged */
    char too_long[SHARD_NAME_MAX + 2];
    memset(too_long, 'x', SHARD_NAME_MAX + 1);
    too_long[SHARD_NAME_MAX + 1] = '\0';
    assert_int_equal(shard_writer_add(w, too_long, "x", 1, NULL), -1);
    assert_msg_has(path);
    assert_int_equal(shard_writer_add(w, "", "x", 1, NULL), -1);
    assert_msg_has(path);

    add_all(w, ms + 3, N - 3);
    uint64_t end = 0;
    assert_int_equal(shard_writer_flush(w, &end), 0);
    assert_int_equal(shard_writer_close(w), 0);
    assert_int_equal(check_with_python(path, ms, N), end);
    check_with_reader(path, ms, N, end);
    free_members(ms, N);
}

/* Archives written by Python in GNU, pax and ustar formats: the reader applies 'L' names, pax "path" and
 * "size" records and the ustar prefix, and reports directories. */
static void test_reader_foreign_formats(void **state)
{
    (void)state;
    char path[PATH_MAX];
    scratch_path(path, sizeof path, "foreign");
    static const char script[] =
        "import sys,tarfile,io\n"
        "def blob(n): return bytes((i * 7 + 3) % 256 for i in range(n))\n"
        "def add(tf, name, n, pax=None):\n"
        "    ti = tarfile.TarInfo(name); ti.size = n; ti.mode = 0o644\n"
        "    if pax: ti.pax_headers = pax\n"
        "    tf.addfile(ti, io.BytesIO(blob(n)))\n"
        "base = sys.argv[1]\n"
        "with tarfile.open(base + \"-gnu.tar\", \"w\", format=tarfile.GNU_FORMAT) as tf:\n"
        "    add(tf, \"g\" * 200 + \".bin\", 1000)\n"
        "    d = tarfile.TarInfo(\"somedir\"); d.type = tarfile.DIRTYPE; d.mode = 0o755; tf.addfile(d)\n"
        "    add(tf, \"short.txt\", 5)\n"
        "with tarfile.open(base + \"-pax.tar\", \"w\", format=tarfile.PAX_FORMAT) as tf:\n"
        "    add(tf, \"p\" * 180 + \".bin\", 1300, {\"size\": \"1300\", \"comment\": \"ignored\"})\n"
        "    add(tf, \"after.bin\", 10)\n"
        /* zero the ustar size of the pax member, leaving the "size" record as the only source */
        "p = base + \"-pax.tar\"\n"
        "with tarfile.open(p) as tf: h = tf.getmembers()[0].offset_data - 512\n"
        "b = bytearray(open(p, \"rb\").read())\n"
        "b[h + 124:h + 136] = b\"%011o\\0\" % 0\n"
        "b[h + 148:h + 156] = b\" \" * 8\n"
        "b[h + 148:h + 156] = b\"%06o\\0 \" % sum(b[h:h + 512])\n"
        "open(p, \"wb\").write(b)\n"
        "with tarfile.open(base + \"-ustar.tar\", \"w\", format=tarfile.USTAR_FORMAT) as tf:\n"
        "    add(tf, \"u\" * 120 + \"/file.bin\", 600)\n";
    char cmd[sizeof script + PATH_MAX + 64];
    int k = snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c '%s' '%s'", script, path);
    assert_true(k > 0 && (size_t)k < sizeof cmd);
    assert_int_equal(system(cmd), 0);

    struct expect {
        const char *file;
        const char *name_head; /* name is name_head[0] repeated name_rep times + name_tail */
        size_t name_rep;
        const char *name_tail;
        uint64_t size;
        char type;
    } ex[] = {
        {"-gnu.tar", "g", 200, ".bin", 1000, '0'},   {"-gnu.tar", "s", 0, "omedir/", 0, '5'},
        {"-gnu.tar", "s", 0, "hort.txt", 5, '0'},    {"-pax.tar", "p", 180, ".bin", 1300, '0'},
        {"-pax.tar", "a", 0, "fter.bin", 10, '0'},   {"-ustar.tar", "u", 120, "/file.bin", 600, '0'},
    };
    size_t i = 0;
    for (const char *const *f = (const char *const[]){"-gnu.tar", "-pax.tar", "-ustar.tar", NULL}; *f; f++) {
        char p[PATH_MAX], base[32];
        snprintf(base, sizeof base, "foreign%s", *f);
        scratch_path(p, sizeof p, base);
        shard_reader *r = NULL;
        assert_int_equal(shard_reader_open(&r, p), 0);
        shard_member m;
        uint64_t last_end = 0;
        for (; i < sizeof ex / sizeof ex[0] && strcmp(ex[i].file, *f) == 0; i++) {
            char name[SHARD_NAME_MAX + 1];
            size_t k = 0;
            if (ex[i].name_rep == 0)
                name[k++] = ex[i].name_head[0];
            for (size_t j = 0; j < ex[i].name_rep; j++)
                name[k++] = ex[i].name_head[0];
            snprintf(name + k, sizeof name - k, "%s", ex[i].name_tail);
            assert_int_equal(shard_reader_next(r, &m), 1);
            assert_string_equal(m.name, name);
            assert_int_equal(m.size, ex[i].size);
            assert_int_equal(m.type, ex[i].type);
            uint8_t *buf = malloc(m.size + 1);
            assert_non_null(buf);
            assert_int_equal(shard_reader_read(r, &m, buf), 0);
            for (size_t j = 0; j < m.size; j++)
                assert_int_equal(buf[j], (j * 7 + 3) % 256);
            free(buf);
            if (strcmp(*f, "-pax.tar") == 0 && ex[i].size == 1300) {
                /* the ustar size field really is 0 here: only the pax record gives 1300 */
                uint8_t h[512];
                assert_int_equal(shard_read_at(p, m.data_offset - 512, h, 512), 0);
                assert_int_equal(strtoull((const char *)h + 124, NULL, 8), 0);
            }
            last_end = m.end;
        }
        assert_int_equal(shard_reader_next(r, &m), 0);
        assert_int_equal(shard_reader_torn(r), 0);
        assert_int_equal(shard_reader_valid_end(r), last_end);
        shard_reader_close(r);
        unlink(p);
    }
    assert_int_equal(i, sizeof ex / sizeof ex[0]);
}

/* out = base + suffix, which must fit in cap bytes. */
static void suffixed(char *out, size_t cap, const char *base, const char *suffix)
{
    int n = snprintf(out, cap, "%s%s", base, suffix);
    assert_true(n > 0 && (size_t)n < cap);
}

/* Runs a Python script with one argument; fails the test if Python fails. */
static void run_python(const char *script, const char *arg)
{
    size_t cap = strlen(script) + strlen(arg) + 64;
    char *cmd = malloc(cap);
    assert_non_null(cmd);
    int k = snprintf(cmd, cap, "/usr/bin/python3 -c '%s' '%s'", script, arg);
    assert_true(k > 0 && (size_t)k < cap);
    if (system(cmd) != 0)
        fail_msg("python failed on %s", arg);
    free(cmd);
}

/* Our reader against Python's listing of `path`: the same members in the same order, at the same offsets,
 * with the same bytes, complete to the end. A name longer than SHARD_NAME_MAX comes back as "" with its
 * length in name_len. Stores the member count in *count and returns how many names were too long. */
static size_t check_reader_with_python(const char *path, size_t *count)
{
    enum { MAX = 32 };
    py_member py[MAX];
    size_t n = py_list(path, py, MAX);
    shard_reader *r = NULL;
    assert_int_equal(shard_reader_open(&r, path), 0);
    shard_member m;
    size_t too_long = 0;
    uint64_t last_end = 0;
    for (size_t i = 0; i < n; i++) {
        lvd_err_clear();
        int rc = shard_reader_next(r, &m);
        if (rc != 1)
            fail_msg("%s: member %zu of %zu (tarfile: header at %" PRIu64 ", name of %zu bytes): "
                     "shard_reader_next returned %d: %s",
                     path, i + 1, n, py[i].offset, py[i].name_len, rc, lvd_errmsg());
        assert_int_equal(m.offset, py[i].offset);
        assert_int_equal(m.data_offset, py[i].offset_data);
        assert_int_equal(m.size, py[i].size);
        assert_int_equal(m.type, py[i].type);
        assert_int_equal(m.end, m.data_offset + pad512(m.size));
        assert_int_equal(m.name_len, py[i].name_len);
        assert_string_equal(m.name, py[i].name); /* "" for a name that is too long */
        if (py[i].name_len > SHARD_NAME_MAX)
            too_long++;
        uint8_t *buf = malloc(m.size + 1);
        assert_non_null(buf);
        assert_int_equal(shard_reader_read(r, &m, buf), 0);
        char hex[SHA256_HEX];
        sha256_hex(buf, (size_t)m.size, hex);
        assert_string_equal(hex, py[i].sha);
        free(buf);
        last_end = m.end;
    }
    assert_int_equal(shard_reader_next(r, &m), 0);
    assert_int_equal(shard_reader_torn(r), 0);
    assert_int_equal(shard_reader_valid_end(r), last_end);
    shard_reader_close(r);
    *count = n;
    return too_long;
}

/* Reads `path` expecting `good` members, then -1 with a message naming the file and `offset`. */
static void reader_fails_at(const char *path, size_t good, uint64_t offset, const char *what)
{
    shard_reader *r = NULL;
    assert_int_equal(shard_reader_open(&r, path), 0);
    shard_member m;
    for (size_t i = 0; i < good; i++)
        assert_int_equal(shard_reader_next(r, &m), 1);
    lvd_err_clear();
    int rc = shard_reader_next(r, &m);
    if (rc != -1)
        fail_msg("%s: expected -1 after %zu members, got %d", path, good, rc);
    assert_msg_has(path);
    char where[48];
    snprintf(where, sizeof where, "offset %" PRIu64, offset);
    assert_msg_has(where);
    assert_msg_has(what);
    shard_reader_close(r);
}

/* A member whose name is longer than SHARD_NAME_MAX bytes (a GNU 'L' record, a pax "path" record, or a
 * 256-byte ustar prefix + name) is returned without its name so the caller can skip it, and only it: the
 * members around it read as usual. Python's tarfile writes the archives and says what they hold. Malformed
 * extended headers still fail the reader. */
static void test_reader_long_names_skipped(void **state)
{
    (void)state;
    char base[PATH_MAX];
    scratch_path(base, sizeof base, "toolong");
    static const char script[] =
        "import sys,tarfile,io\n"
        "def blob(n, s): return bytes((i * 7 + s) % 256 for i in range(n))\n"
        "def add(tf, name, n, s, pax=None):\n"
        "    ti = tarfile.TarInfo(name); ti.size = n; ti.mode = 0o644\n"
        "    if pax: ti.pax_headers = pax\n"
        "    tf.addfile(ti, io.BytesIO(blob(n, s)))\n"
        "def patch(p, f):\n"
        "    b = bytearray(open(p, \"rb\").read()); f(b); open(p, \"wb\").write(b)\n"
        "def offsets(p):\n"
        "    with tarfile.open(p) as tf: return [(m.offset, m.offset_data) for m in tf.getmembers()]\n"
        "base = sys.argv[1]\n"
        "for fmt, suffix in ((tarfile.GNU_FORMAT, \"-gnu.tar\"), (tarfile.PAX_FORMAT, \"-pax.tar\")):\n"
        "    with tarfile.open(base + suffix, \"w\", format=fmt) as tf:\n"
        "        add(tf, \"000000.jpg\", 700, 1)\n"
        "        add(tf, \"000000.json\", 20, 2)\n"
        "        add(tf, \"k\" * 289 + \"/000001.jpg\", 1500, 3)\n" /* 300 bytes */
        "        add(tf, \"j\" * 250 + \".json\", 30, 4)\n"         /* 255 bytes: the longest name kept */
        "        add(tf, \"j\" * 251 + \".json\", 40, 5)\n"         /* 256 bytes */
        "        add(tf, \"q\" * 5000 + \".jpg\", 600, 6)\n"
        "        if fmt == tarfile.PAX_FORMAT:\n"
        "            add(tf, \"s\" * 400 + \".png\", 1300, 7, {\"path\": \"s\" * 400 + \".png\", \"size\": \"1300\"})\n"
        "        add(tf, \"000002.jpg\", 900, 8)\n"
        "        add(tf, \"000002.json\", 10, 9)\n"
        /* zero the ustar size of the pax member "sss...png": only its "size" record, which comes after the
         * too long "path" record, says how far to skip */
        "p = base + \"-pax.tar\"\n"
        "h = offsets(p)[6][1] - 512\n"
        "def zero_size(b):\n"
        "    b[h + 124:h + 136] = b\"%011o\\0\" % 0\n"
        "    b[h + 148:h + 156] = b\" \" * 8\n"
        "    b[h + 148:h + 156] = b\"%06o\\0 \" % sum(b[h:h + 512])\n"
        "patch(p, zero_size)\n"
        "with tarfile.open(base + \"-ustar.tar\", \"w\", format=tarfile.USTAR_FORMAT) as tf:\n"
        "    add(tf, \"u/000.jpg\", 600, 10)\n"
        "    add(tf, \"d\" * 155 + \"/\" + \"e\" * 96 + \".jpg\", 800, 11)\n" /* 256 bytes: prefix + name */
        "    add(tf, \"u/002.jpg\", 100, 12)\n"
        /* hostile variants: a NUL in a long or a short pax path, a malformed pax record next to a long
         * path, a GNU name over the 1 MiB extended-header bound, an empty GNU name */
        "with tarfile.open(base + \"-nul.tar\", \"w\", format=tarfile.PAX_FORMAT) as tf:\n"
        "    add(tf, \"ok.jpg\", 10, 13)\n"
        "    add(tf, \"n.jpg\", 10, 14, {\"path\": \"a\" * 150 + \"\\0\" + \"b\" * 149})\n"
        "with tarfile.open(base + \"-nul-short.tar\", \"w\", format=tarfile.PAX_FORMAT) as tf:\n"
        "    add(tf, \"ok.jpg\", 10, 13)\n"
        "    add(tf, \"n.jpg\", 10, 14, {\"path\": \"a\\0b.jpg\"})\n"
        "with tarfile.open(base + \"-badrec.tar\", \"w\", format=tarfile.PAX_FORMAT) as tf:\n"
        "    add(tf, \"ok.jpg\", 10, 13)\n"
        "    add(tf, \"m\" * 300 + \".jpg\", 10, 15)\n"
        "h = offsets(base + \"-badrec.tar\")[1][0]\n"
        "def bad_length(b): b[h + 514] ^= 1\n" /* last digit of the record length: one off */
        "patch(base + \"-badrec.tar\", bad_length)\n"
        "with tarfile.open(base + \"-huge.tar\", \"w\", format=tarfile.GNU_FORMAT) as tf:\n"
        "    add(tf, \"ok.jpg\", 10, 13)\n"
        "    add(tf, \"h\" * (1 << 20) + \".jpg\", 10, 16)\n"
        "with tarfile.open(base + \"-empty.tar\", \"w\", format=tarfile.GNU_FORMAT) as tf:\n"
        "    add(tf, \"ok.jpg\", 10, 13)\n"
        "    add(tf, \"e\" * 300 + \".jpg\", 10, 17)\n"
        "h = offsets(base + \"-empty.tar\")[1][0]\n"
        "def empty_name(b): b[h + 512] = 0\n"
        "patch(base + \"-empty.tar\", empty_name)\n";
    run_python(script, base);

    static const struct { const char *suffix; size_t members, too_long; } ok[] = {
        {"-gnu.tar", 8, 3}, {"-pax.tar", 9, 4}, {"-ustar.tar", 3, 1}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char p[PATH_MAX];
        suffixed(p, sizeof p, base, ok[i].suffix);
        size_t n = 0;
        assert_int_equal(check_reader_with_python(p, &n), ok[i].too_long);
        assert_int_equal(n, ok[i].members);
    }

    /* a tar torn inside the long-named member, or just after its GNU name record, is a torn tail after
     * the member before it */
    char gnu[PATH_MAX], cut[PATH_MAX];
    suffixed(gnu, sizeof gnu, base, "-gnu.tar");
    suffixed(cut, sizeof cut, base, "-cut.tar");
    py_member py[16];
    assert_int_equal(py_list(gnu, py, 16), 8);
    size_t len = 0;
    uint8_t *bytes = slurp(gnu, &len);
    const uint64_t cuts[] = {py[2].offset_data + 100, py[2].offset_data - 512, py[2].offset + 700};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        spit(cut, bytes, (size_t)cuts[c]);
        shard_reader *r = NULL;
        assert_int_equal(shard_reader_open(&r, cut), 0);
        shard_member m;
        assert_int_equal(shard_reader_next(r, &m), 1);
        assert_int_equal(shard_reader_next(r, &m), 1);
        assert_string_equal(m.name, "000000.json");
        assert_int_equal(shard_reader_next(r, &m), 0);
        assert_int_equal(shard_reader_torn(r), 1);
        assert_int_equal(shard_reader_valid_end(r), py[2].offset);
        shard_reader_close(r);
    }
    free(bytes);

    struct { const char *suffix; const char *what; } bad[] = {
        {"-nul.tar", "NUL"}, {"-nul-short.tar", "NUL"}, {"-badrec.tar", "malformed pax record"},
        {"-huge.tar", "too large"}, {"-empty.tar", "0 bytes"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char p[PATH_MAX];
        suffixed(p, sizeof p, base, bad[i].suffix);
        /* the second member's first header is at 1024, after the first member's 512-byte header and its
         * 10 bytes of data padded to 512 (tarfile itself cannot list some of these files) */
        reader_fails_at(p, 1, 1024, bad[i].what);
        unlink(p);
    }
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char p[PATH_MAX];
        suffixed(p, sizeof p, base, ok[i].suffix);
        unlink(p);
    }
    unlink(cut);
}

/* ---------------------------------------------------------------------------------------------------- */
/* crash safety */

typedef struct cut {
    uint64_t at;        /* file length after the crash */
    int torn;
    uint64_t valid_end;
    size_t members;     /* complete members before the cut */
    size_t zeros;       /* zero bytes after the cut, as a crash can leave in an extended file */
} cut;

static void test_torn_tail(void **state)
{
    (void)state;
    char path[PATH_MAX], full_path[PATH_MAX];
    scratch_path(path, sizeof path, "torn.tar");
    scratch_path(full_path, sizeof full_path, "torn-full.tar");
    enum { NA = 4, NB = 3, NMAX = NA + NB };
    member ms[NMAX];
    static const size_t sizes[NMAX] = {100, 0, 700, 512, 1000, 1300, 512};
    for (size_t i = 0; i < NMAX; i++) {
        char name[SHARD_NAME_MAX + 1];
        if (i == NA)
            long_name(name, 150, 'T');
        else
            snprintf(name, sizeof name, "k%02zu.bin", i);
        make_member(&ms[i], name, sizes[i]);
    }

    /* commit A, then B gets written too; python gives the true member boundaries of B */
    shard_writer *w = NULL;
    assert_int_equal(shard_writer_open(&w, full_path, 0), 0);
    add_all(w, ms, NA);
    uint64_t committed = 0;
    assert_int_equal(shard_writer_flush(w, &committed), 0);
    add_all(w, ms + NA, NB);
    assert_int_equal(shard_writer_close(w), 0);
    py_member py[NMAX];
    assert_int_equal(py_list(full_path, py, NMAX), NMAX);
    assert_int_equal(committed, py[NA].offset);
    size_t full_len = 0;
    uint8_t *full = slurp(full_path, &full_len);

    cut cuts[64];
    size_t nc = 0;
    for (size_t j = NA; j < NMAX; j++) {
        uint64_t h = py[j].offset, d = py[j].offset_data, s = py[j].size, e = d + pad512(s);
        uint64_t prev = j == NA ? committed : py[j - 1].offset_data + pad512(py[j - 1].size);
        cuts[nc++] = (cut){h + 1, 1, prev, j, 0};
        cuts[nc++] = (cut){h + 511, 1, prev, j, 0};
        if (d - h > 512) {
            cuts[nc++] = (cut){h + 512 + 10, 1, prev, j, 0}; /* inside the pax record */
            cuts[nc++] = (cut){d - 100, 1, prev, j, 0};      /* inside the member's own header */
            cuts[nc++] = (cut){d - 512, 1, prev, j, 0};      /* the pax header lost its member */
            cuts[nc++] = (cut){d - 512, 1, prev, j, 1024};
        }
        cuts[nc++] = (cut){d + s / 2, 1, prev, j, 0};
        if (s % 512)
            cuts[nc++] = (cut){d + s + 1, 1, prev, j, 0}; /* inside the padding */
        cuts[nc++] = (cut){e, 0, e, j + 1, 0};            /* at a member boundary, no end marker */
    }
    cuts[nc++] = (cut){full_len - 1024 + 512, 0, full_len - 1024, NMAX, 0}; /* one zero block */

    for (size_t c = 0; c < nc; c++) {
        uint8_t *img = calloc(1, (size_t)cuts[c].at + cuts[c].zeros);
        assert_non_null(img);
        memcpy(img, full, (size_t)cuts[c].at);
        spit(path, img, (size_t)cuts[c].at + cuts[c].zeros);
        free(img);
        shard_reader *r = NULL;
        assert_int_equal(shard_reader_open(&r, path), 0);
        shard_member m;
        size_t n = 0;
        int rc;
        while ((rc = shard_reader_next(r, &m)) == 1) {
            assert_true(n < NMAX);
            assert_string_equal(m.name, ms[n].name);
            n++;
        }
        if (rc != 0 || n != cuts[c].members || shard_reader_torn(r) != cuts[c].torn ||
            shard_reader_valid_end(r) != cuts[c].valid_end)
            fail_msg("cut at %" PRIu64 " + %zu zeros: rc %d, %zu members, torn %d, valid_end %" PRIu64
                     "; expected %zu, %d, %" PRIu64,
                     cuts[c].at, cuts[c].zeros, rc, n, shard_reader_torn(r), shard_reader_valid_end(r),
                     cuts[c].members, cuts[c].torn, cuts[c].valid_end);
        assert_int_equal(shard_reader_next(r, &m), 0); /* stays at the end */
        shard_reader_close(r);

        /* restart: back to exactly the commit point, then a new member makes a valid tar of A + new */
        assert_int_equal(shard_writer_open(&w, path, committed), 0);
        assert_int_equal(file_size(path), committed);
        member now[NA + 1];
        memcpy(now, ms, sizeof(member) * NA);
        char name[32];
        snprintf(name, sizeof name, "new-%02zu.bin", c);
        make_member(&now[NA], name, 1 + c * 37);
        add_all(w, now + NA, 1);
        assert_int_equal(shard_writer_close(w), 0);
        uint64_t end = check_with_python(path, now, NA + 1);
        check_with_reader(path, now, NA + 1, end);
        free(now[NA].data);
    }

    /* a large unflushed append reaches the file (its body bypasses the buffer) and is then abandoned */
    spit(path, full, (size_t)committed + 1024);
    assert_int_equal(shard_writer_open(&w, path, committed), 0);
    member big;
    make_member(&big, "big-unflushed.bin", 300 * 1024 + 5);
    add_all(w, &big, 1);
    free(big.data);
    shard_writer_abandon(w);
    assert_true(file_size(path) > committed + 512);
    shard_reader *r = NULL;
    assert_int_equal(shard_reader_open(&r, path), 0);
    shard_member m;
    for (size_t i = 0; i < NA; i++)
        assert_int_equal(shard_reader_next(r, &m), 1);
    assert_int_equal(shard_reader_next(r, &m), 0);
    assert_int_equal(shard_reader_torn(r), 1);
    assert_int_equal(shard_reader_valid_end(r), committed);
    shard_reader_close(r);
    assert_int_equal(shard_writer_open(&w, path, committed), 0);
    assert_int_equal(file_size(path), committed);
    assert_int_equal(shard_writer_close(w), 0);
    assert_int_equal(check_with_python(path, ms, NA), committed);

    free(full);
    free_members(ms, NMAX);
    unlink(path);
    unlink(full_path);
}

static void test_reopen_committed_too_large(void **state)
{
    (void)state;
    char path[PATH_MAX];
    scratch_path(path, sizeof path, "short.tar");
    member m;
    make_member(&m, "a.bin", 1000);
    shard_writer *w = NULL;
    assert_int_equal(shard_writer_open(&w, path, 0), 0);
    add_all(w, &m, 1);
    assert_int_equal(shard_writer_close(w), 0);
    uint64_t have = file_size(path);
    assert_int_equal(have, 512 + 1024 + 1024);

    uint64_t committed = have + 512;
    lvd_err_clear();
    assert_int_equal(shard_writer_open(&w, path, committed), -1);
    assert_null(w);
    char num[32];
    assert_msg_has(path);
    snprintf(num, sizeof num, "%" PRIu64, have);
    assert_msg_has(num);
    snprintf(num, sizeof num, "%" PRIu64, committed);
    assert_msg_has(num);
    assert_int_equal(file_size(path), have); /* nothing was touched */

    /* a committed size that is not a block boundary cannot be a member end */
    assert_int_equal(shard_writer_open(&w, path, 700), -1);
    assert_msg_has(path);
    assert_int_equal(file_size(path), have);
    check_with_reader(path, &m, 1, 1536);
    free(m.data);
    unlink(path);
}

static void test_bad_checksum(void **state)
{
    (void)state;
    char path[PATH_MAX], bad[PATH_MAX];
    scratch_path(path, sizeof path, "sum.tar");
    scratch_path(bad, sizeof bad, "sum-bad.tar");
    member ms[3];
    for (size_t i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%zu.bin", i);
        make_member(&ms[i], name, 600 + i);
    }
    shard_writer *w = NULL;
    assert_int_equal(shard_writer_open(&w, path, 0), 0);
    add_all(w, ms, 3);
    assert_int_equal(shard_writer_close(w), 0);
    py_member py[3];
    assert_int_equal(py_list(path, py, 3), 3);
    size_t len = 0;
    uint8_t *bytes = slurp(path, &len);

    /* a changed name byte in the second header, and a changed checksum digit in the first */
    struct { uint64_t header; size_t byte; size_t good_before; } cases[] = {
        {py[1].offset, 1, 1},
        {py[0].offset, 150, 0},
    };
    for (size_t c = 0; c < 2; c++) {
        uint8_t *copy = malloc(len);
        assert_non_null(copy);
        memcpy(copy, bytes, len);
        copy[cases[c].header + cases[c].byte] ^= 0x01;
        spit(bad, copy, len);
        free(copy);
        shard_reader *r = NULL;
        assert_int_equal(shard_reader_open(&r, bad), 0);
        shard_member m;
        for (size_t i = 0; i < cases[c].good_before; i++) {
            assert_int_equal(shard_reader_next(r, &m), 1);
            assert_string_equal(m.name, ms[i].name);
        }
        lvd_err_clear();
        assert_int_equal(shard_reader_next(r, &m), -1);
        assert_msg_has(bad);
        char where[48];
        snprintf(where, sizeof where, "offset %" PRIu64, cases[c].header);
        assert_msg_has(where);
        assert_msg_has("checksum");
        shard_reader_close(r);
    }
    free(bytes);
    free_members(ms, 3);
    unlink(path);
    unlink(bad);
}

/* ---------------------------------------------------------------------------------------------------- */
/* failures */

static void test_write_failures(void **state)
{
    (void)state;
    shard_writer *w = NULL;

    /* the path is a directory */
    lvd_err_clear();
    assert_int_equal(shard_writer_open(&w, scratch, 0), -1);
    assert_null(w);
    assert_msg_has(scratch);

    /* the parent does not exist */
    char path[PATH_MAX];
    scratch_path(path, sizeof path, "missing/x.tar");
    assert_int_equal(shard_writer_open(&w, path, 0), -1);
    assert_msg_has(path);

    /* a read-only directory (permissions do not bind root, which this check then skips) */
    char ro[PATH_MAX];
    scratch_path(ro, sizeof ro, "ro");
    assert_int_equal(mkdir(ro, 0555), 0);
    if (geteuid() != 0) {
        scratch_path(path, sizeof path, "ro/x.tar");
        assert_int_equal(shard_writer_open(&w, path, 0), -1);
        assert_msg_has(path);
    }
    rmdir(ro);

    /* a full device: the buffered write fails at flush, naming the path and the cause */
    uint8_t *big = calloc(1, 1u << 20);
    assert_non_null(big);
    assert_int_equal(shard_writer_open(&w, "/dev/full", 0), 0);
    assert_int_equal(shard_writer_add(w, "a.bin", "abc", 3, NULL), 0);
    lvd_err_clear();
    assert_int_equal(shard_writer_flush(w, NULL), -1);
    assert_msg_has("/dev/full");
    assert_msg_has(strerror(ENOSPC));
    /* and the writer refuses to go on past the failure */
    assert_int_equal(shard_writer_add(w, "b.bin", "abc", 3, NULL), -1);
    assert_msg_has("/dev/full");
    assert_int_equal(shard_writer_close(w), -1);

    /* a large body goes straight to the file, so its failure shows at once */
    assert_int_equal(shard_writer_open(&w, "/dev/full", 0), 0);
    lvd_err_clear();
    assert_int_equal(shard_writer_add(w, "big.bin", big, 1u << 20, NULL), -1);
    assert_msg_has("/dev/full");
    assert_msg_has(strerror(ENOSPC));
    shard_writer_abandon(w);
    free(big);

    /* members of 8 GiB do not fit the octal size field: rejected before any byte is read or written */
    scratch_path(path, sizeof path, "huge.tar");
    member m;
    make_member(&m, "ok.bin", 10);
    assert_int_equal(shard_writer_open(&w, path, 0), 0);
    if (SIZE_MAX > ((uint64_t)1 << 33)) {
        assert_int_equal(shard_writer_add(w, "huge.bin", m.data, (size_t)((uint64_t)1 << 33), NULL), -1);
        assert_msg_has(path);
    }
    add_all(w, &m, 1);
    uint64_t end = 0;
    assert_int_equal(shard_writer_flush(w, &end), 0);
    assert_int_equal(shard_writer_close(w), 0);
    assert_int_equal(check_with_python(path, &m, 1), end);

    /* reading past the end of a shard names it */
    uint8_t buf[64];
    lvd_err_clear();
    assert_int_equal(shard_read_at(path, end + 1024 - 10, buf, sizeof buf), -1);
    assert_msg_has(path);
    scratch_path(ro, sizeof ro, "absent.tar");
    assert_int_equal(shard_read_at(ro, 0, buf, 1), -1);
    assert_msg_has(ro);
    free(m.data);
    unlink(path);
}

/* ---------------------------------------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    return scratch_make(scratch, sizeof scratch, "shard");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(scratch);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_hex_and_streaming),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_long_names),
        cmocka_unit_test(test_reader_foreign_formats),
        cmocka_unit_test(test_reader_long_names_skipped),
        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_reopen_committed_too_large),
        cmocka_unit_test(test_bad_checksum),
        cmocka_unit_test(test_write_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
