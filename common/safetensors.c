/*
 * safetensors.c: the reader and writer of safetensors.h.
 *
 * Reading is two phases: st_parse() validates the JSON header against the length of the data
 * buffer and fills the tensor table (this is the part the fuzzer exercises, through
 * st_open_mem), then the data buffer is placed in 64-byte-aligned memory and each tensor gets a
 * pointer into it (or, when its offset is not a multiple of its element size, an aligned copy).
 * Messages are built as "<label>: <problem>" so callers can print them as they are.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* strndup, fsync, O_DIRECTORY when built without -D_GNU_SOURCE */
#endif
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>

#include "jsonutil.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format's byte order)"
#endif

#define ST_DATA_ALIGN 64

/* ---------------------------------------------------------------------------------------------
 * dtypes
 */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_I16] = {"I16", 2},         [ST_U16] = {"U16", 2}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},       [ST_I32] = {"I32", 4}, [ST_U32] = {"U32", 4},
    [ST_F32] = {"F32", 4},         [ST_I64] = {"I64", 8}, [ST_U64] = {"U64", 8},
    [ST_F64] = {"F64", 8},
};

const char *st_dtype_name(StDtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? st_dtypes[dt].name : "?";
}

size_t st_dtype_size(StDtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? st_dtypes[dt].size : 0;
}

