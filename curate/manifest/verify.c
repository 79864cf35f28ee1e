/* verify.c — lvd-manifest verify (not written yet). */
#include "cli.h"
#include "cmds.h"

int manifest_cmd_verify(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    log_error("lvd-manifest verify: not implemented yet");
    return EXIT_FAIL;
}
