/* diff.c — lvd-manifest diff (not written yet). */
#include "cli.h"
#include "cmds.h"

int manifest_cmd_diff(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    log_error("lvd-manifest diff: not implemented yet");
    return EXIT_FAIL;
}
