/*
 * fuzz_safetensors.c: libFuzzer harness for the safetensors reader (common/safetensors.c).
 *
 * Feeds arbitrary bytes to st_open_mem. When a file is accepted, it checks the invariants the
 * rest of the code relies on (every range inside the data, tensors tiling it in order, sizes
 * consistent, data aligned and readable, names findable, metadata readable), so a validation gap
 * shows up as a crash here rather than as an out-of-bounds read in a caller. No globals, no
 * leaks: the StFile is closed on every path.
 *
 * Build and run (seed corpus in tests/fuzz/corpus/safetensors/):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon \
 *       tests/fuzz/fuzz_safetensors.c common/safetensors.c common/jsonutil.c -ljansson \
 *       -o fuzz_safetensors
 *   ./fuzz_safetensors -max_total_time=30 tests/fuzz/corpus/safetensors/   # fuzz (new inputs go
 *                                                                          # into the corpus dir)
 *   ./fuzz_safetensors -runs=0 tests/fuzz/corpus/safetensors/              # replay only
 */
#include "safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StFile *f = NULL;
    char err[256];
    if (st_open_mem(data, size, &f, err, sizeof err) != 0) {
        /* a rejection always explains itself, NUL-terminated */
        if (f != NULL || memchr(err, '\0', sizeof err) == NULL || err[0] == '\0')
            abort();
        return 0;
    }
    size_t pos = 0;
    unsigned sum = 0;
    for (int i = 0; i < st_count(f); i++) {
        const StTensor *t = st_tensor(f, i);
        if (t->begin != pos || t->end < t->begin || t->end - t->begin != t->nbytes ||
            t->nbytes != t->numel * st_dtype_size(t->dtype) || t->ndim < 0 ||
            t->ndim > ST_MAX_DIMS)
            abort();
        pos = t->end;
        const unsigned char *p = st_data(f, t);
        if (p == NULL || (uintptr_t)p % st_dtype_size(t->dtype) != 0)
            abort();
        for (size_t k = 0; k < t->nbytes; k++) /* ASan catches a range past the buffer */
            sum += p[k];
        if (st_find(f, t->name) != t)
            abort();
        if (!st_get(f, t->name, t->dtype, t->ndim, t->shape, err, sizeof err))
            abort();
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | data[i];
    if (pos != size - 8 - hlen) /* the tensors cover the data buffer exactly */
        abort();
    for (int i = 0; i < st_meta_count(f); i++) {
        const char *k, *v;
        st_meta_entry(f, i, &k, &v);
        if (st_meta(f, k) != v)
            abort();
        sum += (unsigned)strlen(v);
    }
    st_close(f);
    volatile unsigned sink = sum; /* keep the reads from being optimised away */
    (void)sink;
    return 0;
}
