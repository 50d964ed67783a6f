/*
 * tokenizer.c: the vocabulary (an open-addressing hash table of words) and the tokenizer of
 * spec/model.md. See tokenizer.h.
 */
#include "tokenizer.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"

static uint64_t hash_word(const char *w, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)w[i]) * 1099511628211ull;
    return h;
}

static int is_word_char(int ch)
{
    return isascii(ch) && isalnum(ch);
}

void vocab_free(Vocab *v)
{
    if (!v) return;
    for (int i = 0; i < v->size; i++) free(v->words[i]);
    free(v->words);
    free(v->slots);
    memset(v, 0, sizeof *v);
}

int vocab_lookup(const Vocab *v, const char *word, size_t len)
{
    size_t mask = v->num_slots - 1;
    for (size_t s = hash_word(word, len) & mask;; s = (s + 1) & mask) {
        int id = v->slots[s];
        if (id < 0) return TOKEN_UNK;
        if (strlen(v->words[id]) == len && memcmp(v->words[id], word, len) == 0) return id;
    }
}

/* Checks a word and inserts it as id `id`. Special tokens are exempt from the character rule. */
static int vocab_insert(Vocab *v, int id, const char *word, char *err, size_t errlen)
{
    size_t len = strlen(word);
    if (len == 0) {
        errbuf_printf(err, errlen, "vocab: word %d is empty", id);
        return -1;
    }
    if (id >= 2) {
        for (size_t i = 0; i < len; i++) {
            if (!is_word_char((unsigned char)word[i]) || isupper((unsigned char)word[i])) {
                errbuf_printf(err, errlen,
                              "vocab: word %d \"%s\" has a character the tokenizer never produces "
                              "(only lower-case letters and digits)",
                              id, word);
                return -1;
            }
        }
    }
    size_t mask = v->num_slots - 1;
    size_t s = hash_word(word, len) & mask;
    for (; v->slots[s] >= 0; s = (s + 1) & mask) {
        if (strcmp(v->words[v->slots[s]], word) == 0) {
            errbuf_printf(err, errlen, "vocab: word %d \"%s\" repeats word %d", id, word,
                          v->slots[s]);
            return -1;
        }
    }
    v->slots[s] = id;
    return 0;
}

int vocab_from_words(Vocab *v, const char *const *words, int n, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    if (n < 2 || strcmp(words[0], "<pad>") != 0 || strcmp(words[1], "<unk>") != 0) {
        errbuf_printf(err, errlen, "vocab: must start with \"<pad>\" (id 0) and \"<unk>\" (id 1)");
        return -1;
    }
    v->num_slots = 16;
    while (v->num_slots < 2 * (size_t)n) v->num_slots *= 2;
    v->words = calloc((size_t)n, sizeof *v->words);
    v->slots = malloc(v->num_slots * sizeof *v->slots);
    if (!v->words || !v->slots) goto oom;
    memset(v->slots, 0xff, v->num_slots * sizeof *v->slots);
    for (int i = 0; i < n; i++) {
        v->words[i] = strdup(words[i]);
        if (!v->words[i]) goto oom;
        v->size = i + 1;
        if (vocab_insert(v, i, words[i], err, errlen) != 0) {
            vocab_free(v);
            return -1;
        }
    }
    return 0;
oom:
    vocab_free(v);
    errbuf_printf(err, errlen, "vocab: out of memory");
    return -1;
}

int vocab_from_text(Vocab *v, const char *text, char *err, size_t errlen)
{
    char *copy = strdup(text);
    int n = 1;
    for (const char *c = text; *c; c++) n += *c == '\n';
    const char **words = malloc((size_t)n * sizeof *words);
    if (!copy || !words) {
        free(copy);
        free(words);
        errbuf_printf(err, errlen, "vocab: out of memory");
        return -1;
    }
    int k = 0;
    for (char *line = copy, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        words[k++] = line;
    }
    int rc = vocab_from_words(v, words, k, err, errlen);
    free(words);
    free(copy);
    return rc;
}

char *vocab_to_text(const Vocab *v)
{
    size_t len = 1;
    for (int i = 0; i < v->size; i++) len += strlen(v->words[i]) + 1;
    char *out = malloc(len), *p = out;
    if (!out) return NULL;
    for (int i = 0; i < v->size; i++) {
        size_t wl = strlen(v->words[i]);
        memcpy(p, v->words[i], wl);
        p += wl;
        if (i + 1 < v->size) *p++ = '\n';
    }
    *p = '\0';
    return out;
}

int tokenize(const Vocab *v, const char *text, int T, int32_t *out)
{
    char word[64];
    int count = 0;
    for (int i = 0; i < T; i++) out[i] = TOKEN_PAD;
    for (const char *c = text; *c;) {
        if (!is_word_char((unsigned char)*c)) {
            c++;
            continue;
        }
        size_t len = 0;
        int too_long = 0;
        for (; is_word_char((unsigned char)*c); c++) {
            if (len < sizeof word)
                word[len++] = (char)tolower((unsigned char)*c);
            else
                too_long = 1;
        }
        if (count < T) out[count] = too_long ? TOKEN_UNK : vocab_lookup(v, word, len);
        count++;
    }
    return count;
}
