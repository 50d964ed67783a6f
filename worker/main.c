/*
 * main.c: chunkgrpo-worker's entry: the table of subcommands and the help text. Exit status:
 * 0 success, 2 usage error, 3 bad input (a file, tensor or field), 4 out of memory or an I/O
 * failure while writing.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"

const char *progname = "chunkgrpo-worker";

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"velocity", cmd_velocity,
     "--model M.safetensors --inputs IN.safetensors --out OUT.safetensors [--grad] [--threads N]\n"
     "      Runs the model on x F32 [B,S,S,C], t F32 [B], tokens I32 [B,T] from IN and writes\n"
     "      v F32 [B,S,S,C]. With --grad, IN also holds dv F32 [B,S,S,C] and OUT gets, for\n"
     "      every parameter P, grad.P = d sum(v * dv) / dP. For checking the engine against\n"
     "      your own PyTorch code (tests/reference/dit.py is ours)."},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: %s COMMAND [OPTIONS]\n\ncommands:\n", progname);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "  help  this text\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command \"%s\" (try %s help)\n", progname, argv[1], progname);
    return EXIT_USAGE;
}