int st_dtype_parse(const char *name, StDtype *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        if (strcmp(name, st_dtypes[i].name) == 0) {
            *out = (StDtype)i;
            return 0;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * errors and small helpers
 */

/* err = "<label>: <fmt...>" (label omitted when NULL). */
static void st_errf(char *err, size_t errlen, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void st_errf(char *err, size_t errlen, const char *label, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    size_t used = 0;
    if (label) {
        int n = snprintf(err, errlen, "%s: ", label);
        if (n < 0)
            n = 0;
        used = (size_t)n < errlen ? (size_t)n : errlen - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}

static char *st_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void st_format_shape(char *buf, size_t buflen, int ndim, const int64_t *shape)
{
    if (!buf || buflen == 0)
        return;
    size_t used = 0;
    buf[0] = '\0';
    for (int i = -1; i <= ndim && used < buflen; i++) {
        int n;
        if (i < 0)
            n = snprintf(buf + used, buflen - used, "[");
        else if (i == ndim)
            n = snprintf(buf + used, buflen - used, "]");
        else
            n = snprintf(buf + used, buflen - used, "%s%" PRId64, i ? ", " : "", shape[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static uint64_t st_read_u64le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---------------------------------------------------------------------------------------------
 * the reader
 */

typedef struct {
    StTensor t;                 /* first member: st_data() maps a StTensor* back to its entry */
    int header_index;           /* position in the JSON header (ties in the sort) */
    const unsigned char *ptr;   /* aligned data: into StFile.data, or copy */
    void *copy;                 /* owned aligned copy when the offset was misaligned, else NULL */
} StEntry;

struct StFile {
    char *label;                /* owned */
    unsigned char *data;        /* [data_len rounded up], ST_DATA_ALIGN-aligned; owned */
    size_t data_len;
    StEntry *entries;           /* [count], by data offset; names owned */
    int *by_name;               /* [count] indices into entries, sorted by name (st_find) */
    int count;
    char **meta_keys, **meta_vals; /* [meta_count], header order; owned */
    int meta_count;
};

void st_close(StFile *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->count; i++) {
        free((char *)f->entries[i].t.name);
        free(f->entries[i].copy);
    }
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->entries);
    free(f->by_name);
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->data);
    free(f->label);
    free(f);
}

static StFile *st_file_new(const char *label)
{
    StFile *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->label = st_strdup(label);
    if (!f->label) {
        free(f);
        return NULL;
    }
    return f;
}

/* Reads a non-negative JSON integer. Returns 0, or -1 (not an integer) or -2 (negative). */
static int st_json_nonneg(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0)
        return -2;
    *out = (uint64_t)x;
    return 0;
}

/* Validates one tensor entry (name: obj) and fills e->t (except the name). The data length is
 * what the byte range must fit in. Returns 0, or -1 with a message. */
static int st_parse_entry(StEntry *e, const char *name, const json_t *obj, size_t data_len,
                          const char *label, char *err, size_t errlen)
{
    if (!json_is_object(obj)) {
        st_errf(err, errlen, label, "tensor '%s': entry is a JSON %s, expected an object", name,
                json_type_name(obj));
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
            strcmp(key, "data_offsets") != 0) {
            st_errf(err, errlen, label, "tensor '%s': unknown key '%s' (expected dtype, shape, "
                    "data_offsets)", name, key);
            return -1;
        }
    }

    static const char *const fields[] = {"dtype", "shape", "data_offsets"};
    for (int i = 0; i < 3; i++) {
        if (!json_object_get(obj, fields[i])) {
            st_errf(err, errlen, label, "tensor '%s': missing '%s'", name, fields[i]);
            return -1;
        }
    }

    const json_t *jd = json_object_get(obj, "dtype");
    if (!json_is_string(jd)) {
        st_errf(err, errlen, label, "tensor '%s': 'dtype' is a JSON %s, expected a string", name,
                json_type_name(jd));
        return -1;
    }
    if (st_dtype_parse(json_string_value(jd), &e->t.dtype) != 0) {
        st_errf(err, errlen, label, "tensor '%s': unknown dtype '%s'", name,
                json_string_value(jd));
        return -1;
    }

    const json_t *js = json_object_get(obj, "shape");
    if (!json_is_array(js)) {
        st_errf(err, errlen, label, "tensor '%s': 'shape' is a JSON %s, expected an array", name,
                json_type_name(js));
        return -1;
    }
    size_t rank = json_array_size(js);
    if (rank > ST_MAX_DIMS) {
        st_errf(err, errlen, label, "tensor '%s': shape has %zu dimensions, more than the %d "
                "supported", name, rank, ST_MAX_DIMS);
        return -1;
    }
    e->t.ndim = (int)rank;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < rank; i++) {
        const json_t *jv = json_array_get(js, i);
        uint64_t dim;
        int rc = st_json_nonneg(jv, &dim);
        if (rc == -1) {
            st_errf(err, errlen, label, "tensor '%s': shape[%zu] is a JSON %s, expected a "
                    "non-negative integer", name, i, json_type_name(jv));
            return -1;
        }
        if (rc == -2) {
            st_errf(err, errlen, label, "tensor '%s': shape[%zu] is negative (%" JSON_INTEGER_FORMAT
                    ")", name, i, json_integer_value(jv));
            return -1;
        }
        e->t.shape[i] = (int64_t)dim;
        if (__builtin_mul_overflow(numel, dim, &numel))
            overflow = 1;
    }
    size_t esize = st_dtype_size(e->t.dtype);
    uint64_t nbytes = 0;
    /* A zero dimension makes the product 0 whatever overflowed before it. */
    int zero = 0;
    for (int i = 0; i < e->t.ndim; i++)
        zero |= e->t.shape[i] == 0;
    if (zero) {
        numel = 0;
        overflow = 0;
    }
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)esize, &nbytes) ||
        nbytes > SIZE_MAX) {
        char sh[160];
        st_format_shape(sh, sizeof sh, e->t.ndim, e->t.shape);
        st_errf(err, errlen, label, "tensor '%s': shape %s of %s is too large (byte size "
                "overflows)", name, sh, st_dtype_name(e->t.dtype));
        return -1;
    }
    e->t.numel = (size_t)numel;
    e->t.nbytes = (size_t)nbytes;

    const json_t *jo = json_object_get(obj, "data_offsets");
    if (!json_is_array(jo) || json_array_size(jo) != 2) {
        st_errf(err, errlen, label, "tensor '%s': 'data_offsets' must be an array of 2 "
                "integers [begin, end]", name);
        return -1;
    }
    uint64_t off[2];
    for (size_t i = 0; i < 2; i++) {
        const json_t *jv = json_array_get(jo, i);
        int rc = st_json_nonneg(jv, &off[i]);
        if (rc == -1) {
            st_errf(err, errlen, label, "tensor '%s': data_offsets[%zu] is a JSON %s, expected "
                    "a non-negative integer", name, i, json_type_name(jv));
            return -1;
        }
        if (rc == -2) {
            st_errf(err, errlen, label, "tensor '%s': data_offsets[%zu] is negative (%"
                    JSON_INTEGER_FORMAT ")", name, i, json_integer_value(jv));
            return -1;
        }
    }
    if (off[0] > off[1]) {
        st_errf(err, errlen, label, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
                "begin after end", name, off[0], off[1]);
        return -1;
    }
    if (off[1] - off[0] != nbytes) {
        char sh[160];
        st_format_shape(sh, sizeof sh, e->t.ndim, e->t.shape);
        st_errf(err, errlen, label, "tensor '%s': shape %s of %s needs %" PRIu64 " bytes but "
                "data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64, name, sh,
                st_dtype_name(e->t.dtype), nbytes, off[0], off[1], off[1] - off[0]);
        return -1;
    }
    if (off[1] > data_len) {
        st_errf(err, errlen, label, "tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64 "] run "
                "past the end of the data (%zu bytes); file truncated?", name, off[0], off[1],
                data_len);
        return -1;
    }
    e->t.begin = (size_t)off[0];
    e->t.end = (size_t)off[1];
    return 0;
}

