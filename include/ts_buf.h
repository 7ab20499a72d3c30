/* ts_buf: growable byte buffer used by every C module (C core).
 * Allocation failure aborts: the writer bounds memory itself, so a failed
 * realloc here means the process is already beyond its budget. */
#ifndef TS_BUF_H
#define TS_BUF_H
#include <stddef.h>
#include <string.h>

typedef struct ts_buf {
    char *data;
    size_t len;
    size_t cap;
} ts_buf;

void ts_buf_init(ts_buf *b);
void ts_buf_free(ts_buf *b);
void ts_buf_reserve(ts_buf *b, size_t extra);
void ts_buf_shrink(ts_buf *b, size_t keep_cap); /* drop capacity above keep_cap */
static inline void ts_buf_reset(ts_buf *b) { b->len = 0; }
static inline void ts_buf_add(ts_buf *b, const void *p, size_t n) {
    if (b->cap - b->len < n + 1) ts_buf_reserve(b, n + 1);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}
static inline void ts_buf_addc(ts_buf *b, char c) {
    if (b->cap - b->len < 2) ts_buf_reserve(b, 2);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}
static inline void ts_buf_adds(ts_buf *b, const char *s) { ts_buf_add(b, s, strlen(s)); }
void ts_buf_printf(ts_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
