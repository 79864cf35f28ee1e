/* lvd-manifest: the curated corpus as one self-contained SQLite file (schemas/manifest-001.sql), and the
 * tools around it. Folder curate/manifest/: this dispatcher, one module per subcommand (cmds.h); the reader the
 * trainer uses is common/manifest.[ch]. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"

static const char usage[] =
    "usage: lvd-manifest COMMAND [options]\n"
    "\n"
    "  build   --work W --out M.db [--from retrieve|balance|dedup]   write a manifest of the curated corpus\n"
    "  stats   M.db [--json]                                          counts per row and method, bytes, sizes\n"
    "  verify  M.db [--deep] [--json] [--threads N]                   shards present; --deep: every sample\n"
    "  export  M.db --webdataset DIR [--shard-size 1GB] [--shuffle SEED]   webdataset tars\n"
    "  diff    A.db B.db [--json]                                     samples added and removed, per row\n"
    "  order   M.db --seed S --epoch E [--rank r --ranks R] [--limit N]  the keys a rank reads, in order\n"
    "\n"
    "`lvd-manifest COMMAND --help` describes a command's options.\n";

int main(int argc, char **argv)
{
    log_set_program("lvd-manifest");
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version")) {
        printf("lvd-manifest %s\n", LVD_VERSION);
        return EXIT_OK;
    }
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } cmds[] = {{"build", manifest_cmd_build},   {"stats", manifest_cmd_stats},   {"diff", manifest_cmd_diff},
                {"verify", manifest_cmd_verify}, {"export", manifest_cmd_export},
                {"order", manifest_cmd_order}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmd, cmds[i].name))
            return cmds[i].run(argc - 1, argv + 1);
    log_error("unknown command '%s'", cmd);
    fputs(usage, stderr);
    return EXIT_USAGE;
}
