/* stats.c — lvd-manifest stats (not written yet). */
#include "cli.h"
#include "cmds.h"

int manifest_cmd_stats(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    log_error("lvd-manifest stats: not implemented yet");
    return EXIT_FAIL;
}
