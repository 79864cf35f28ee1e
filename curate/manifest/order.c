/* order.c — lvd-manifest order: the sample keys one rank reads in one epoch, one per line, in reading order
 * (manifest_order, whose order common/manifest.h specifies exactly). A user's view of what the trainer's
 * data source will do, and the tests' handle on the reader's order. */
#include <inttypes.h>

#include "cli.h"
#include "cmds.h"
#include "manifest.h"

static const char order_usage[] =
    "usage: lvd-manifest order M.db --seed S --epoch E [--rank r --ranks R] [--limit N]\n"
    "\n"
    "Prints the keys (one per line) that rank r of R reads in epoch E with seed S, in reading order: the\n"
    "epoch lists every sample `weight` times, is shuffled (splitmix64 + Fisher-Yates, common/manifest.h) and\n"
    "dealt to ranks round-robin.\n"
    "\n"
    "  --seed S         shuffle seed (unsigned 64-bit integer)\n"
    "  --epoch E        epoch number (unsigned 64-bit integer)\n"
    "  --rank r         this rank, 0-based (default 0)\n"
    "  --ranks R        number of ranks (default 1)\n"
    "  --limit N        print at most N keys\n";

/* An unsigned decimal integer, whole string; 0 or -1. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int manifest_cmd_order(int argc, char **argv)
{
    enum { O_SEED = 1, O_EPOCH, O_RANK, O_RANKS, O_LIMIT };
    static const struct option longopts[] = {{"seed", required_argument, NULL, O_SEED},
                                             {"epoch", required_argument, NULL, O_EPOCH},
                                             {"rank", required_argument, NULL, O_RANK},
                                             {"ranks", required_argument, NULL, O_RANKS},
                                             {"limit", required_argument, NULL, O_LIMIT},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *prog = "lvd-manifest order";
    uint64_t seed = 0, epoch = 0, rank = 0, ranks = 1, limit = UINT64_MAX;
    int have_seed = 0, have_epoch = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        uint64_t *dst = NULL;
        switch (ch) {
        case O_SEED: dst = &seed; have_seed = 1; break;
        case O_EPOCH: dst = &epoch; have_epoch = 1; break;
        case O_RANK: dst = &rank; break;
        case O_RANKS: dst = &ranks; break;
        case O_LIMIT: dst = &limit; break;
        case 'h': fputs(order_usage, stdout); return EXIT_OK;
        case ':': cli_usage_errorf(prog, "option %s needs a value", argv[optind - 1]); break;
        default: cli_usage_errorf(prog, "unknown option %s", argv[optind - 1]); break;
        }
        if (dst && parse_u64(optarg, dst) != 0)
            cli_usage_errorf(prog, "%s: '%s' is not an unsigned integer", argv[optind - 1], optarg);
    }
    if (optind + 1 != argc)
        cli_usage_error(prog, "give exactly one manifest file");
    if (!have_seed || !have_epoch)
        cli_usage_error(prog, "--seed and --epoch are required");
    if (ranks < 1 || ranks > UINT32_MAX || rank >= ranks)
        cli_usage_errorf(prog, "--rank %" PRIu64 " --ranks %" PRIu64 ": need 1 <= R and 0 <= r < R", rank, ranks);
    manifest *m;
    /* The order needs only the sample table: a manifest whose shards are elsewhere still answers. */
    if (manifest_open_flags(&m, argv[optind], MANIFEST_OPEN_LENIENT) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    uint32_t *ord;
    size_t n;
    if (manifest_order(m, seed, epoch, (uint32_t)rank, (uint32_t)ranks, &ord, &n) != 0) {
        log_error("%s", lvd_errmsg());
        manifest_close(m);
        return EXIT_FAIL;
    }
    for (size_t k = 0; k < n && k < limit; k++) {
        manifest_sample s;
        manifest_sample_meta(m, ord[k], &s);
        fputs(s.key, stdout);
        putchar('\n');
    }
    free(ord);
    manifest_close(m);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("writing the order to stdout failed");
        return EXIT_FAIL;
    }
    return EXIT_OK;
}
