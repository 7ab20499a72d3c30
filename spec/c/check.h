/* The one check macro set of the C tests (C test side): a failed check
 * prints file:line, the condition and an optional printf-style note, and is
 * counted; check_report prints the closing line and gives the exit code. */
#ifndef TS_SPEC_CHECK_H
#define TS_SPEC_CHECK_H
#include <stdarg.h>
#include <stdio.h>

static int check_count, check_failures;

static inline void check_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

/* CHECK(cond) or CHECK(cond, "format", args...) */
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        check_count++;                                                     \
        if (!(cond)) {                                                     \
            check_failures++;                                              \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);         \
            check_note("" __VA_ARGS__);                                    \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)

/* A failure found without a condition to show (the caller counted the check). */
#define FAIL(...)                                                          \
    do {                                                                   \
        check_failures++;                                                  \
        printf("FAIL %s:%d: ", __FILE__, __LINE__);                        \
        check_note("" __VA_ARGS__);                                        \
        printf("\n");                                                      \
    } while (0)

#define CHECK_EQ_U(a, b)                                                   \
    do {                                                                   \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b); \
        CHECK(a_ == b_, "%s == %s (%llu vs %llu)", #a, #b, a_, b_);        \
    } while (0)

static inline int check_report(const char *name) {
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
