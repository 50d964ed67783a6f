/*
 * dist.h: data parallelism over MPI ranks for one experiment (spec architecture.md, "Scaling
 * past one machine"): `mpirun -np N chunkgrpo-worker run CONFIG --out DIR` spreads a grpo
 * iteration's rollout groups over N ranks, which sum their gradients before every optimizer step
 * and so end each step with the same parameters.
 *
 * The worker never links MPI. In a process that mpirun started (Open MPI's OMPI_COMM_WORLD_SIZE
 * or a PMI's PMI_SIZE in the environment, above 1) dist_init loads bin/libchunkgrpo_mpi.so from
 * beside the worker ($CHUNKGRPO_MPI_LIB overrides), which `make` builds wherever mpicc exists.
 * Anywhere else the process is rank 0 of 1 and every call below returns at once.
 *
 * An MPI world belongs to the whole process, so this is process state, set once by dist_init.
 * The reductions hand every rank the same bits. A rank that fails should call dist_abort, which
 * ends the others instead of leaving them waiting in a collective.
 */
#ifndef CHUNKGRPO_DIST_H
#define CHUNKGRPO_DIST_H

#include <stddef.h>

enum { DIST_SUM, DIST_MIN, DIST_MAX };

#define DIST_MAX_RANKS 4096 /* a runner's per-rank tables are this long */

/* Joins the MPI world when mpirun started this process. Returns 0, or -1 with a message (the
 * library is missing or MPI failed to start). */
int dist_init(char *err, size_t errlen);
void dist_finalize(void);
void dist_abort(int code);

int dist_rank(void);
int dist_size(void);

/* In place over every rank: buf [n] becomes the sum (min, max) of every rank's buf. */
int dist_reduce_floats(float *buf, size_t n, int op);
int dist_reduce_doubles(double *buf, size_t n, int op);

/* Rank r's send [counts[r]] lands at recv + displs[r] on rank 0 (recv and displs are read on
 * rank 0 only). */
int dist_gather_floats(const float *send, float *recv, const int *counts, const int *displs);

/* Rank 0's buf [bytes] to every rank. */
int dist_broadcast(void *buf, size_t bytes);
int dist_barrier(void);

#endif
