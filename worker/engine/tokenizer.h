/*
 * tokenizer.h: the word-level tokenizer of spec/model.md.
 *
 * Lower-case, split on anything that is not an ASCII letter or digit, look each word up; unknown
 * words map to UNK (1); truncate or pad with PAD (0) to the model's text length. The vocabulary
 * travels inside checkpoints as the words joined by '\n' (word i = token id i, "<pad>" = 0,
 * "<unk>" = 1).
 */
#ifndef CHUNKGRPO_TOKENIZER_H
#define CHUNKGRPO_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_PAD 0
#define TOKEN_UNK 1

typedef struct {
    int size;
    char **words;     /* [size]; owned */
    int *slots;       /* open-addressing hash table of word ids, -1 = empty; owned */
    size_t num_slots; /* power of two */
} Vocab;

/* Builds a vocabulary from newline-joined words. Checks that word 0 is "<pad>", word 1 is
 * "<unk>", and that no word is empty, repeated, or holds characters the tokenizer would split on.
 * Returns 0, or -1 with the problem (and the line) in err. */
int vocab_from_text(Vocab *v, const char *text, char *err, size_t errlen);

/* Builds a vocabulary from an array of words (copied), with the same checks. */
int vocab_from_words(Vocab *v, const char *const *words, int n, char *err, size_t errlen);

/* Newline-joined words; malloc'd, the caller frees. NULL when memory runs out. */
char *vocab_to_text(const Vocab *v);

void vocab_free(Vocab *v);

/* Token id of a word (already lower-case), or TOKEN_UNK. */
int vocab_lookup(const Vocab *v, const char *word, size_t len);

/* Tokenizes text into exactly T ids (PAD-filled). Returns the number of words found before
 * truncation. */
int tokenize(const Vocab *v, const char *text, int T, int32_t *out);

#endif
