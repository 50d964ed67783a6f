/*
 * errbuf.h: the engine's one way to report a problem: a printf-style message into a
 * caller-supplied buffer (err may be NULL when errlen is 0).
 */
#ifndef CHUNKGRPO_ERRBUF_H
#define CHUNKGRPO_ERRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4))) static inline void errbuf_printf(char *err, size_t errlen,
                                                                       const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

#endif