static int st_cmp_offset(const void *a, const void *b)
{
    const StEntry *x = a, *y = b;
    if (x->t.begin != y->t.begin)
        return x->t.begin < y->t.begin ? -1 : 1;
    if (x->t.end != y->t.end)
        return x->t.end < y->t.end ? -1 : 1;
    return (x->header_index > y->header_index) - (x->header_index < y->header_index);
}

/* qsort has no context argument; the name index sorts pairs instead. */
typedef struct {
    const char *name;
    int index;
} StNameRef;

static int st_cmp_name(const void *a, const void *b)
{
    return strcmp(((const StNameRef *)a)->name, ((const StNameRef *)b)->name);
}

static int st_parse_metadata(StFile *f, const json_t *meta, char *err, size_t errlen)
{
    if (!json_is_object(meta)) {
        st_errf(err, errlen, f->label, "__metadata__ is a JSON %s, expected an object of strings",
                json_type_name(meta));
        return -1;
    }
    size_t n = json_object_size(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_vals = calloc(n ? n : 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        goto oom;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)meta, key, val) {
        if (!json_is_string(val)) {
            st_errf(err, errlen, f->label, "__metadata__ value for key '%s' is a JSON %s, "
                    "expected a string", key, json_type_name(val));
            return -1;
        }
        int i = f->meta_count;
        f->meta_keys[i] = st_strdup(key);
        f->meta_vals[i] = st_strdup(json_string_value(val));
        if (f->meta_keys[i] || f->meta_vals[i])
            f->meta_count++; /* st_close frees whichever was allocated */
        if (!f->meta_keys[i] || !f->meta_vals[i])
            goto oom;
    }
    return 0;
oom:
    st_errf(err, errlen, f->label, "out of memory reading __metadata__");
    return -1;
}

/* Validates the header (hlen bytes, not NUL-terminated) against a data buffer of data_len bytes
 * and fills f's tensor table and metadata. Returns 0, or -1 with a message (f then holds partial
 * state that st_close frees). */
