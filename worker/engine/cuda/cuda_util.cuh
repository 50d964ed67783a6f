/*
 * cuda_util.cuh: what every file of the CUDA backend shares: the checks around CUDA and cuBLAS
 * calls, and launch-size helpers.
 */
#ifndef CHUNKGRPO_CUDA_UTIL_CUH
#define CHUNKGRPO_CUDA_UTIL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

/* Prints the failed call with its place and exits with status 70 (see cuda_engine.h). */
[[noreturn]] void cuda_fail(const char *what, const char *file, int line, const char *msg);

#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess) cuda_fail(#call, __FILE__, __LINE__, cudaGetErrorString(err_));   \
    } while (0)

#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                          \
            cuda_fail(#call, __FILE__, __LINE__, cublasGetStatusString(st_));                      \
    } while (0)

/* After a kernel launch: a bad launch configuration is reported where it happened. */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

static inline unsigned ceil_div(size_t n, unsigned d)
{
    return (unsigned)((n + d - 1) / d);
}

#endif
