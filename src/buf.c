/* ts_buf implementation (C core). */
#include "ts_buf.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void ts_buf_init(ts_buf *b) { b->data = NULL; b->len = b->cap = 0; }

void ts_buf_free(ts_buf *b) { free(b->data); ts_buf_init(b); }

void ts_buf_reserve(ts_buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return;
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) { fputs("tstats: out of memory\n", stderr); abort(); }
    b->data = p;
    b->cap = cap;
}

void ts_buf_shrink(ts_buf *b, size_t keep_cap) {
    if (b->cap <= keep_cap || b->len >= keep_cap) return;
    char *p = realloc(b->data, keep_cap);
    if (p) { b->data = p; b->cap = keep_cap; }
}

void ts_buf_printf(ts_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0) {
        ts_buf_reserve(b, (size_t)n + 1);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}
