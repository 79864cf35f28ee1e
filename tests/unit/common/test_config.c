/* test_config.c — --config YAML expansion, strict option values, --part, progress output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "opts.h"
#include "part.h"
#include "progress.h"

static char scratch[64];

static char *path_in(const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", scratch, name) > 0);
    return p;
}

static char *write_file(const char *name, const char *text)
{
    char *p = path_in(name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return p;
}

static void expect_err(const char *part)
{
    if (!strstr(lvd_errmsg(), part))
        fail_msg("error \"%s\" lacks \"%s\"", lvd_errmsg(), part);
}

/* ---- config ---- */

static const char config_yaml[] = "# options for a crawl\n"
                                  "workers: 8\n"
                                  "\"--out_dir\": /data/out dir\n"
                                  "--verbose: true\n"
                                  "dry-run: false\n"
                                  "caption_col: 'text'\n"
                                  "quoted-flag: \"true\"\n"
                                  "url_col: [a, b]\n"
                                  "tag:\n"
                                  "  - x\n"
                                  "  - \"y z\"\n"
                                  "timeout: 2.5\n";

static void expect_argv(int argc, char **argv, const char *const *want)
{
    int n = 0;
    while (want[n])
        n++;
    for (int i = 0; i < argc && i < n; i++)
        if (strcmp(argv[i], want[i]) != 0)
            fail_msg("argv[%d] = \"%s\", want \"%s\"", i, argv[i], want[i]);
    assert_int_equal(argc, n);
    assert_null(argv[argc]);
}

