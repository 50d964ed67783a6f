/*
 * dist.c: the MPI ranks of one experiment, through bin/libchunkgrpo_mpi.so. See dist.h.
 */
#include "dist.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "errbuf.h"

#define MPI_LIBRARY "libchunkgrpo_mpi.so"

static struct {
    int rank, size; /* 0 and 1 until dist_init joins a world */
    int (*init)(int *rank, int *size);
    void (*finalize)(void);
    void (*abort)(int code);
    int (*reduce_floats)(float *buf, size_t n, int op);
    int (*reduce_doubles)(double *buf, size_t n, int op);
    int (*gather_floats)(const float *send, int count, float *recv, const int *counts,
                         const int *displs);
    int (*broadcast)(void *buf, size_t bytes);
    int (*barrier)(void);
} mpi = {.size = 1};

/* The world size mpirun announced, or 1. */
static int launched_size(void)
{
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) return atoi(v);
    }
    return 1;
}

int dist_init(char *err, size_t errlen)
{
    if (mpi.init || launched_size() == 1) return 0;
    char path[PATH_MAX + 64];
    library_path("CHUNKGRPO_MPI_LIB", MPI_LIBRARY, path, sizeof path);
    void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL); /* MPI's plugins need its symbols */
    if (!h) {
        errbuf_printf(err, errlen,
                      "started by mpirun, but MPI is not available: %s (it is built with the "
                      "worker wherever mpicc exists; set CHUNKGRPO_MPI_LIB to use another copy)",
                      dlerror());
        return -1;
    }
    struct {
        void **slot;
        const char *name;
    } syms[] = {
        {(void **)&mpi.init, "chunkgrpo_mpi_init"},
        {(void **)&mpi.finalize, "chunkgrpo_mpi_finalize"},
        {(void **)&mpi.abort, "chunkgrpo_mpi_abort"},
        {(void **)&mpi.reduce_floats, "chunkgrpo_mpi_reduce_floats"},
        {(void **)&mpi.reduce_doubles, "chunkgrpo_mpi_reduce_doubles"},
        {(void **)&mpi.gather_floats, "chunkgrpo_mpi_gather_floats"},
        {(void **)&mpi.broadcast, "chunkgrpo_mpi_broadcast"},
        {(void **)&mpi.barrier, "chunkgrpo_mpi_barrier"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++)
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            errbuf_printf(err, errlen, "%s has no %s: built from another version?", path,
                          syms[i].name);
            mpi.init = NULL;
            return -1;
        }
    if (mpi.init(&mpi.rank, &mpi.size)) {
        errbuf_printf(err, errlen, "MPI_Init failed");
        mpi.init = NULL;
        return -1;
    }
    return 0;
}

void dist_finalize(void)
{
    if (mpi.init) mpi.finalize();
}

void dist_abort(int code)
{
    if (mpi.init && mpi.size > 1) mpi.abort(code);
}

int dist_rank(void)
{
    return mpi.rank;
}

int dist_size(void)
{
    return mpi.size;
}

int dist_reduce_floats(float *buf, size_t n, int op)
{
    return mpi.size > 1 ? mpi.reduce_floats(buf, n, op) : 0;
}

int dist_reduce_doubles(double *buf, size_t n, int op)
{
    return mpi.size > 1 ? mpi.reduce_doubles(buf, n, op) : 0;
}

int dist_gather_floats(const float *send, float *recv, const int *counts, const int *displs)
{
    if (mpi.size > 1) return mpi.gather_floats(send, counts[mpi.rank], recv, counts, displs);
    for (int i = 0; i < counts[0]; i++) recv[displs[0] + i] = send[i];
    return 0;
}

int dist_broadcast(void *buf, size_t bytes)
{
    return mpi.size > 1 ? mpi.broadcast(buf, bytes) : 0;
}

int dist_barrier(void)
{
    return mpi.size > 1 ? mpi.barrier() : 0;
}
