/*
 * test.h: the project's tiny unit-test harness (no dependencies, no fork, so ASan, valgrind
 * and gdb behave).
 *
 * A test file defines `static void test_xxx(void)` functions and a main that calls
 * TEST_RUN(test_xxx) for each, then returns test_summary("suite"). A failed CHECK records the
 * failure with file:line and lets the test go on; TEST_SKIP("why") marks the test skipped and
 * returns from it. test_summary prints the line `suite: N passed, N failed, N skipped` that
 * tests/run.sh adds up, and the exit status is non-zero when anything failed.
 */
#ifndef CHUNKGRPO_TEST_H
#define CHUNKGRPO_TEST_H

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int test_passed, test_failed, test_skipped;
static int test_case_failed, test_case_skipped;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            test_case_failed = 1;                                                     \
        }                                                                             \
    } while (0)

/* CHECK with a printf-style explanation printed on failure. */
#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            test_case_failed = 1;                                                     \
        }                                                                             \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, atol, rtol)                                                      \
    do {                                                                                   \
        double ca_ = (double)(a), cb_ = (double)(b);                                       \
        if (!(fabs(ca_ - cb_) <= (atol) + (rtol) * fabs(cb_))) {                           \
            fprintf(stderr, "  %s:%d: CHECK_CLOSE failed: %s = %.9g, %s = %.9g\n",        \
                    __FILE__, __LINE__, #a, ca_, #b, cb_);                                 \
            test_case_failed = 1;                                                          \
        }                                                                                  \
    } while (0)

#define TEST_SKIP(...)                                  \
    do {                                                \
        fprintf(stderr, "  skipped: ");                 \
        fprintf(stderr, __VA_ARGS__);                   \
        fputc('\n', stderr);                            \
        test_case_skipped = 1;                          \
        return;                                         \
    } while (0)

#define TEST_RUN(fn) test_run_one(#fn, fn)

static inline void test_run_one(const char *name, void (*fn)(void))
{
    test_case_failed = 0;
    test_case_skipped = 0;
    fn();
    if (test_case_failed) {
        test_failed++;
        fprintf(stderr, "FAIL %s\n", name);
    } else if (test_case_skipped) {
        test_skipped++;
        fprintf(stderr, "SKIP %s\n", name);
    } else {
        test_passed++;
        fprintf(stderr, "ok   %s\n", name);
    }
}

static inline int test_summary(const char *suite)
{
    printf("%s: %d passed, %d failed, %d skipped\n", suite, test_passed, test_failed, test_skipped);
    fflush(stdout);
    return test_failed ? 1 : 0;
}

/* The committed PyTorch fixtures, and the bound the engine must meet against them. */
#define FIXTURES "tests/reference/fixtures/"
#define TOLERANCE 1e-4

/* The project's relative error of a tensor against a reference: max |a - ref| / max |ref|
 * (the absolute error when the reference is all zero), in double. */
static inline double test_rel_err(const float *a, const float *ref, size_t n)
{
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - ref[i]));
        scale = fmax(scale, fabs((double)ref[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

/* A private temporary folder for a suite's files: create it once in main, remove it (and its
 * files and empty subfolders) at the end. test_tmp_path returns one of four rotating buffers. */
static char test_tmpdir[64];

static inline void test_tmpdir_create(void)
{
    strcpy(test_tmpdir, "/tmp/chunkgrpo-test-XXXXXX");
    if (!mkdtemp(test_tmpdir)) {
        perror("mkdtemp");
        exit(2);
    }
}

static inline void test_tmpdir_remove(void)
{
    DIR *d = opendir(test_tmpdir);
    if (d) {
        struct dirent *de;
        char p[512];
        while ((de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
            snprintf(p, sizeof p, "%s/%s", test_tmpdir, de->d_name);
            if (rmdir(p) != 0) unlink(p);
        }
        closedir(d);
    }
    rmdir(test_tmpdir);
}

static inline const char *test_tmp_path(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir, name);
    return buf[k];
}

#endif
