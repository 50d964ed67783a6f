/*
 * sha256.h: SHA-256 (FIPS 180-4), incremental and one-shot. The server stores tokens as the
 * hash of their secret and gives every artifact its digest (the ETag).
 *
 * A Sha256 is plain data: no allocation, no cleanup; one context per thread.
 */
#ifndef CHUNKGRPO_SHA256_H
#define CHUNKGRPO_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];   /* the chaining state */
    uint64_t len;    /* bytes hashed so far */
    uint8_t buf[64]; /* a partial block */
    size_t used;     /* bytes in buf */
} Sha256;

void sha256_init(Sha256 *c);
void sha256_update(Sha256 *c, const void *data, size_t n);
/* Writes the digest; c must be initialised again before another use. */
void sha256_final(Sha256 *c, uint8_t out[32]);
void sha256(const void *data, size_t n, uint8_t out[32]);
/* The digest as 64 lowercase hex digits and a NUL. */
void sha256_hex(const uint8_t d[32], char out[65]);

#endif