static int st_parse(StFile *f, const char *hdr, size_t hlen, size_t data_len, char *err,
                    size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        st_errf(err, errlen, f->label, "header is not valid JSON (line %d, column %d): %s",
                je.line, je.column, je.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        st_errf(err, errlen, f->label, "header is a JSON %s, expected an object",
                json_type_name(root));
        goto out;
    }

    /* "__metadata__": null means none (the reference implementation reads it as an absent
     * optional); any other non-object is an error. */
    const json_t *meta = json_object_get(root, "__metadata__");
    if (meta && !json_is_null(meta) && st_parse_metadata(f, meta, err, errlen) != 0)
        goto out;

    size_t n = json_object_size(root) - (meta ? 1 : 0);
    if (n > INT32_MAX) {
        st_errf(err, errlen, f->label, "too many tensors (%zu)", n);
        goto out;
    }
    f->entries = calloc(n ? n : 1, sizeof *f->entries);
    f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
    if (!f->entries || !f->by_name) {
        st_errf(err, errlen, f->label, "out of memory for %zu tensors", n);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        StEntry *e = &f->entries[f->count];
        e->header_index = f->count;
        if (st_parse_entry(e, key, val, data_len, f->label, err, errlen) != 0)
            goto out;
        e->t.name = st_strdup(key);
        if (!e->t.name) {
            st_errf(err, errlen, f->label, "out of memory");
            goto out;
        }
        f->count++;
    }

    /* The format requires the tensors to tile the data buffer: no overlap, no hole, nothing
     * after the last one. A violation means a corrupt or hand-edited file. */
    qsort(f->entries, (size_t)f->count, sizeof *f->entries, st_cmp_offset);
    size_t pos = 0;
    const StEntry *prev = NULL;
    for (int i = 0; i < f->count; i++) {
        const StEntry *e = &f->entries[i];
        if (e->t.begin < pos) {
            st_errf(err, errlen, f->label, "tensors '%s' [%zu, %zu] and '%s' [%zu, %zu] overlap "
                    "in the data buffer", prev->t.name, prev->t.begin, prev->t.end, e->t.name,
                    e->t.begin, e->t.end);
            goto out;
        }
        if (e->t.begin > pos) {
            st_errf(err, errlen, f->label, "hole of %zu bytes in the data buffer before tensor "
                    "'%s' (data_offsets [%zu, %zu]); tensors must be contiguous",
                    e->t.begin - pos, e->t.name, e->t.begin, e->t.end);
            goto out;
        }
        pos = e->t.end;
        prev = e;
    }
    if (pos != data_len) {
        st_errf(err, errlen, f->label, "%zu trailing bytes in the data buffer after the last "
                "tensor (data is %zu bytes, tensors end at %zu)", data_len - pos, data_len, pos);
        goto out;
    }

    StNameRef *refs = calloc(n ? n : 1, sizeof *refs); /* n == f->count here */
    if (!refs) {
        st_errf(err, errlen, f->label, "out of memory");
        goto out;
    }
    for (int i = 0; i < f->count; i++)
        refs[i] = (StNameRef){f->entries[i].t.name, i};
    qsort(refs, (size_t)f->count, sizeof *refs, st_cmp_name);
    for (int i = 0; i < f->count; i++)
        f->by_name[i] = refs[i].index;
    free(refs);
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* Allocates the aligned data buffer (at least one alignment unit, so a zero-length buffer still
 * gives zero-sized tensors a valid pointer). */
static int st_alloc_data(StFile *f, size_t data_len, char *err, size_t errlen)
{
    size_t cap = data_len + ST_DATA_ALIGN - 1;
    if (cap < data_len) {
        st_errf(err, errlen, f->label, "data buffer too large");
        return -1;
    }
    cap -= cap % ST_DATA_ALIGN;
    if (cap == 0)
        cap = ST_DATA_ALIGN;
    f->data = aligned_alloc(ST_DATA_ALIGN, cap);
    if (!f->data) {
        st_errf(err, errlen, f->label, "out of memory for %zu bytes of tensor data", data_len);
        return -1;
    }
    f->data_len = data_len;
    return 0;
}

/* Points each tensor at its data, copying those whose offset is misaligned for their dtype
 * (possible in files from other writers: the format does not require alignment). */
static int st_place(StFile *f, char *err, size_t errlen)
{
    for (int i = 0; i < f->count; i++) {
        StEntry *e = &f->entries[i];
        const unsigned char *p = f->data + e->t.begin;
        if (e->t.nbytes == 0) {
            p = f->data; /* nothing to read, but keep the alignment promise */
        } else if ((uintptr_t)p % st_dtype_size(e->t.dtype) != 0) {
            e->copy = malloc(e->t.nbytes); /* malloc aligns for every scalar type */
            if (!e->copy) {
                st_errf(err, errlen, f->label, "out of memory copying tensor '%s'", e->t.name);
                return -1;
            }
            memcpy(e->copy, p, e->t.nbytes);
            p = e->copy;
        }
        e->ptr = p;
    }
    return 0;
}

/* Checks the 8-byte length prefix against the total size. Returns 0 with *hlen set, or -1. */
static int st_check_prefix(const unsigned char prefix[8], uint64_t total, const char *label,
                           uint64_t *hlen, char *err, size_t errlen)
{
    uint64_t n = st_read_u64le(prefix);
    if (n > ST_MAX_HEADER) {
        st_errf(err, errlen, label, "header length %" PRIu64 " is absurd (limit %" PRIu64
                " bytes); not a safetensors file?", n, ST_MAX_HEADER);
        return -1;
    }
    if (n > total - 8) {
        st_errf(err, errlen, label, "header length %" PRIu64 " runs past the end of the file (%"
                PRIu64 " bytes); file truncated?", n, total);
        return -1;
    }
    *hlen = n;
    return 0;
}

int st_open_mem(const void *buf, size_t len, StFile **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *label = "<memory>";
    if (len < 8) {
        st_errf(err, errlen, label, "%zu bytes is too short for the 8-byte header length", len);
        return -1;
    }
    uint64_t hlen;
    if (st_check_prefix(buf, len, label, &hlen, err, errlen) != 0)
        return -1;
    StFile *f = st_file_new(label);
    if (!f) {
        st_errf(err, errlen, label, "out of memory");
        return -1;
    }
    const unsigned char *b = buf;
    size_t data_len = len - 8 - (size_t)hlen;
    if (st_parse(f, (const char *)b + 8, (size_t)hlen, data_len, err, errlen) != 0 ||
        st_alloc_data(f, data_len, err, errlen) != 0)
        goto fail;
    if (data_len)
        memcpy(f->data, b + 8 + hlen, data_len);
    if (st_place(f, err, errlen) != 0)
        goto fail;
    *out = f;
    return 0;
fail:
    st_close(f);
    return -1;
}

/* Reads exactly n bytes. Returns 0, or -1 (errno set; 0 on a short file). */
static int st_read_full(FILE *fp, void *dst, size_t n)
{
    if (n == 0)
        return 0;
    errno = 0;
    return fread(dst, 1, n, fp) == n ? 0 : -1;
}

int st_open(const char *path, StFile **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        st_errf(err, errlen, path, "cannot open: %s", strerror(errno));
        return -1;
    }
    StFile *f = NULL;
    char *hdr = NULL;
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0) {
        st_errf(err, errlen, path, "cannot stat: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st_errf(err, errlen, path, "not a regular file");
        goto fail;
    }
    uint64_t total = (uint64_t)sb.st_size;
    unsigned char prefix[8];
    if (total < 8) {
        st_errf(err, errlen, path, "file is %" PRIu64 " bytes, too short for the 8-byte header "
                "length", total);
        goto fail;
    }
    if (st_read_full(fp, prefix, 8) != 0)
        goto read_error;
    uint64_t hlen;
    if (st_check_prefix(prefix, total, path, &hlen, err, errlen) != 0)
        goto fail;
    f = st_file_new(path);
    hdr = malloc((size_t)hlen + 1);
    if (!f || !hdr) {
        st_errf(err, errlen, path, "out of memory");
        goto fail;
    }
    if (st_read_full(fp, hdr, (size_t)hlen) != 0)
        goto read_error;
    uint64_t data_len = total - 8 - hlen;
    if (data_len > SIZE_MAX) {
        st_errf(err, errlen, path, "file too large");
        goto fail;
    }
    if (st_parse(f, hdr, (size_t)hlen, (size_t)data_len, err, errlen) != 0 ||
        st_alloc_data(f, (size_t)data_len, err, errlen) != 0)
        goto fail;
    if (st_read_full(fp, f->data, (size_t)data_len) != 0)
        goto read_error;
    if (st_place(f, err, errlen) != 0)
        goto fail;
    free(hdr);
    fclose(fp);
    *out = f;
    return 0;
read_error:
    /* The size came from fstat, so a short read means the file shrank under us. */
    st_errf(err, errlen, path, "read failed: %s", errno ? strerror(errno) :
            "file shorter than its size (changed while reading?)");
fail:
    free(hdr);
    st_close(f);
    fclose(fp);
    return -1;
}

