/*
 * main.c: chunkgrpo-worker's entry: the table of subcommands and the help text. Exit status:
 * 0 success, 2 usage error, 3 bad input (a file, tensor or field), 4 out of memory or an I/O
 * failure while writing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

const char *progname = "chunkgrpo-worker";

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"run", cmd_run,
     "CONFIG.json --out DIR [--resume] [--backend cpu|cuda]\n"
     "      Runs the experiment the config describes (kind pretrain, eval, grpo or profile),\n"
     "      with a progress bar. Ctrl-C stops it with a checkpoint; --resume continues it.\n"
     "      --backend overrides the config's \"backend\" (cuda needs a GPU and\n"
     "      libchunkgrpo_cuda.so beside this binary, or $CHUNKGRPO_CUDA_LIB).\n"
     "      Under `mpirun -np N`, a grpo experiment spreads over N ranks (data parallel;\n"
     "      libchunkgrpo_mpi.so beside this binary, or $CHUNKGRPO_MPI_LIB)."},
    {"serve", cmd_serve,
     "--server URL [--token-file F] [--name NAME] [--backend cpu|cuda] [--threads N]\n"
     "      [--work DIR] [--once]\n"
     "      Works for a control server (chunkgrpo-server): registers, leases experiments and\n"
     "      runs each as `run` does in DIR/exp-ID (default ./var/worker), sending metrics,\n"
     "      logs, progress, images and checkpoints; resumes from the newest checkpoint, here\n"
     "      or on the server. The token comes from --token-file or $CHUNKGRPO_TOKEN (a token\n"
     "      of role worker). --backend and --threads override each config's; --once exits\n"
     "      after one experiment. SIGTERM or Ctrl-C: the run stops with a checkpoint and goes\n"
     "      back to the queue, and the worker exits 0. A refused token exits 3."},
    {"schema", cmd_schema,
     " Prints the JSON Schema (draft 2020-12) of the configs `run` takes, generated\n"
     "      from the tables that validate them (schema/experiment.schema.json is its output)."},
    {"sample", cmd_sample,
     "--model M --prompt TEXT --out DIR [--n 8] [--steps 17] [--sampler ode|sde]\n"
     "      [--sde flow|dance|cps] [--eta 0.7] [--shift 3] [--seed 1] [--cfg W] [--same-noise]\n"
     "      [--trajectory FILE.safetensors] [--batch B] [--threads N] [--backend cpu|cuda]\n"
     "      Samples n images for the prompt (ODE by default; SDE as GRPO rolls out) and writes\n"
     "      DIR/sample_000.png ... (each sample's x0_hat) and DIR/grid.png; --trajectory also\n"
     "      writes x [steps+1,n,S,S,C], logp [steps,n], sigmas, x0_hat and tokens."},
    {"score", cmd_score,
     "--reward align|pref [--model M] (--prompt TEXT IMAGE.png... | --pairs FILE.jsonl)\n"
     "      Scores PNG images against prompts of the shapes world; prints one JSON object per\n"
     "      image (align: score in [0, 1] and the breakdown per requirement; pref: the score of\n"
     "      the preference model M, a reward_train checkpoint). FILE.jsonl holds lines\n"
     "      {\"prompt\": ..., \"image\": ...}, image paths relative to the file's folder."},
    {"render", cmd_render,
     "(--caption TEXT | --split train|heldout|all) [--size 32] [--seed 1] [--index 0]\n"
     "      --out FILE.png | --list train|heldout\n"
     "      Draws the ground truth: a scene of the caption (or scene INDEX of a split of the\n"
     "      generator) as a PNG, printing its caption; --list prints a prompt set."},
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

/* OpenMP threads that finish a parallel region spin for a while before sleeping. Alone on the
 * machine that is what makes the engine fast; sharing it (another worker, a test, a compile),
 * spinning threads steal the cores their peers need: a forward pass went from 37 ms to 700 ms.
 * A short spin (GOMP_SPINCOUNT=3000, a few microseconds) measured the same speed alone and
 * about 1.6x faster with two processes on 2 cores. libgomp reads the variable when it loads,
 * so the worker sets it and re-executes itself once, unless the user chose a policy. */
static void settle_openmp_waiting(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    setenv("GOMP_SPINCOUNT", "3000", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: then run as we are */
}

int main(int argc, char **argv)
{
    settle_openmp_waiting(argv);
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command \"%s\" (try %s help)\n", progname, argv[1], progname);
    return EXIT_USAGE;
}
