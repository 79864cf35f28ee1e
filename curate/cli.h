/* cli.h — option handling shared by the curation executables: --config expansion, --quiet/--verbose,
 * --help/--version, and the exit codes of the stage contract (0 success, 1 failure, 2 usage error). */
#ifndef LVD_CLI_H
#define LVD_CLI_H

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "stage.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Long option ids shared by every stage (values above any short option character). */
enum { OPT_QUIET = 1000, OPT_VERBOSE, OPT_JSON, OPT_VERSION, OPT_HELP, OPT_WORK, OPT_PART, OPT_MERGE,
       OPT_FORCE, OPT_RETRY_FAILED, OPT_FIRST_STAGE_OPTION };

#define CLI_COMMON_OPTIONS                                                                                    \
    {"quiet", no_argument, NULL, OPT_QUIET}, {"verbose", no_argument, NULL, OPT_VERBOSE},                    \
        {"json", no_argument, NULL, OPT_JSON}, {"version", no_argument, NULL, OPT_VERSION},                  \
        {"help", no_argument, NULL, OPT_HELP}, {"work", required_argument, NULL, OPT_WORK}

/* The options of the partitioned, incremental stages (DESIGN.md section 5). */
#define CLI_STAGE_OPTIONS                                                                                     \
    {"part", required_argument, NULL, OPT_PART}, {"merge", no_argument, NULL, OPT_MERGE},                    \
        {"force", no_argument, NULL, OPT_FORCE}, {"retry-failed", no_argument, NULL, OPT_RETRY_FAILED}

/* Sets the program name for log lines and expands --config into the new argument vector; exits 2 on a bad config file. */
static inline void cli_begin(const char *prog, int argc, char **argv, int *ac, char ***av)
{
    log_set_program(prog);
    if (config_expand_argv(argc, argv, ac, av) != 0) {
        log_error("%s", lvd_errmsg());
        exit(EXIT_USAGE);
    }
}

/* `lvd-<stage> --merge`: folds the stage's part files into catalog.db and reports; returns the exit code. */
static inline int cli_merge(const char *stage_name, const char *work, int json)
{
    int n;
    if (stage_merge(stage_name, work, &n) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    log_info("merged %d part file%s into %s/catalog.db", n, n == 1 ? "" : "s", work);
    if (json)
        printf("{\"stage\":\"%s\",\"merged_parts\":%d}\n", stage_name, n);
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
    const char *part; /* --part K/N as given, NULL when absent */
    int merge, force, retry_failed;
} cli_stage_args;

/* Handles the options of CLI_STAGE_OPTIONS into *a; returns 1 if c was one of them, else 0. */
static inline int cli_stage_option(int c, cli_stage_args *a)
{
    switch (c) {
    case OPT_PART: a->part = optarg; return 1;
    case OPT_MERGE: a->merge = 1; return 1;
    case OPT_FORCE: a->force = 1; return 1;
    case OPT_RETRY_FAILED: a->retry_failed = 1; return 1;
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