static void test_config_expand(void **state)
{
    (void)state;
    char *cfg = write_file("c.yaml", config_yaml);
    char *opt_eq = NULL;
    assert_true(asprintf(&opt_eq, "--config=%s", cfg) > 0);
    char *in[] = {"lvd-crawl", "--workers", "3", opt_eq, "--tag", "w", "in.txt", NULL};
    int oc = 0;
    char **ov = NULL;
    assert_int_equal(config_expand_argv(7, in, &oc, &ov), 0);
    const char *want[] = {"lvd-crawl", "--workers", "8", "--out-dir", "/data/out dir", "--verbose",
                          "--caption-col", "text", "--quoted-flag", "true", "--url-col", "a", "--url-col", "b",
                          "--tag", "x", "--tag", "y z", "--timeout", "2.5",
                          "--workers", "3", "--tag", "w", "in.txt", NULL};
    expect_argv(oc, ov, want);

    /* A real getopt_long loop: the command line's --workers comes last, so it wins; lists accumulate. */
    static const struct option longopts[] = {
        {"workers", required_argument, NULL, 'w'}, {"out-dir", required_argument, NULL, 'o'},
        {"verbose", no_argument, NULL, 'v'},       {"dry-run", no_argument, NULL, 'n'},
        {"caption-col", required_argument, NULL, 'c'}, {"quoted-flag", required_argument, NULL, 'q'},
        {"url-col", required_argument, NULL, 'u'}, {"tag", required_argument, NULL, 't'},
        {"timeout", required_argument, NULL, 'T'}, {NULL, 0, NULL, 0}};
    const char *workers = NULL, *out_dir = NULL, *url_col = NULL;
    int verbose = 0, dry_run = 0;
    char tags[64] = "";
    optind = 0; /* glibc: full reinitialisation */
    opterr = 0;
    int c;
    while ((c = getopt_long(oc, ov, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'w': workers = optarg; break;
        case 'o': out_dir = optarg; break;
        case 'v': verbose = 1; break;
        case 'n': dry_run = 1; break;
        case 'u': url_col = optarg; break;
        case 't':
            strncat(tags, optarg, sizeof tags - strlen(tags) - 2);
            strcat(tags, ";");
            break;
        case 'c': case 'q': case 'T': break;
        default: fail_msg("getopt_long rejected an option: %c", optopt);
        }
    }
    assert_string_equal(workers, "3");
    assert_string_equal(out_dir, "/data/out dir");
    assert_string_equal(url_col, "b");
    assert_int_equal(verbose, 1);
    assert_int_equal(dry_run, 0);
    assert_string_equal(tags, "x;y z;w;");
    assert_int_equal(optind, oc - 1);
    assert_string_equal(ov[optind], "in.txt");
    config_free_argv(oc, ov);

    /* "--config F" as two words, and "--" ends option scanning. */
    char *in2[] = {"prog", "--config", cfg, "--", "--config", "x.yaml", NULL};
    assert_int_equal(config_expand_argv(6, in2, &oc, &ov), 0);
    assert_int_equal(oc, 1 + 19 + 3);
    assert_string_equal(ov[1], "--workers");
    assert_string_equal(ov[20], "--");
    assert_string_equal(ov[21], "--config");
    assert_string_equal(ov[22], "x.yaml");
    config_free_argv(oc, ov);

    free(opt_eq);
    free(cfg);
}

static void test_config_no_config(void **state)
{
    (void)state;
    char *in[] = {"prog", "-v", "--x=1", "a", NULL};
    int oc = 0;
    char **ov = NULL;
    assert_int_equal(config_expand_argv(4, in, &oc, &ov), 0);
    const char *want[] = {"prog", "-v", "--x=1", "a", NULL};
    expect_argv(oc, ov, want);
    assert_ptr_not_equal(ov, in);
    assert_ptr_not_equal(ov[1], in[1]);
    config_free_argv(oc, ov);

    /* An empty file and a comment-only file add nothing. */
    char *empty = write_file("empty.yaml", "");
    char *comment = write_file("comment.yaml", "# nothing yet\n");
    char *in2[] = {"prog", "--config", empty, "--config", comment, "z", NULL};
    assert_int_equal(config_expand_argv(6, in2, &oc, &ov), 0);
    const char *want2[] = {"prog", "z", NULL};
    expect_argv(oc, ov, want2);
    config_free_argv(oc, ov);
    free(empty);
    free(comment);
}

static void test_config_errors(void **state)
{
    (void)state;
    int oc = 0;
    char **ov = NULL;

    char *missing = path_in("missing.yaml");
    char *in[] = {"prog", "--config", missing, NULL};
    assert_int_equal(config_expand_argv(3, in, &oc, &ov), -1);
    expect_err(missing);
    expect_err("No such file");
    free(missing);

    char *in_noarg[] = {"prog", "--config", NULL};
    assert_int_equal(config_expand_argv(2, in_noarg, &oc, &ov), -1);
    expect_err("--config");

    char *nested = write_file("nested.yaml", "workers: 2\n\nfetch:\n  timeout: 3\n");
    char *in2[] = {"prog", "--config", nested, NULL};
    assert_int_equal(config_expand_argv(3, in2, &oc, &ov), -1);
    char *want = NULL;
    assert_true(asprintf(&want, "%s:4:", nested) > 0); /* the nested mapping starts on line 4 */
    expect_err(want);
    expect_err("fetch");
    expect_err("nested");
    free(want);
    free(nested);

    char *seq = write_file("seq.yaml", "- a\n- b\n");
    char *in3[] = {"prog", "--config", seq, NULL};
    assert_int_equal(config_expand_argv(3, in3, &oc, &ov), -1);
    expect_err(seq);
    expect_err("mapping");
    free(seq);

    char *nul = write_file("null.yaml", "a: 1\nworkers:\n");
    char *in4[] = {"prog", "--config", nul, NULL};
    assert_int_equal(config_expand_argv(3, in4, &oc, &ov), -1);
    expect_err("workers");
    free(nul);

    char *listmap = write_file("listmap.yaml", "tag:\n  - a\n  - {b: 1}\n");
    char *in5[] = {"prog", "--config", listmap, NULL};
    assert_int_equal(config_expand_argv(3, in5, &oc, &ov), -1);
    assert_true(asprintf(&want, "%s:3:", listmap) > 0);
    expect_err(want);
    free(want);
    free(listmap);
}

/* Malformed YAML: the line in the message must be the one PyYAML (an independent parser) reports. */
static void test_config_malformed(void **state)
{
    (void)state;
    static const char *docs[] = {"workers: 4\nout: x\nkey: a: b\nlast: 1\n", "a: 1\nb: [1, 2\nc: 3\n",
                                 "a: 1\n  b: 2\n", "a: \"unterminated\nb: 2\n"};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.yaml", i);
        char *p = write_file(name, docs[i]);
        char *cmd = NULL;
        assert_true(asprintf(&cmd,
                             "/usr/bin/python3 -c 'import sys,yaml\n"
                             "try: yaml.safe_load(open(sys.argv[1]))\n"
                             "except yaml.MarkedYAMLError as e: print(e.problem_mark.line + 1)' %s",
                             p) > 0);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        int line = 0;
        assert_int_equal(fscanf(f, "%d", &line), 1);
        assert_int_equal(pclose(f), 0);
        free(cmd);

        char *in[] = {"prog", "--config", p, NULL};
        int oc = 0;
        char **ov = NULL;
        assert_int_equal(config_expand_argv(3, in, &oc, &ov), -1);
        char *want = NULL;
        assert_true(asprintf(&want, "%s:%d:", p, line) > 0);
        expect_err(want);
        free(want);
        free(p);
    }
}

