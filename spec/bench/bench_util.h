/* What the benchmark programs share (C, benchmark side; header only, each
 * program is one source): clocks, another process's CPU time from /proc, and
 * the line-protocol input "DB,RP,FILE" that bench_spool_fill and
 * bench_influx_load repeat poll after poll with moved time stamps. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "ts_buf.h"

static inline double bench_now_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* utime + stime of process pid in seconds, -1 if unreadable */
static inline double bench_proc_cpu_s(long pid) {
    if (pid <= 0) return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after the comm: state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Length of s[0..n) up to the first unescaped one of `stops` (a backslash
 * takes the next character along): ", " ends a line's measurement. */
static inline size_t bench_lp_upto(const char *s, size_t n, const char *stops) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\') i++;
        else if (s[i] != '\0' && strchr(stops, s[i])) return i;   /* strchr finds the NUL too */
    }
    return n;
}

/* One poll's line protocol, split so its time stamps can be moved. */
typedef struct bench_lp_input {
    char db[128], rp[128];
    ts_buf text;                 /* the lines, '\n'-terminated */
    size_t *tpos;                /* per line: offset of its time stamp */
    size_t *lend;                /* per line: offset just after its '\n' */
    int64_t *t;                  /* per line: its time stamp (ms) */
    size_t n;
} bench_lp_input;

/* DB,RP,FILE: every line of FILE with a trailing integer time stamp ('#'
 * lines and empty ones skipped). A malformed spec calls usage(); an unreadable
 * file, a line without a time stamp or no lines at all end the program with a
 * message naming prog. */
static inline void bench_lp_input_load(bench_lp_input *in, const char *spec, const char *prog, void (*usage)(void)) {
    const char *c1 = strchr(spec, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
    if (!c1 || !c2 || (size_t)(c1 - spec) >= sizeof in->db || (size_t)(c2 - c1 - 1) >= sizeof in->rp) usage();
    memset(in, 0, sizeof *in);
    snprintf(in->db, sizeof in->db, "%.*s", (int)(c1 - spec), spec);
    snprintf(in->rp, sizeof in->rp, "%.*s", (int)(c2 - c1 - 1), c1 + 1);
    FILE *f = fopen(c2 + 1, "r");
    if (!f) { fprintf(stderr, "%s: %s: %s\n", prog, c2 + 1, strerror(errno)); exit(1); }
    ts_buf_init(&in->text);
    size_t cap = 0, lcap = 0;
    char *line = NULL;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        if (line[len - 1] == '\n') line[--len] = '\0';
        if (len == 0 || line[0] == '#') continue;
        char *sp = strrchr(line, ' '), *end;
        long long t = sp ? strtoll(sp + 1, &end, 10) : 0;
        if (!sp || *end != '\0' || t <= 0) {
            fprintf(stderr, "%s: %s: a line without a time stamp: %.80s\n", prog, c2 + 1, line);
            exit(1);
        }
        if (in->n == cap) {
            cap = cap ? cap * 2 : 4096;
            in->tpos = realloc(in->tpos, cap * sizeof *in->tpos);
            in->lend = realloc(in->lend, cap * sizeof *in->lend);
            in->t = realloc(in->t, cap * sizeof *in->t);
            if (!in->tpos || !in->lend || !in->t) abort();
        }
        in->tpos[in->n] = in->text.len + (size_t)(sp + 1 - line);
        in->t[in->n] = t;
        ts_buf_add(&in->text, line, (size_t)len);
        ts_buf_add(&in->text, "\n", 1);
        in->lend[in->n] = in->text.len;
        in->n++;
    }
    free(line);
    fclose(f);
    if (in->n == 0) { fprintf(stderr, "%s: %s: no lines\n", prog, c2 + 1); exit(1); }
}

static inline void bench_lp_input_free(bench_lp_input *in) {
    ts_buf_free(&in->text);
    free(in->tpos);
    free(in->lend);
    free(in->t);
}
#endif
