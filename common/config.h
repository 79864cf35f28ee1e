/* config.h — `--config FILE.yaml`: options from a YAML file, merged under the command line.
 *
 * The file is a YAML mapping from long option names (with or without the leading "--"; '_' and '-' are
 * equivalent) to values. Scalars become "--name value"; `true` becomes "--name", `false` is dropped; a
 * sequence becomes the option repeated once per item. config_expand_argv() builds a new argv in which the
 * file's options come first and the command line's follow, so with getopt_long the command line wins for
 * single-valued options. Nested mappings are an error naming the key and line.
 */
#ifndef LVD_CONFIG_H
#define LVD_CONFIG_H

/* Scans argv for "--config F" / "--config=F" (both forms are removed from the result). On success
 * out_argc and out_argv hold a new NULL-terminated argv (argv[0] first) owned by the caller: free it with
 * config_free_argv. With no --config, the result is a copy of argv. Returns 0 or -1 (message names the
 * file and line). */
int config_expand_argv(int argc, char **argv, int *out_argc, char ***out_argv);

void config_free_argv(int argc, char **argv);

#endif
