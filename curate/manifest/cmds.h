/* cmds.h — the subcommands of lvd-manifest, one module each. Each takes the arguments after its name
 * (argv[0] is the subcommand's name, as getopt expects) and returns the exit code: 0 success, 1 failure
 * (including problems found by verify), 2 usage error. */
#ifndef LVD_MANIFEST_CMDS_H
#define LVD_MANIFEST_CMDS_H

int manifest_cmd_build(int argc, char **argv);  /* build.c:  build --work W --out M.db [--from ...] */
int manifest_cmd_stats(int argc, char **argv);  /* stats.c:  stats M.db [--json] */
int manifest_cmd_diff(int argc, char **argv);   /* diff.c:   diff A.db B.db [--json] */
int manifest_cmd_verify(int argc, char **argv); /* verify.c: verify M.db [--deep] */
int manifest_cmd_export(int argc, char **argv); /* export.c: export M.db --webdataset DIR [...] */
int manifest_cmd_order(int argc, char **argv);  /* order.c:  order M.db --seed S --epoch E [--rank r --ranks R] */

#endif
