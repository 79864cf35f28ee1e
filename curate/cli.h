/* cli.h — option handling shared by the curation executables: --config expansion, --quiet/--verbose,
 * --help/--version, and the exit codes of the stage contract (0 success, 1 failure, 2 usage error). */
#ifndef LVD_CLI_H
#define LVD_CLI_H

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "log.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Long option ids shared by every stage (values above any short option character). */
enum { OPT_QUIET = 1000, OPT_VERBOSE, OPT_JSON, OPT_VERSION, OPT_HELP, OPT_WORK, OPT_PART, OPT_MERGE,
       OPT_FORCE, OPT_RETRY_FAILED, OPT_FIRST_STAGE_OPTION };

#define CLI_COMMON_OPTIONS                                                                                    \
    {"quiet", no_argument, NULL, OPT_QUIET}, {"verbose", no_argument, NULL, OPT_VERBOSE},                    \
        {"json", no_argument, NULL, OPT_JSON}, {"version", no_argument, NULL, OPT_VERSION},                  \
        {"help", no_argument, NULL, OPT_HELP}, {"work", required_argument, NULL, OPT_WORK}

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

/* Reports a usage error and exits 2. */
static inline void cli_usage_error(const char *prog, const char *msg)
{
    fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog, msg, prog);
    exit(EXIT_USAGE);
}

#endif
