/*
 * cgraw.h: a reader for the "cgraw" fixture format, for programs that must link nothing but libc
 * (the GPU check program runs where there is no JSON library to parse safetensors' header).
 * tests/reference/to_raw.py writes X.cgraw beside each committed X.safetensors fixture.
 *
 * Format (version 1), a text header then raw bytes:
 *
 *   CGRAW1 <count>\n
 *   <name> <dtype> <ndim> <dim0> ... <dim{ndim-1}> <byte_offset> <byte_length>\n   (count lines)
 *   meta <key> <value>\n                                                         (zero or more)
 *   end\n
 *   <data block>
 *
 * - Fields are separated by exactly one space; numbers are unsigned decimal.
 * - name: a safetensors tensor name, no whitespace or control characters, never "meta" or "end".
 *   dtype: the safetensors name (F32, F64, I32, I64, U8, BF16, ...). ndim 0 is a scalar.
 * - byte_offset/byte_length: the tensor's bytes in the data block, counted from the first byte
 *   after "end\n". The tensor lines are in data order and tile the block exactly (the first
 *   offset is 0, each next one is the previous offset + length, the last tensor ends at the end
 *   of the file), and byte_length = numel * element size.
 * - The data block is the safetensors data section byte for byte: little-endian, row-major.
 * - meta lines: safetensors __metadata__ entries whose value has no newline (a checkpoint's
 *   multi-line vocab is left out). The value is the rest of the line after the single space
 *   that follows the key; it may hold spaces and may be empty.
 *
 * The reader trusts nothing: cgraw_open reads the whole file and checks every line and number
 * (overflow-safe) and the tiling before it returns; each failure is one message that starts with
 * the path and names the line or the tensor. Tensor data handed out is aligned to 8 bytes (the
 * data block is shifted in memory, since the file does not align it). Little-endian hosts only,
 * as the data is used as is.
 *
 * Plain C11 and libc only, so that it builds with `gcc -std=c11 -Wall -Wextra -Wpedantic` beside
 * CUDA code. Thread safety: a CgRaw is read-only after cgraw_open and may be shared.
 */
#ifndef CHUNKGRPO_CGRAW_H
#define CHUNKGRPO_CGRAW_H

#include <stddef.h>
#include <stdint.h>

#define CGRAW_MAX_DIMS 8         /* as ST_MAX_DIMS: higher ranks are rejected */
#define CGRAW_MAX_TENSORS 100000 /* a larger count is treated as garbage */

typedef struct {
    const char *name;              /* owned by the CgRaw */
    const char *dtype;             /* "F32", "I32", ...: owned by the CgRaw */
    size_t elem_size;              /* bytes per element of dtype */
    int ndim;                      /* 0 (a scalar) .. CGRAW_MAX_DIMS */
    int64_t shape[CGRAW_MAX_DIMS]; /* [ndim]; entries past ndim are 0 */
    size_t numel;                  /* product of shape (1 for a scalar) */
    size_t nbytes;                 /* numel * elem_size */
    size_t offset;                 /* byte offset in the data block */
    const void *data;              /* nbytes bytes, 8-byte aligned, owned by the CgRaw; never
                                      NULL (a zero-sized tensor's must not be dereferenced) */
    int line;                      /* its header line (1-based), for messages */
} CgTensor;

typedef struct CgRaw CgRaw;

/*
 * Opens and validates the cgraw file at path, reading it whole into memory.
 * Returns the CgRaw (the caller frees it with cgraw_close), or NULL with a message in err that
 * starts with the path and names the line or tensor, e.g.
 *   "f.cgraw: line 3: unknown dtype 'F31'",
 *   "f.cgraw: tensor 'dv' (line 5) needs data bytes [9324, 18540) but the data block has 18530
 *    (truncated file?)".
 * err may be NULL when errlen is 0.
 */
CgRaw *cgraw_open(const char *path, char *err, size_t errlen);

/* Frees everything the CgRaw owns, every pointer it handed out included. NULL is a no-op. */
void cgraw_close(CgRaw *f);

/* The number of tensors, and tensor i (0 <= i < count) in file (data) order. */
int cgraw_count(const CgRaw *f);
const CgTensor *cgraw_tensor(const CgRaw *f, int i);

/* The tensor called name, or NULL. */
const CgTensor *cgraw_find(const CgRaw *f, const char *name);

/* The value of meta key (owned by the CgRaw), or NULL when absent. */
const char *cgraw_meta(const CgRaw *f, const char *key);

/* The path given to cgraw_open (for messages). */
const char *cgraw_path(const CgRaw *f);

/*
 * Typed access: the data of tensor name after checking that it exists, has dtype F32 (or I32)
 * and, unless expect_numel is 0, exactly expect_numel elements. Returns the data (owned by the
 * CgRaw, aligned), or NULL with a message naming the file and the tensor, e.g.
 *   "f.cgraw: tensor 'x' has 2304 elements, expected 2305".
 */
const float *cgraw_f32(const CgRaw *f, const char *name, size_t expect_numel, char *err,
                       size_t errlen);
const int32_t *cgraw_i32(const CgRaw *f, const char *name, size_t expect_numel, char *err,
                         size_t errlen);

#endif
