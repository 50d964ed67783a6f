/*
 * dist_mpi.c: the few MPI calls data parallelism needs, built by mpicc into
 * bin/libchunkgrpo_mpi.so, which worker/dist.c loads only in a process that mpirun started. The
 * worker itself never links MPI, so it runs on machines without it.
 *
 * Every reduction is a reduce to rank 0 followed by a broadcast, not MPI_Allreduce: the standard
 * does not promise that an allreduce hands every rank the same bits, and the ranks must end each
 * optimizer step with identical parameters.
 */
#include <limits.h>
#include <mpi.h>
#include <stddef.h>

#define PIECE (1 << 28) /* elements per call: MPI counts are ints */

int chunkgrpo_mpi_init(int *rank, int *size)
{
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized && MPI_Init(NULL, NULL) != MPI_SUCCESS) return -1;
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return 0;
}

void chunkgrpo_mpi_finalize(void)
{
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

void chunkgrpo_mpi_abort(int code)
{
    MPI_Abort(MPI_COMM_WORLD, code);
}

/* op: 0 sum, 1 min, 2 max */
static int reduce(void *buf, size_t n, MPI_Datatype type, size_t elem, int op)
{
    MPI_Op mop = op == 1 ? MPI_MIN : op == 2 ? MPI_MAX : MPI_SUM;
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    for (size_t at = 0; at < n; at += PIECE) {
        int count = (int)(n - at < PIECE ? n - at : PIECE);
        char *p = (char *)buf + at * elem;
        if (MPI_Reduce(rank == 0 ? MPI_IN_PLACE : p, rank == 0 ? p : NULL, count, type, mop, 0,
                       MPI_COMM_WORLD) != MPI_SUCCESS ||
            MPI_Bcast(p, count, type, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
            return -1;
    }
    return 0;
}

int chunkgrpo_mpi_reduce_floats(float *buf, size_t n, int op)
{
    return reduce(buf, n, MPI_FLOAT, sizeof(float), op);
}

int chunkgrpo_mpi_reduce_doubles(double *buf, size_t n, int op)
{
    return reduce(buf, n, MPI_DOUBLE, sizeof(double), op);
}

int chunkgrpo_mpi_gather_floats(const float *send, int count, float *recv, const int *counts,
                                const int *displs)
{
    return MPI_Gatherv(send, count, MPI_FLOAT, recv, counts, displs, MPI_FLOAT, 0,
                       MPI_COMM_WORLD) == MPI_SUCCESS
               ? 0
               : -1;
}

int chunkgrpo_mpi_broadcast(void *buf, size_t bytes)
{
    for (size_t at = 0; at < bytes; at += PIECE)
        if (MPI_Bcast((char *)buf + at, (int)(bytes - at < PIECE ? bytes - at : PIECE), MPI_BYTE, 0,
                      MPI_COMM_WORLD) != MPI_SUCCESS)
            return -1;
    return 0;
}

int chunkgrpo_mpi_barrier(void)
{
    return MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : -1;
}
