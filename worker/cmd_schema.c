/*
 * cmd_schema.c: `chunkgrpo-worker schema`, which prints the JSON Schema of experiment configs that
 * the kinds' tables describe (common/experiment.h). schema/experiment.schema.json is its output,
 * and tests/cli/schema.sh keeps the two equal.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "experiment.h"

int cmd_schema(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: %s schema > schema/experiment.schema.json\n", progname);
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "%s schema: takes no arguments (got %s)\n", progname, argv[1]);
        return EXIT_USAGE;
    }
    char *text = experiment_schema_json();
    if (!text) {
        fprintf(stderr, "%s schema: out of memory\n", progname);
        return EXIT_IO;
    }
    int ok = fputs(text, stdout) >= 0 && fflush(stdout) == 0;
    free(text);
    if (!ok) {
        fprintf(stderr, "%s schema: cannot write: %s\n", progname, strerror(errno));
        return EXIT_IO;
    }
    return 0;
}
