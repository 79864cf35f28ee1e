#!/usr/bin/env python3
"""Build step: turns the schema migrations into a C header of string literals (catalog_migrations[])."""
import sys

out, srcs = sys.argv[1], sys.argv[2:]
with open(out, "w") as f:
    f.write("/* generated from schemas/catalog-*.sql by scripts/embed_sql.py */\n")
    f.write("static const char *const catalog_migrations[] = {\n")
    for path in srcs:
        with open(path) as s:
            text = s.read()
        f.write("    /* %s */\n" % path.rsplit("/", 1)[-1])
        for line in text.splitlines():
            f.write('    "%s\\n"\n' % line.replace("\\", "\\\\").replace('"', '\\"'))
        f.write("    ,\n")
    f.write("};\n")
    f.write("#define CATALOG_SCHEMA_VERSION %d\n" % len(srcs))
