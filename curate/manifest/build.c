/* build.c — lvd-manifest build (not written yet). */
#include "cli.h"
#include "cmds.h"

int manifest_cmd_build(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    log_error("lvd-manifest build: not implemented yet");
    return EXIT_FAIL;
}