int st_count(const StFile *f) { return f->count; }

const StTensor *st_tensor(const StFile *f, int i)
{
    return (i >= 0 && i < f->count) ? &f->entries[i].t : NULL;
}

const StTensor *st_find(const StFile *f, const char *name)
{
    int lo = 0, hi = f->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const StEntry *e = &f->entries[f->by_name[mid]];
        int c = strcmp(name, e->t.name);
        if (c == 0)
            return &e->t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const void *st_data(const StFile *f, const StTensor *t)
{
    (void)f;
    return ((const StEntry *)t)->ptr;
}

const char *st_meta(const StFile *f, const char *key)
{
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_vals[i];
    return NULL;
}

int st_meta_count(const StFile *f) { return f->meta_count; }

void st_meta_entry(const StFile *f, int i, const char **key, const char **value)
{
    *key = f->meta_keys[i];
    *value = f->meta_vals[i];
}

const char *st_label(const StFile *f) { return f->label; }

const void *st_get(const StFile *f, const char *name, StDtype dt, int ndim, const int64_t *shape,
                   char *err, size_t errlen)
{
    const StTensor *t = st_find(f, name);
    if (!t) {
        st_errf(err, errlen, f->label, "tensor '%s' not found", name);
        return NULL;
    }
    if (t->dtype != dt) {
        st_errf(err, errlen, f->label, "tensor '%s' has dtype %s, expected %s", name,
                st_dtype_name(t->dtype), st_dtype_name(dt));
        return NULL;
    }
    if (ndim >= 0) {
        int same = t->ndim == ndim;
        for (int i = 0; same && i < ndim; i++)
            same = t->shape[i] == shape[i];
        if (!same) {
            char found[160], want[160];
            st_format_shape(found, sizeof found, t->ndim, t->shape);
            st_format_shape(want, sizeof want, ndim, shape);
            st_errf(err, errlen, f->label, "tensor '%s' has shape %s, expected %s", name, found,
                    want);
            return NULL;
        }
    }
    return st_data(f, t);
}

const float *st_get_f32(const StFile *f, const char *name, int ndim, const int64_t *shape,
                        char *err, size_t errlen)
{
    return st_get(f, name, ST_F32, ndim, shape, err, errlen);
}

const int32_t *st_get_i32(const StFile *f, const char *name, int ndim, const int64_t *shape,
                          char *err, size_t errlen)
{
    return st_get(f, name, ST_I32, ndim, shape, err, errlen);
}

int st_load_f32(const char *path, const char *name, float **data, int *ndim,
                int64_t shape[ST_MAX_DIMS], char *err, size_t errlen)
{
    *data = NULL;
    StFile *f;
    if (st_open(path, &f, err, errlen) != 0)
        return -1;
    const float *src = st_get_f32(f, name, -1, NULL, err, errlen);
    if (!src) {
        st_close(f);
        return -1;
    }
    const StTensor *t = st_find(f, name);
    float *copy = malloc(t->nbytes ? t->nbytes : 1);
    if (!copy) {
        st_errf(err, errlen, path, "out of memory for tensor '%s' (%zu bytes)", name, t->nbytes);
        st_close(f);
        return -1;
    }
    if (t->nbytes)
        memcpy(copy, src, t->nbytes);
    *ndim = t->ndim;
    memcpy(shape, t->shape, sizeof t->shape);
    *data = copy;
    st_close(f);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * the writer
 */

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    const void *data; /* borrowed */
} StWEntry;

struct StWriter {
    StWEntry *t;
    int n, cap;
    char **mkeys, **mvals;
    int mn, mcap;
    int failed;    /* sticky: the first add/meta error, reported by save */
    char err[256];
};

StWriter *st_writer_new(void)
{
    return calloc(1, sizeof(StWriter));
}

void st_writer_free(StWriter *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++)
        free(w->t[i].name);
    for (int i = 0; i < w->mn; i++) {
        free(w->mkeys[i]);
        free(w->mvals[i]);
    }
    free(w->t);
    free(w->mkeys);
    free(w->mvals);
    free(w);
}

