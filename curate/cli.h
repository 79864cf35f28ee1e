/* cli.h — option handling shared by the curation executables: --config expansion, --quiet/--verbose,
 * --help/--version, and the exit codes of the stage contract (0 success, 1 failure, 2 usage error). */
#ifndef LVD_CLI_H
#define LVD_CLI_H

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "part.h"
#include "stage.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Long option ids shared by every stage (values above any short option character). */
enum { OPT_QUIET = 1000, OPT_VERBOSE, OPT_JSON, OPT_VERSION, OPT_HELP, OPT_WORK, OPT_PART, OPT_MERGE,
       OPT_FORCE, OPT_RETRY_FAILED, OPT_WAIT, OPT_ALLOW_PARTIAL, OPT_FIRST_STAGE_OPTION };

#define CLI_COMMON_OPTIONS                                                                                    \
    {"quiet", no_argument, NULL, OPT_QUIET}, {"verbose", no_argument, NULL, OPT_VERBOSE},                    \
        {"json", no_argument, NULL, OPT_JSON}, {"version", no_argument, NULL, OPT_VERSION},                  \
        {"help", no_argument, NULL, OPT_HELP}, {"work", required_argument, NULL, OPT_WORK}

/* The options of the partitioned, incremental stages (DESIGN.md section 5). */
#define CLI_STAGE_OPTIONS                                                                                     \
    {"part", required_argument, NULL, OPT_PART}, {"merge", no_argument, NULL, OPT_MERGE},                    \
        {"force", no_argument, NULL, OPT_FORCE}, {"retry-failed", no_argument, NULL, OPT_RETRY_FAILED},      \
        {"wait", no_argument, NULL, OPT_WAIT}, {"allow-partial", no_argument, NULL, OPT_ALLOW_PARTIAL}

/* Help text of the options every writing stage shares: the catalog lock and --merge. */
#define CLI_STAGE_HELP                                                                                        \
    "  --wait                  if another process is writing the catalog, wait for it (default: fail at\n"   \
    "                          once, naming it)\n"                                                            \
    "  --merge [--allow-partial]  fold WORK/parts/<stage>-I-of-N.db into catalog.db; parts are numbered\n"  \
    "                          0..N-1 and a split with missing parts is an error unless --allow-partial\n"

/* Sets the program name for log lines and expands --config into the new argument vector; exits 2 on a bad config file. */
static inline void cli_begin(const char *prog, int argc, char **argv, int *ac, char ***av)
{
    log_set_program(prog);
    if (config_expand_argv(argc, argv, ac, av) != 0) {
        log_error("%s", lvd_errmsg());
        exit(EXIT_USAGE);
    }
}

/* `lvd-<stage> --merge`: folds the stage's part files into catalog.db and reports; returns the exit code.
 * flags: STAGE_WAIT, STAGE_ALLOW_PARTIAL. --json prints {"stage", "merged_parts", "merged_before",
 * "missing_parts": ["I/N", ...]}. */
static inline int cli_merge(const char *stage_name, const char *work, int flags, int json)
{
    stage_merge_result r;
    if (stage_merge(stage_name, work, flags, &r) != 0) {
        log_error("%s", lvd_errmsg());
        stage_merge_result_free(&r);
        return EXIT_FAIL;
    }
    if (r.merged)
        log_info("merged %d part file%s into %s/catalog.db", r.merged, r.merged == 1 ? "" : "s", work);
    if (json) {
        printf("{\"stage\":\"%s\",\"merged_parts\":%d,\"merged_before\":%d,\"missing_parts\":[", stage_name,
               r.merged, r.already);
        for (int i = 0; i < r.nmissing; i++)
            printf("%s\"%u/%u\"", i ? "," : "", r.missing[i].index, r.missing[i].count);
        printf("]}\n");
    }
    stage_merge_result_free(&r);
    return EXIT_OK;
}

/* Handles the options every stage shares; returns 1 if handled, 0 if not one of them, and exits for
 * --help/--version (main-level code only). */
static inline int cli_common(int c, const char *prog, const char *usage, const char **work, int *json)
{
    switch (c) {
    case OPT_QUIET: log_set_level(LOG_ERROR); return 1;
    case OPT_VERBOSE: log_set_level(LOG_DEBUG); return 1;
    case OPT_JSON: *json = 1; return 1;
    case OPT_WORK: *work = optarg; return 1;
    case OPT_VERSION: printf("%s %s\n", prog, LVD_VERSION); exit(EXIT_OK);
    case 'h':
    case OPT_HELP: fputs(usage, stdout); exit(EXIT_OK);
    default: return 0;
    }
}

/* The values of CLI_STAGE_OPTIONS. */
typedef struct cli_stage_args {
    const char *part; /* --part I/N as given (checked: 0 <= I < N), NULL when absent */
    int merge, force, retry_failed;
    int wait, allow_partial;
} cli_stage_args;

/* The stage_open / stage_merge flags of the parsed options. */
static inline int cli_stage_flags(const cli_stage_args *a)
{
    return (a->wait ? STAGE_WAIT : 0) | (a->allow_partial ? STAGE_ALLOW_PARTIAL : 0);
}

static inline void cli_usage_error(const char *prog, const char *msg);

/* Handles the options of CLI_STAGE_OPTIONS into *a; returns 1 if c was one of them, else 0. */
static inline int cli_stage_option(int c, cli_stage_args *a)
{
    switch (c) {
    case OPT_PART: {
        lvd_part p;
        if (part_parse(optarg, &p) != 0)
            cli_usage_error(program_invocation_short_name, lvd_errmsg());
        a->part = optarg;
        return 1;
    }
    case OPT_MERGE: a->merge = 1; return 1;
    case OPT_FORCE: a->force = 1; return 1;
    case OPT_RETRY_FAILED: a->retry_failed = 1; return 1;
    case OPT_WAIT: a->wait = 1; return 1;
    case OPT_ALLOW_PARTIAL: a->allow_partial = 1; return 1;
    default: return 0;
    }
}

/* Reports a usage error and exits 2. */
static inline void cli_usage_error(const char *prog, const char *msg)
{
    fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog, msg, prog);
    exit(EXIT_USAGE);
}

/* cli_usage_error with a printf-style message (cut at 1023 bytes). */
static inline void cli_usage_errorf(const char *prog, const char *fmt, ...) LVD_PRINTF(2, 3);
static inline void cli_usage_errorf(const char *prog, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_usage_error(prog, msg);
}

#endif
