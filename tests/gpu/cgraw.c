/*
 * cgraw.c: the cgraw fixture reader (format and contract in cgraw.h). libc only.
 *
 * The file is read whole into one buffer with 8 spare bytes. The header's fields are
 * NUL-terminated in place (names, dtypes and meta strings point into the buffer), and the data
 * block is shifted up by 0..7 bytes so that it starts 8-byte aligned; a tensor whose offset is
 * not a multiple of its element size is copied to its own allocation.
 */
#include "cgraw.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cgraw data is little-endian and used as is: big-endian hosts are not supported"
#endif

#define MAX_FIELDS (3 + CGRAW_MAX_DIMS + 2) /* name dtype ndim dims... offset length */

typedef struct {
    const char *key, *value; /* point into buf */
} CgMeta;

struct CgRaw {
    char *path;         /* copy of the path given to cgraw_open */
    unsigned char *buf; /* the file + 8 spare bytes; header strings and the data live here */
    CgTensor *tensors;  /* [count] */
    void **copies;      /* [count]: the realigned copy of tensor i, or NULL */
    int count;
    CgMeta *meta; /* [nmeta] */
    int nmeta;
};

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8},
};

#ifdef __GNUC__
__attribute__((format(printf, 3, 4)))
#endif
static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Up to 40 bytes of s[0..n) for a message, non-printable bytes as '?', "..." when cut. */
static const char *snippet(const char *s, size_t n, char out[48])
{
    size_t k = n < 40 ? n : 40, i;
    for (i = 0; i < k; i++) out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (k < n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
    return out;
}

/* Strict unsigned decimal: digits only, no sign, no leading zero (except "0"), no overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s || (s[0] == '0' && s[1])) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Reads the whole file into a malloc'd buffer with 8 spare bytes at the end. */
static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            set_err(err, errlen, "%s: out of memory reading the file", path);
            fclose(fp);
            return NULL;
        }
        n += fread(buf + n, 1, cap - 8 - n, fp);
        if (n < cap - 8) break; /* end of file, or an error (below) */
        unsigned char *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!bigger) free(buf);
        buf = bigger; /* NULL: reported at the top of the loop */
        cap *= 2;
    }
    if (ferror(fp)) {
        set_err(err, errlen, "%s: read error", path);
        free(buf);
        fclose(fp);
        return NULL;
    }
    fclose(fp);
    *len = n;
    return buf;
}

/* Splits line (NUL-terminated, no '\n') at single spaces in place. Returns the field count, or
 * -1 for an empty field (two spaces, or a space at either end), or -2 for more than max. */
static int split_fields(char *line, char **fields, int max)
{
    int nf = 0;
    char *p = line;
    for (;;) {
        char *sp = strchr(p, ' ');
        if (sp) *sp = '\0';
        if (!*p) return -1;
        if (nf == max) return -2;
        fields[nf++] = p;
        if (!sp) return nf;
        p = sp + 1;
    }
}

void cgraw_close(CgRaw *f)
{
    if (!f) return;
    if (f->copies)
        for (int i = 0; i < f->count; i++) free(f->copies[i]);
    free(f->copies);
    free(f->tensors);
    free(f->meta);
    free(f->buf);
    free(f->path);
    free(f);
}

/* Parses one tensor line (already split) into t, checking it against the running data end.
 * Returns 0 or -1 with a message. */