static int st_writer_fail(StWriter *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int st_writer_fail(StWriter *w, const char *fmt, ...)
{
    if (!w->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err, sizeof w->err, fmt, ap);
        va_end(ap);
        w->failed = 1;
    }
    return -1;
}

/* jansson refuses strings that are not valid UTF-8; find out at add time, not at save time. */
static int st_valid_utf8(const char *s)
{
    json_t *j = json_string(s);
    if (!j)
        return 0;
    json_decref(j);
    return 1;
}

int st_writer_add(StWriter *w, const char *name, StDtype dt, int ndim, const int64_t *shape,
                  const void *data)
{
    if (strcmp(name, "__metadata__") == 0)
        return st_writer_fail(w, "tensor name '__metadata__' is reserved");
    if (!st_valid_utf8(name))
        return st_writer_fail(w, "tensor name is not valid UTF-8");
    if ((unsigned)dt >= ST_DTYPE_COUNT)
        return st_writer_fail(w, "tensor '%s': bad dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return st_writer_fail(w, "tensor '%s': rank %d outside 0..%d", name, ndim, ST_MAX_DIMS);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return st_writer_fail(w, "tensor '%s' added twice", name);
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return st_writer_fail(w, "tensor '%s': shape[%d] is negative", name, i);
        if (__builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
            overflow = 1;
        if (shape[i] == 0)
            overflow = 0, numel = 0;
    }
    uint64_t nbytes;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)st_dtype_size(dt), &nbytes) ||
        nbytes > SIZE_MAX)
        return st_writer_fail(w, "tensor '%s': byte size overflows", name);
    if (nbytes > 0 && !data)
        return st_writer_fail(w, "tensor '%s': data is NULL", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        StWEntry *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t)
            return st_writer_fail(w, "out of memory adding tensor '%s'", name);
        w->t = t;
        w->cap = cap;
    }
    StWEntry *e = &w->t[w->n];
    memset(e, 0, sizeof *e);
    e->name = st_strdup(name);
    if (!e->name)
        return st_writer_fail(w, "out of memory adding tensor '%s'", name);
    e->dtype = dt;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->shape[i] = shape[i];
    e->nbytes = (size_t)nbytes;
    e->data = data;
    w->n++;
    return 0;
}

