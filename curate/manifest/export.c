/* export.c — lvd-manifest export (not written yet). */
#include "cli.h"
#include "cmds.h"

int manifest_cmd_export(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    log_error("lvd-manifest export: not implemented yet");
    return EXIT_FAIL;
}