static int parse_tensor(const char *path, int line, char **fields, int nf, size_t *data_end,
                        CgTensor *t, char *err, size_t errlen)
{
    char s[48];
    const char *name = fields[0];
    if (nf < 5) {
        set_err(err, errlen,
                "%s: line %d: tensor line needs '<name> <dtype> <ndim> <dims...> <byte_offset> "
                "<byte_length>', found %d fields",
                path, line, nf);
        return -1;
    }
    t->name = name;
    t->line = line;
    t->dtype = NULL;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(fields[1], dtypes[i].name) == 0) {
            t->dtype = dtypes[i].name;
            t->elem_size = dtypes[i].size;
        }
    if (!t->dtype) {
        set_err(err, errlen, "%s: line %d: tensor '%s': unknown dtype '%s'", path, line, name,
                snippet(fields[1], strlen(fields[1]), s));
        return -1;
    }
    uint64_t ndim;
    if (parse_u64(fields[2], &ndim) || ndim > CGRAW_MAX_DIMS) {
        set_err(err, errlen, "%s: line %d: tensor '%s': ndim '%s' is not a number in 0..%d", path,
                line, name, snippet(fields[2], strlen(fields[2]), s), CGRAW_MAX_DIMS);
        return -1;
    }
    if (nf != 5 + (int)ndim) {
        set_err(err, errlen, "%s: line %d: tensor '%s': ndim %d needs %d fields, found %d", path,
                line, name, (int)ndim, 5 + (int)ndim, nf);
        return -1;
    }
    t->ndim = (int)ndim;
    memset(t->shape, 0, sizeof t->shape);
    size_t numel = 1;
    int overflow = 0, empty = 0;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t v;
        if (parse_u64(fields[3 + d], &v) || v > (uint64_t)INT64_MAX) {
            set_err(err, errlen,
                    "%s: line %d: tensor '%s': dimension %d '%s' is not an unsigned "
                    "decimal number",
                    path, line, name, d, snippet(fields[3 + d], strlen(fields[3 + d]), s));
            return -1;
        }
        t->shape[d] = (int64_t)v;
        if (v == 0)
            empty = 1;
        else if (v > SIZE_MAX || numel > SIZE_MAX / (size_t)v)
            overflow = 1;
        else
            numel *= (size_t)v;
    }
    if (empty) /* a zero dimension empties the tensor, whatever the other dimensions' product */
        numel = 0;
    else if (overflow || numel > SIZE_MAX / t->elem_size) {
        set_err(err, errlen, "%s: line %d: tensor '%s': shape too large", path, line, name);
        return -1;
    }
    t->numel = numel;
    t->nbytes = numel * t->elem_size;
    uint64_t off, len;
    const char *fo = fields[3 + t->ndim], *fl = fields[4 + t->ndim];
    if (parse_u64(fo, &off) || off > SIZE_MAX) {
        set_err(err, errlen,
                "%s: line %d: tensor '%s': byte_offset '%s' is not an unsigned "
                "decimal number",
                path, line, name, snippet(fo, strlen(fo), s));
        return -1;
    }
    if (parse_u64(fl, &len) || len > SIZE_MAX) {
        set_err(err, errlen,
                "%s: line %d: tensor '%s': byte_length '%s' is not an unsigned "
                "decimal number",
                path, line, name, snippet(fl, strlen(fl), s));
        return -1;
    }
    if ((size_t)len != t->nbytes) {
        set_err(err, errlen,
                "%s: line %d: tensor '%s': %s of %zu elements is %zu bytes, "
                "byte_length says %zu",
                path, line, name, t->dtype, t->numel, t->nbytes, (size_t)len);
        return -1;
    }
    if ((size_t)off != *data_end) {
        set_err(err, errlen,
                "%s: line %d: tensor '%s': byte_offset %zu, expected %zu (tensors "
                "must tile the data block in order)",
                path, line, name, (size_t)off, *data_end);
        return -1;
    }
    if (t->nbytes > SIZE_MAX - *data_end) {
        set_err(err, errlen, "%s: line %d: tensor '%s': data range overflows", path, line, name);
        return -1;
    }
    t->offset = (size_t)off;
    *data_end += t->nbytes;
    return 0;
}