int st_writer_meta(StWriter *w, const char *key, const char *value)
{
    if (!st_valid_utf8(key) || !st_valid_utf8(value))
        return st_writer_fail(w, "__metadata__ key or value for '%s' is not valid UTF-8", key);
    char *v = st_strdup(value);
    if (!v)
        return st_writer_fail(w, "out of memory setting metadata '%s'", key);
    for (int i = 0; i < w->mn; i++) {
        if (strcmp(w->mkeys[i], key) == 0) {
            free(w->mvals[i]);
            w->mvals[i] = v;
            return 0;
        }
    }
    if (w->mn == w->mcap) {
        int cap = w->mcap ? 2 * w->mcap : 8;
        char **k = realloc(w->mkeys, (size_t)cap * sizeof *k);
        if (k)
            w->mkeys = k;
        char **vv = k ? realloc(w->mvals, (size_t)cap * sizeof *vv) : NULL;
        if (vv)
            w->mvals = vv;
        if (!k || !vv) {
            free(v);
            return st_writer_fail(w, "out of memory setting metadata '%s'", key);
        }
        w->mcap = cap;
    }
    w->mkeys[w->mn] = st_strdup(key);
    if (!w->mkeys[w->mn]) {
        free(v);
        return st_writer_fail(w, "out of memory setting metadata '%s'", key);
    }
    w->mvals[w->mn++] = v;
    return 0;
}

