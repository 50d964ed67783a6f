/*
 * jsonutil.h: small helpers over jansson shared by every module that reads JSON.
 */
#ifndef CHUNKGRPO_JSONUTIL_H
#define CHUNKGRPO_JSONUTIL_H

#include <jansson.h>

/* The JSON type of v as a word for error messages: "object", "array", "string", "integer",
 * "real", "boolean" or "null". */
const char *json_type_name(const json_t *v);

#endif
