/*
 * commands.h: the subcommands of chunkgrpo-worker, one file each (worker/cmd_*.c), and what
 * they share. Each takes argv with argv[0] = the command's name and returns the exit status.
 */
#ifndef CHUNKGRPO_COMMANDS_H
#define CHUNKGRPO_COMMANDS_H

enum { EXIT_USAGE = 2, EXIT_BAD_INPUT = 3, EXIT_IO = 4 };

#define WORKER_VERSION "0.1.0" /* sent when a worker registers with the control server */

extern const char *progname; /* "chunkgrpo-worker", for messages */

int cmd_velocity(int argc, char **argv);
int cmd_score(int argc, char **argv); /* and cmd_render, both in cmd_score.c */
int cmd_render(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_schema(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* Parses a flag's value as an integer in [1, 4096]; prints a message naming the flag and
 * returns -1 otherwise. */
int parse_positive(const char *flag, const char *s, int *out);

#endif