/* ---- opts ---- */

static void test_opt_int(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(opt_int("workers", "42", 1, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(opt_int("workers", "-7", -10, 10, &v), 0);
    assert_int_equal(v, -7);
    assert_int_equal(opt_int("workers", "+3", 0, 10, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(opt_int("n", "9223372036854775807", INT64_MIN, INT64_MAX, &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(opt_int("n", "-9223372036854775808", INT64_MIN, INT64_MAX, &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(opt_int("workers", "1", 1, 1, &v), 0);

    static const char *bad[] = {"", "12x", " 12", "12 ", "1.5", "0x10", "+", "-", "1e3", "--1",
                                "9223372036854775808", "-9223372036854775809", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 12345;
        if (opt_int("workers", bad[i], INT64_MIN, INT64_MAX, &v) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(v, 12345);
        expect_err("--workers");
        if (bad[i][0]) {
            char q[64];
            snprintf(q, sizeof q, "\"%s\"", bad[i]);
            expect_err(q);
        }
    }
    assert_int_equal(opt_int("--workers", "0", 1, 64, &v), -1);
    expect_err("--workers: \"0\"");
    expect_err("[1, 64]");
    assert_int_equal(opt_int("workers", "65", 1, 64, &v), -1);
}

static void test_opt_double(void **state)
{
    (void)state;
    double v = 0;
    assert_int_equal(opt_double("ratio", "2.5", 0, 10, &v), 0);
    assert_true(v == 2.5);
    assert_int_equal(opt_double("ratio", "1e3", 0, 1e4, &v), 0);
    assert_true(v == 1000.0);
    assert_int_equal(opt_double("ratio", "-.5", -1, 1, &v), 0);
    assert_true(v == -0.5);
    assert_int_equal(opt_double("ratio", "7", 0, 10, &v), 0);
    assert_true(v == 7.0);
    static const char *bad[] = {"", "nan", "inf", "-inf", "1.5.2", "3 ", " 3", "0x1p3", "1e400", ".", "e5", "2,5",
                                "11", "-0.1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 42;
        if (opt_double("ratio", bad[i], 0, 10, &v) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_true(v == 42);
        expect_err("--ratio");
    }
    assert_int_equal(opt_double("ratio", "1.5.2", 0, 10, &v), -1);
    expect_err("\"1.5.2\"");
}

static void test_opt_bytes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t want;
    } good[] = {{"0", 0},
                {"512", 512},
                {"64K", 65536},
                {"64k", 65536},
                {"32M", 33554432},
                {"1G", 1073741824},
                {"1g", 1073741824},
                {"2KiB", 2048},
                {"3mib", 3145728},
                {"4GiB", 4294967296ULL},
                {"5KB", 5120},
                {"100B", 100},
                {"1T", 1099511627776ULL},
                {"16777215T", 16777215ULL << 40},
                {"18446744073709551615", UINT64_MAX}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 1;
        if (opt_bytes("max-size", good[i].text, &v) != 0)
            fail_msg("rejected \"%s\": %s", good[i].text, lvd_errmsg());
        assert_true(v == good[i].want);
    }
    static const char *bad[] = {"", "-1", "-0", "1.5G", "12Q", "64 K", " 64K", "64K ", "K", "0x10", "+5",
                                "18446744073709551616", "16777216T", "17179869184G", "64KiBB", "1e3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 77;
        if (opt_bytes("max-size", bad[i], &v) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_true(v == 77);
        expect_err("--max-size");
    }
    assert_int_equal(opt_bytes("max-size", "-1", &(uint64_t){0}), -1);
    expect_err("\"-1\"");
    expect_err("negative");
}

static void test_opt_seconds(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        double want;
    } good[] = {{"10", 10}, {"2.5", 2.5}, {"500ms", 0.5}, {"3s", 3}, {"2m", 120}, {"1h", 3600},
                {"0", 0},   {"1.5h", 5400}, {"0.25s", 0.25}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        double v = -1;
        if (opt_seconds("timeout", good[i].text, &v) != 0)
            fail_msg("rejected \"%s\": %s", good[i].text, lvd_errmsg());
        assert_true(fabs(v - good[i].want) < 1e-12);
    }
    static const char *bad[] = {"", "-1", "-0.5s", "5x", "ms", "s", "1e999", "10 s", " 10", "1d", "nan", "inf",
                                "5sec"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v = 99;
        if (opt_seconds("timeout", bad[i], &v) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_true(v == 99);
        expect_err("--timeout");
    }
    assert_int_equal(opt_seconds("timeout", "5x", &(double){0}), -1);
    expect_err("\"5x\"");
}

static void test_opt_choice(void **state)
{
    (void)state;
    static const char *const modes[] = {"fast", "exact", "off", NULL};
    int i = -1;
    assert_int_equal(opt_choice("mode", "exact", modes, &i), 0);
    assert_int_equal(i, 1);
    assert_int_equal(opt_choice("mode", "off", modes, &i), 0);
    assert_int_equal(i, 2);
    i = -1;
    assert_int_equal(opt_choice("mode", "Exact", modes, &i), -1);
    assert_int_equal(i, -1);
    expect_err("--mode: \"Exact\"");
    expect_err("fast, exact, off");
    assert_int_equal(opt_choice("mode", "", modes, &i), -1);
    assert_int_equal(opt_choice("mode", "fastx", modes, &i), -1);
    expect_err("\"fastx\"");
}

/* ---- part ---- */

static void test_part_parse(void **state)
{
    (void)state;
    lvd_part p = {0};
    assert_int_equal(part_parse("0/1", &p), 0);
    assert_int_equal(p.index, 0);
    assert_int_equal(p.count, 1);
    assert_string_equal(p.source, "--part");
    assert_int_equal(part_parse("6/7", &p), 0);
    assert_int_equal(p.index, 6);
    assert_int_equal(p.count, 7);
    assert_int_equal(part_parse("4294967294/4294967295", &p), 0);
    assert_true(p.index == 4294967294u && p.count == 4294967295u);
    static const char *bad[] = {"", "4/4", "1/0", "0/0", "-1/2", "a/b", "1/2x", " 1/2", "1/ 2", "1//2", "1",
                                "/2", "1/", "+1/2", "4294967296/4294967297", "1/2/3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = (lvd_part){9, 9, "x"};
        if (part_parse(bad[i], &p) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(p.index, 9);
        char q[64];
        snprintf(q, sizeof q, "\"%s\"", bad[i]);
        expect_err(q);
        expect_err("--part");
    }
}

static const char *const part_vars[] = {"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                                        "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE"};

static void clear_part_env(void)
{
    for (size_t i = 0; i < sizeof part_vars / sizeof part_vars[0]; i++)
        unsetenv(part_vars[i]);
}

static void expect_part(const char *arg, uint32_t index, uint32_t count, const char *source)
{
    lvd_part p = {0};
    if (part_resolve(arg, &p) != 0)
        fail_msg("part_resolve: %s", lvd_errmsg());
    assert_int_equal(p.index, index);
    assert_int_equal(p.count, count);
    assert_string_equal(p.source, source);
}

static void test_part_env(void **state)
{
    (void)state;
    clear_part_env();
    expect_part(NULL, 0, 1, "default");
    setenv("PMI_RANK", "2", 1);
    setenv("PMI_SIZE", "5", 1);
    expect_part(NULL, 2, 5, "PMI");
    setenv("OMPI_COMM_WORLD_RANK", "1", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
    expect_part(NULL, 1, 3, "OpenMPI");
    setenv("SLURM_ARRAY_TASK_ID", "4", 1);
    setenv("SLURM_ARRAY_TASK_COUNT", "8", 1);
    expect_part(NULL, 4, 8, "SLURM");
    expect_part("0/2", 0, 2, "--part");
    /* An array numbered 1..8 (--array=1-8): task 8 is the last part. */
    setenv("SLURM_ARRAY_TASK_ID", "8", 1);
    setenv("SLURM_ARRAY_TASK_MIN", "1", 1);
    expect_part(NULL, 7, 8, "SLURM");
    /* Empty counts as unset. */
    setenv("SLURM_ARRAY_TASK_ID", "", 1);
    setenv("SLURM_ARRAY_TASK_COUNT", "", 1);
    expect_part(NULL, 1, 3, "OpenMPI");

    lvd_part p;
    setenv("OMPI_COMM_WORLD_RANK", "x1", 1);
    assert_int_equal(part_resolve(NULL, &p), -1);
    expect_err("OMPI_COMM_WORLD_RANK");
    expect_err("\"x1\"");
    assert_int_equal(part_resolve("1/2", &p), 0); /* --part wins over a broken environment */
    setenv("OMPI_COMM_WORLD_RANK", "3", 1);
    assert_int_equal(part_resolve(NULL, &p), -1);
    expect_err("OMPI_COMM_WORLD_RANK");
    unsetenv("OMPI_COMM_WORLD_SIZE");
    assert_int_equal(part_resolve(NULL, &p), -1);
    expect_err("OMPI_COMM_WORLD_SIZE");
    unsetenv("OMPI_COMM_WORLD_RANK");
    setenv("PMI_SIZE", "0", 1);
    assert_int_equal(part_resolve(NULL, &p), -1);
    expect_err("PMI_SIZE");
    clear_part_env();
}

static void test_part_hash(void **state)
{
    (void)state;
    /* Published FNV-1a 64 test vectors. */
    assert_true(part_hash("", 0) == 0xcbf29ce484222325ULL);
    assert_true(part_hash("a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(part_hash("foobar", 6) == 0x85944171f73967e8ULL);
    /* Only len bytes count, and bytes >= 0x80 are not sign-extended. */
    assert_true(part_hash("foobarXYZ", 6) == 0x85944171f73967e8ULL);
    assert_true(part_hash("\xff", 1) == ((0xcbf29ce484222325ULL ^ 0xffULL) * 1099511628211ULL));

    static const uint32_t counts[] = {2, 7};
    for (size_t c = 0; c < 2; c++) {
        uint32_t n = counts[c];
        unsigned hits[7] = {0};
        for (int k = 0; k < 10000; k++) {
            char key[32];
            int len = snprintf(key, sizeof key, "%09d", k * 7919);
            int owners = 0;
            for (uint32_t i = 0; i < n; i++) {
                lvd_part p = {i, n, "--part"};
                if (part_owns(&p, key, (size_t)len)) {
                    owners++;
                    hits[i]++;
                    assert_true(part_hash(key, (size_t)len) % n == i);
                }
            }
            assert_int_equal(owners, 1);
        }
        double expect = 10000.0 / n;
        for (uint32_t i = 0; i < n; i++)
            if (fabs(hits[i] - expect) > 0.1 * expect)
                fail_msg("N=%u part %u got %u keys, expected about %.0f", n, i, hits[i], expect);
    }
}

/* ---- progress ---- */

/* Runs fn with stderr sent to a file and returns what was written there. */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char *p = path_in("stderr.txt");
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn(arg);
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)size, 0), size);
    close(fd);
    unlink(p);
    free(p);
    return buf;
}

typedef struct run {
    uint64_t total;
    double interval;
    enum log_level level;
    int tty_expected;
} run;

/* Ten seconds "ago" start, 250 of 1000 done: 25.0/s and 30s to go; then 1000 done with 7 errors. */
static void progress_run(void *arg)
{
    run *r = arg;
    log_set_level(r->level);
    progress p;
    progress_init(&p, "decode", r->total);
    assert_int_equal(p.tty, r->tty_expected);
    p.interval = r->interval;
    p.start -= 10.0;
    progress_update(&p, 250, 1);
    progress_update(&p, 1000, 7);
    progress_finish(&p);
    log_set_level(LOG_INFO);
}

static void test_progress_plain(void **state)
{
    (void)state;
    log_set_program("test");
    /* Interval not reached: only the final line. */
    run r = {1000, 3600, LOG_INFO, 0};
    char *out = capture_stderr(progress_run, &r);
    assert_null(strstr(out, "250/1000"));
    assert_non_null(strstr(out, "decode 1000/1000 100.0%"));
    assert_non_null(strstr(out, "errors 7"));
    assert_non_null(strstr(out, " in 10s"));
    assert_null(strchr(out, '\r'));
    assert_int_equal(out[strlen(out) - 1], '\n');
    free(out);

    /* Interval 0: every update prints a plain line, with % and ETA. */
    r.interval = 0;
    out = capture_stderr(progress_run, &r);
    assert_non_null(strstr(out, "decode 250/1000 25.0% 25.0/s ETA 30s errors 1\n"));
    assert_non_null(strstr(out, "decode 1000/1000 100.0%"));
    assert_null(strchr(out, '\r'));
    free(out);

    /* Unknown total: counts and rate, no percentage or ETA. */
    r.total = 0;
    out = capture_stderr(progress_run, &r);
    assert_non_null(strstr(out, "decode 250 25.0/s errors 1\n"));
    assert_non_null(strstr(out, "decode 1000 "));
    assert_non_null(strstr(out, "errors 7"));
    assert_null(strchr(out, '%'));
    assert_null(strstr(out, "ETA"));
    free(out);

    /* Quiet: nothing at all. */
    r = (run){1000, 0, LOG_ERROR, 0};
    out = capture_stderr(progress_run, &r);
    assert_string_equal(out, "");
    free(out);
}

static void test_progress_tty(void **state)
{
    (void)state;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0)
        skip();
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    assert_true(slave >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(dup2(slave, STDERR_FILENO) >= 0);

    run r = {1000, 3600, LOG_INFO, 1};
    progress_run(&r);
    r.level = LOG_ERROR;
    progress_run(&r); /* quiet: adds nothing */

    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(slave);
    char buf[4096];
    size_t len = 0;
    struct pollfd pfd = {master, POLLIN, 0};
    while (len < sizeof buf - 1 && poll(&pfd, 1, 200) > 0) {
        ssize_t n = read(master, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(master);
    /* The first update draws at once, the second comes within 0.2 s and is skipped, finish draws and ends
     * the line (the terminal turns "\n" into "\r\n"). */
    assert_non_null(strstr(buf, "\rdecode 250/1000 25.0% 25.0/s ETA 30s errors 1\033[K"));
    assert_null(strstr(buf, "ETA 0s"));
    const char *fin = strstr(buf, "\rdecode 1000/1000 100.0%");
    assert_non_null(fin);
    assert_non_null(strstr(fin, "errors 7\033[K\r\n"));
    if (strstr(fin + 2, "decode")) /* nothing after the final line */
        fail_msg("unexpected output: %s", buf);
}

static void test_progress_clock(void **state)
{
    (void)state;
    double a = progress_now();
    usleep(20000);
    double b = progress_now();
    assert_true(b - a >= 0.019);
    assert_true(b - a < 5.0);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(scratch, sizeof scratch, "config");
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
        cmocka_unit_test(test_config_expand),
        cmocka_unit_test(test_config_no_config),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_malformed),
        cmocka_unit_test(test_opt_int),
        cmocka_unit_test(test_opt_double),
        cmocka_unit_test(test_opt_bytes),
        cmocka_unit_test(test_opt_seconds),
        cmocka_unit_test(test_opt_choice),
        cmocka_unit_test(test_part_parse),
        cmocka_unit_test(test_part_env),
        cmocka_unit_test(test_part_hash),
        cmocka_unit_test(test_progress_plain),
        cmocka_unit_test(test_progress_tty),
        cmocka_unit_test(test_progress_clock),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