/* The header JSON (compact, __metadata__ first, tensors in add order), malloc'd; NULL when
 * memory runs out. */
static char *st_writer_header(const StWriter *w)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    int bad = 0;
    if (w->mn > 0) {
        json_t *meta = json_object();
        bad |= json_object_set_new(root, "__metadata__", meta) != 0;
        for (int i = 0; !bad && i < w->mn; i++)
            bad |= json_object_set_new(meta, w->mkeys[i], json_string(w->mvals[i])) != 0;
    }
    size_t off = 0;
    for (int i = 0; !bad && i < w->n; i++) {
        const StWEntry *e = &w->t[i];
        json_t *shape = json_array();
        for (int d = 0; shape && d < e->ndim; d++)
            bad |= json_array_append_new(shape, json_integer((json_int_t)e->shape[d])) != 0;
        json_t *ent = json_pack("{s:s, s:o, s:[I, I]}", "dtype", st_dtype_name(e->dtype),
                                "shape", shape, "data_offsets", (json_int_t)off,
                                (json_int_t)(off + e->nbytes));
        bad |= json_object_set_new(root, e->name, ent) != 0;
        off += e->nbytes;
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static int st_write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Makes the rename durable. Best effort: by now the new file is complete and in place, so a
 * failure here (e.g. a directory we may not open) is not worth failing the save over. */
static void st_fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int st_writer_save(StWriter *w, const char *path, char *err, size_t errlen)
{
    if (w->failed) {
        st_errf(err, errlen, path, "%s", w->err);
        return -1;
    }
    uint64_t total = 0;
    for (int i = 0; i < w->n; i++) {
        if (__builtin_add_overflow(total, (uint64_t)w->t[i].nbytes, &total) ||
            total > (uint64_t)INT64_MAX) {
            st_errf(err, errlen, path, "tensor data too large");
            return -1;
        }
    }
    char *hdr = st_writer_header(w);
    size_t tlen = strlen(path) + 5;
    char *tmp = malloc(tlen);
    if (!hdr || !tmp) {
        free(hdr);
        free(tmp);
        st_errf(err, errlen, path, "out of memory building the header");
        return -1;
    }
    snprintf(tmp, tlen, "%s.tmp", path);

    size_t hlen = strlen(hdr);
    size_t padded = (hlen + 7) & ~(size_t)7;
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";

    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st_errf(err, errlen, path, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    int bad = st_write_all(fd, prefix, 8) || st_write_all(fd, hdr, hlen) ||
              st_write_all(fd, spaces, padded - hlen);
    for (int i = 0; !bad && i < w->n; i++)
        if (w->t[i].nbytes)
            bad = st_write_all(fd, w->t[i].data, w->t[i].nbytes);
    if (bad || fsync(fd) != 0) {
        st_errf(err, errlen, path, "writing %s failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) != 0) {
        st_errf(err, errlen, path, "closing %s failed: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st_errf(err, errlen, path, "renaming %s into place failed: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    st_fsync_dir(path);
    rc = 0;
out:
    free(hdr);
    free(tmp);
    return rc;
}