CgRaw *cgraw_open(const char *path, char *err, size_t errlen)
{
    char s[48];
    size_t len;
    CgRaw *f = calloc(1, sizeof *f);
    if (!f || !(f->path = malloc(strlen(path) + 1))) {
        free(f);
        set_err(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    strcpy(f->path, path);
    if (!(f->buf = read_file(path, &len, err, errlen))) {
        cgraw_close(f);
        return NULL;
    }
    char *text = (char *)f->buf;
    size_t pos = 0;
    int line = 0;
    size_t data_end = 0;
    int expected = -1, meta_cap = 0;
    for (;;) {
        line++;
        char *nl = memchr(text + pos, '\n', len - pos);
        if (!nl) {
            if (line == 1)
                set_err(err, errlen, "%s: line 1: not a cgraw file (no 'CGRAW1 <count>' line)",
                        path);
            else
                set_err(err, errlen,
                        "%s: line %d: file ends inside the header, before the 'end' "
                        "line (truncated file?)",
                        path, line);
            goto fail;
        }
        char *ln = text + pos;
        size_t n = (size_t)(nl - ln);
        pos += n + 1;
        *nl = '\0';
        if (memchr(ln, '\0', n) || memchr(ln, '\r', n)) {
            set_err(err, errlen, "%s: line %d: NUL or carriage return in the header", path, line);
            goto fail;
        }
        char *fields[MAX_FIELDS];
        if (line == 1) {
            uint64_t count;
            if (strncmp(ln, "CGRAW1 ", 7) != 0 || parse_u64(ln + 7, &count)) {
                set_err(err, errlen,
                        "%s: line 1: not a cgraw file: expected 'CGRAW1 <count>', "
                        "found '%s'",
                        path, snippet(ln, n, s));
                goto fail;
            }
            if (count > CGRAW_MAX_TENSORS) {
                set_err(err, errlen, "%s: line 1: tensor count %s is above the limit %d", path,
                        ln + 7, CGRAW_MAX_TENSORS);
                goto fail;
            }
            expected = (int)count;
            f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
            f->copies = calloc(count ? count : 1, sizeof *f->copies);
            if (!f->tensors || !f->copies) {
                set_err(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            continue;
        }
        if (f->count < expected) { /* a tensor line */
            if (strcmp(ln, "end") == 0 || strncmp(ln, "meta ", 5) == 0) {
                set_err(err, errlen,
                        "%s: line %d: expected tensor line %d of the %d that line 1 "
                        "announces, found '%s'",
                        path, line, f->count + 1, expected, snippet(ln, n, s));
                goto fail;
            }
            int nf = split_fields(ln, fields, MAX_FIELDS);
            if (nf < 0) {
                if (nf == -1)
                    set_err(err, errlen,
                            "%s: line %d: empty field (two spaces, or a space at "
                            "the start or end of the line)",
                            path, line);
                else
                    set_err(err, errlen, "%s: line %d: more than %d fields", path, line,
                            MAX_FIELDS);
                goto fail;
            }
            CgTensor *t = &f->tensors[f->count];
            if (parse_tensor(path, line, fields, nf, &data_end, t, err, errlen)) goto fail;
            for (int i = 0; i < f->count; i++)
                if (strcmp(f->tensors[i].name, t->name) == 0) {
                    set_err(err, errlen, "%s: line %d: tensor '%s' already listed on line %d", path,
                            line, t->name, f->tensors[i].line);
                    goto fail;
                }
            f->count++;
            continue;
        }
        if (strcmp(ln, "end") == 0) break;
        if (strncmp(ln, "meta ", 5) != 0) {
            set_err(err, errlen,
                    "%s: line %d: expected a meta line or 'end' after the %d tensor "
                    "lines, found '%s'",
                    path, line, expected, snippet(ln, n, s));
            goto fail;
        }
        char *key = ln + 5, *sp = strchr(key, ' ');
        if (!sp || sp == key) {
            set_err(err, errlen, "%s: line %d: meta line needs 'meta <key> <value>', found '%s'",
                    path, line, snippet(ln, n, s));
            goto fail;
        }
        *sp = '\0';
        for (int i = 0; i < f->nmeta; i++)
            if (strcmp(f->meta[i].key, key) == 0) {
                set_err(err, errlen, "%s: line %d: meta key '%s' appears twice", path, line,
                        snippet(key, strlen(key), s));
                goto fail;
            }
        if (f->nmeta == meta_cap) {
            meta_cap = meta_cap ? 2 * meta_cap : 16;
            CgMeta *m = realloc(f->meta, (size_t)meta_cap * sizeof *m);
            if (!m) {
                set_err(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            f->meta = m;
        }
        f->meta[f->nmeta].key = key;
        f->meta[f->nmeta].value = sp + 1;
        f->nmeta++;
    }

    /* The data block: [pos, len) of the file. */
    size_t data_len = len - pos;
    if (data_end > data_len) {
        for (int i = 0; i < f->count; i++) {
            const CgTensor *t = &f->tensors[i];
            if (t->offset + t->nbytes > data_len) {
                set_err(err, errlen,
                        "%s: tensor '%s' (line %d) needs data bytes [%zu, %zu) but "
                        "the data block has only %zu (truncated file?)",
                        path, t->name, t->line, t->offset, t->offset + t->nbytes, data_len);
                goto fail;
            }
        }
    }
    if (data_end < data_len) {
        set_err(err, errlen,
                "%s: %zu bytes after the last tensor's data (the tensor lines cover "
                "%zu of the %zu-byte data block)",
                path, data_len - data_end, data_end, data_len);
        goto fail;
    }
    size_t shift = (8 - (size_t)((uintptr_t)(f->buf + pos) % 8)) % 8;
    memmove(f->buf + pos + shift, f->buf + pos, data_len); /* read_file left 8 spare bytes */
    const unsigned char *data = f->buf + pos + shift;
    for (int i = 0; i < f->count; i++) {
        CgTensor *t = &f->tensors[i];
        t->data = data + t->offset;
        if (t->offset % t->elem_size) {
            if (!(f->copies[i] = malloc(t->nbytes ? t->nbytes : 1))) {
                set_err(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            memcpy(f->copies[i], t->data, t->nbytes);
            t->data = f->copies[i];
        }
    }
    return f;

fail:
    cgraw_close(f);
    return NULL;
}

int cgraw_count(const CgRaw *f)
{
    return f->count;
}

const CgTensor *cgraw_tensor(const CgRaw *f, int i)
{
    return (i >= 0 && i < f->count) ? &f->tensors[i] : NULL;
}

const CgTensor *cgraw_find(const CgRaw *f, const char *name)
{
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *cgraw_meta(const CgRaw *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

const char *cgraw_path(const CgRaw *f)
{
    return f->path;
}

static const void *typed(const CgRaw *f, const char *name, const char *dtype, size_t expect_numel,
                         char *err, size_t errlen)
{
    const CgTensor *t = cgraw_find(f, name);
    if (!t) {
        set_err(err, errlen, "%s: no tensor '%s'", f->path, name);
        return NULL;
    }
    if (strcmp(t->dtype, dtype) != 0) {
        set_err(err, errlen, "%s: tensor '%s' is %s, expected %s", f->path, name, t->dtype, dtype);
        return NULL;
    }
    if (expect_numel && t->numel != expect_numel) {
        set_err(err, errlen, "%s: tensor '%s' has %zu elements, expected %zu", f->path, name,
                t->numel, expect_numel);
        return NULL;
    }
    return t->data;
}

const float *cgraw_f32(const CgRaw *f, const char *name, size_t expect_numel, char *err,
                       size_t errlen)
{
    return typed(f, name, "F32", expect_numel, err, errlen);
}

const int32_t *cgraw_i32(const CgRaw *f, const char *name, size_t expect_numel, char *err,
                         size_t errlen)
{
    return typed(f, name, "I32", expect_numel, err, errlen);
}
