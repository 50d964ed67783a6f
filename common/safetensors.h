/*
 * safetensors.h: a strict reader and an atomic writer for the safetensors file format.
 *
 * Layout: a u64 little-endian header length N, N bytes of JSON header
 *   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"<key>": "<string>", ...}}
 * then the data buffer; offsets are in bytes from the start of the data buffer.
 *
 * The reader trusts nothing: it loads the whole file and checks every field before anything is
 * returned (JSON syntax with line/column, duplicate keys, entry fields and their types, known
 * dtypes, shapes against byte ranges with overflow-safe arithmetic, ranges inside the data, and
 * that the tensors tile the data buffer exactly, with no overlap, hole or trailing bytes, as the
 * format requires). Every failure is a single message that names the file and the tensor or key.
 * Tensor data handed out is aligned for its dtype (a misaligned tensor is copied at open time).
 *
 * The writer lays tensors out contiguously in the order they were added, pads the header with
 * spaces so the data starts on an 8-byte boundary, and writes `<path>.tmp`, fsyncs it and
 * renames it over `<path>`, so a crash leaves either the old file or the new one, never half of
 * one.
 *
 * Both sides assume a little-endian host (checked at compile time). common/ knows nothing of the
 * model: the meaning of names and metadata belongs to the caller (worker/checkpoint.c).
 * Thread safety: an StFile is read-only after st_open and may be shared between threads; an
 * StWriter belongs to one thread at a time.
 */
#ifndef CHUNKGRPO_SAFETENSORS_H
#define CHUNKGRPO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8                           /* higher ranks are rejected */
#define ST_MAX_HEADER ((uint64_t)100 << 20)     /* 100 MiB: a larger header is treated as garbage */

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3,
    ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32,
    ST_I64, ST_U64, ST_F64,
    ST_DTYPE_COUNT
} StDtype;

/* The dtype's name in the format ("F32"), and its element size in bytes. */
const char *st_dtype_name(StDtype dt);
size_t st_dtype_size(StDtype dt);

/* Parses a dtype name. Returns 0 and sets *out, or -1 for an unknown name. */
int st_dtype_parse(const char *name, StDtype *out);

typedef struct {
    const char *name;            /* owned by the StFile */
    StDtype dtype;
    int ndim;                    /* 0 (a scalar) .. ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS];  /* [ndim]; entries past ndim are 0 */
    size_t numel;                /* product of shape (1 for a scalar) */
    size_t nbytes;               /* numel * st_dtype_size(dtype) == end - begin */
    size_t begin, end;           /* byte range in the data buffer */
} StTensor;

typedef struct StFile StFile;

/*
 * Opens and validates the safetensors file at `path`, reading it whole into memory.
 * Returns 0 and sets *out (the caller frees it with st_close), or -1 with *out = NULL and a
 * message in err that starts with the path and names the problem (and the tensor or key).
 * err may be NULL when errlen is 0.
 */
int st_open(const char *path, StFile **out, char *err, size_t errlen);

/*
 * The same validation over a buffer already in memory (len bytes at buf; the fuzz entry point).
 * The buffer is only read during the call: the StFile keeps its own copy of the data, so buf
 * may be freed afterwards. Messages start with "<memory>".
 */
int st_open_mem(const void *buf, size_t len, StFile **out, char *err, size_t errlen);

/* Frees everything the StFile owns, including every pointer it handed out. NULL is a no-op. */
void st_close(StFile *f);

/* The number of tensors, and tensor i (0 <= i < count) in file order, i.e. by data offset
 * (ties, which only zero-sized tensors can have, keep header order). Pointers stay valid until
 * st_close. */
int st_count(const StFile *f);
const StTensor *st_tensor(const StFile *f, int i);

/* The tensor called name, or NULL. */
const StTensor *st_find(const StFile *f, const char *name);

/* The tensor's bytes (t->nbytes of them), aligned for its dtype; owned by the StFile, valid until
 * st_close. A zero-sized tensor gets a valid non-NULL pointer that must not be dereferenced. */
const void *st_data(const StFile *f, const StTensor *t);

/* The __metadata__ value for key (owned by the StFile), or NULL when absent. */
const char *st_meta(const StFile *f, const char *key);

/* The number of __metadata__ entries, and entry i (in header order) as key/value. */
int st_meta_count(const StFile *f);
void st_meta_entry(const StFile *f, int i, const char **key, const char **value);

/* The label used in messages: the path given to st_open, or "<memory>". */
const char *st_label(const StFile *f);

/*
 * Typed access: the data of tensor `name` after checking that it exists, has dtype `dt` and
 * exactly the shape shape[0..ndim). ndim < 0 accepts any shape (shape is then ignored).
 * Returns the data (owned by the StFile, aligned), or NULL with a message naming the file, the
 * tensor, and the expected and found dtype or shape, e.g.
 *   "ckpt.safetensors: tensor 'x' has shape [4, 8], expected [4, 16]".
 * A zero-sized tensor that matches returns a non-NULL pointer.
 */
const void *st_get(const StFile *f, const char *name, StDtype dt, int ndim, const int64_t *shape,
                   char *err, size_t errlen);
const float *st_get_f32(const StFile *f, const char *name, int ndim, const int64_t *shape,
                        char *err, size_t errlen);
const int32_t *st_get_i32(const StFile *f, const char *name, int ndim, const int64_t *shape,
                          char *err, size_t errlen);

/* Formats a shape as "[2, 3]" into buf (always NUL-terminated; truncated to fit). */
void st_format_shape(char *buf, size_t buflen, int ndim, const int64_t *shape);

/*
 * One-shot convenience (for tools such as the velocity dump): opens path, takes the F32 tensor
 * `name` of any shape, copies it into a malloc'd buffer and closes the file.
 * Returns 0 with *data (the caller frees it), *ndim and shape[0..ndim) set (shape must have
 * room for ST_MAX_DIMS), or -1 with a message and *data = NULL.
 */
int st_load_f32(const char *path, const char *name, float **data, int *ndim,
                int64_t shape[ST_MAX_DIMS], char *err, size_t errlen);

typedef struct StWriter StWriter;

/* A new, empty writer; NULL when memory runs out. Free it with st_writer_free. */
StWriter *st_writer_new(void);
void st_writer_free(StWriter *w);

/*
 * Adds a tensor. The name and shape are copied; `data` (numel * st_dtype_size(dt) bytes,
 * little-endian) is BORROWED and must stay valid and unchanged until st_writer_save returns.
 * It may be NULL only when the tensor has no elements.
 * Returns 0, or -1 for a duplicate or reserved ("__metadata__") name, a bad dtype, a rank above
 * ST_MAX_DIMS, a negative dimension, a size overflow, or no memory. The first such error is also
 * kept in the writer and makes st_writer_save fail with it, so a sequence of adds may be checked
 * once at the end.
 */
int st_writer_add(StWriter *w, const char *name, StDtype dt, int ndim, const int64_t *shape,
                  const void *data);

/* Sets __metadata__[key] = value (both copied; a key set twice keeps the last value, in the
 * position of the first). Returns 0, or -1 when memory runs out (kept as for st_writer_add). */
int st_writer_meta(StWriter *w, const char *key, const char *value);

/*
 * Writes the file: `<path>.tmp` first, then fsync, rename over path, fsync of the directory.
 * Returns 0, or -1 with a message naming the path (the temporary file is then removed and path
 * is untouched). The writer keeps its contents and may be saved again or freed.
 */
int st_writer_save(StWriter *w, const char *path, char *err, size_t errlen);

#endif
