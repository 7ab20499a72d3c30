/* pg_thread.c: host name resolution and cancel requests for libpq off the daemon's loop
 * (C core, pthreads). getaddrinfo and PQcancel block for as long as the network makes them;
 * each runs on a detached thread of its own and wakes the loop through an eventfd. A job
 * the loop gave up on (a resolver past connect_timeout) frees itself when its thread ends. */
#include "ts_pg_thread.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "ts_clock.h"
#include "ts_counter.h"
#include "ts_log.h"

enum { MAX_ADDRS_PER_HOST = 16 };

static int start_detached(void *(*fn)(void *), void *arg) {
    pthread_attr_t a;
    pthread_t t;
    if (pthread_attr_init(&a) != 0) return -1;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &a, fn, arg);
    pthread_attr_destroy(&a);
    return rc == 0 ? 0 : -1;
}

/* ---- resolving ---- */

typedef struct strbuf { char *s; size_t n, cap; } strbuf;

static int sb_add(strbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) return -1;
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

/* Appends item to a comma-separated list (the first item: no comma). */
static int sb_item(strbuf *b, int first, const char *s, size_t n) {
    if (!first && sb_add(b, ",", 1) != 0) return -1;
    return sb_add(b, s ? s : "", s ? n : 0);
}

struct ts_pg_resolve {
    pthread_mutex_t mu;
    int refs, done, fd;
    char *hosts, *ports;                 /* the input */
    strbuf out_host, out_addr, out_port; /* the result */
    char err[512];
};

/* The item number i of a comma-separated list (its start and length); -1 if none. */
static int nth_item(const char *list, int i, const char **s, size_t *n) {
    const char *p = list;
    for (int k = 0; k < i; k++) {
        p = strchr(p, ',');
        if (!p) return -1;
        p++;
    }
    *s = p;
    *n = strcspn(p, ",");
    return 0;
}

static int count_items(const char *list) {
    int n = 1;
    for (const char *p = list; *p; p++) n += *p == ',';
    return n;
}

static void resolve_run(ts_pg_resolve *r) {
    int nhosts = count_items(r->hosts);
    int nports = r->ports && *r->ports ? count_items(r->ports) : 0;
    int per_host_port = nports > 1 && nports == nhosts, items = 0, oom = 0;
    for (int i = 0; i < nhosts && !oom; i++) {
        const char *h = "", *pt = NULL;
        size_t hn = 0, ptn = 0;
        nth_item(r->hosts, i, &h, &hn);
        if (per_host_port) nth_item(r->ports, i, &pt, &ptn);
        char name[256];
        if (hn == 0 || h[0] == '/' || h[0] == '@' || hn >= sizeof name) {
            /* a socket directory (or a name no resolver takes): libpq's as it is */
            oom |= sb_item(&r->out_host, items == 0, h, hn) | sb_item(&r->out_addr, items == 0, "", 0) |
                   (per_host_port ? sb_item(&r->out_port, items == 0, pt, ptn) : 0);
            items++;
            continue;
        }
        memcpy(name, h, hn);
        name[hn] = '\0';
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int g = getaddrinfo(name, NULL, &hints, &res);
        if (g != 0) {
            /* libpq goes on to the next host: so do we, and say why if none is left */
            if (!r->err[0])
                snprintf(r->err, sizeof r->err, "could not translate host name \"%s\" to address: %s", name,
                         g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
            continue;
        }
        int k = 0;
        for (struct addrinfo *a = res; a && k < MAX_ADDRS_PER_HOST && !oom; a = a->ai_next) {
            char num[NI_MAXHOST];
            if (getnameinfo(a->ai_addr, a->ai_addrlen, num, sizeof num, NULL, 0, NI_NUMERICHOST) != 0) continue;
            oom |= sb_item(&r->out_host, items == 0, h, hn) | sb_item(&r->out_addr, items == 0, num, strlen(num)) |
                   (per_host_port ? sb_item(&r->out_port, items == 0, pt, ptn) : 0);
            items++;
            k++;
        }
        freeaddrinfo(res);
    }
    if (oom) snprintf(r->err, sizeof r->err, "out of memory");
    else if (items > 0) r->err[0] = '\0';
    else if (!r->err[0]) snprintf(r->err, sizeof r->err, "no address for \"%s\"", r->hosts);
}

static void resolve_unref(ts_pg_resolve *r) {
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left) return;
    close(r->fd);
    pthread_mutex_destroy(&r->mu);
    free(r->hosts);
    free(r->ports);
    free(r->out_host.s);
    free(r->out_addr.s);
    free(r->out_port.s);
    free(r);
}

static void *resolve_thread(void *arg) {
    ts_pg_resolve *r = arg;
    resolve_run(r);
    pthread_mutex_lock(&r->mu);
    r->done = 1;
    pthread_mutex_unlock(&r->mu);
    uint64_t one = 1;
    if (write(r->fd, &one, sizeof one) < 0) { /* an eventfd does not refuse a first write */ }
    resolve_unref(r);
    return NULL;
}

ts_pg_resolve *ts_pg_resolve_start(const char *hosts, const char *ports, int *fd) {
    ts_pg_resolve *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->hosts = strdup(hosts);
    r->ports = ports ? strdup(ports) : NULL;
    if (r->fd < 0 || !r->hosts || (ports && !r->ports)) goto fail;
    pthread_mutex_init(&r->mu, NULL);
    r->refs = 2;
    if (start_detached(resolve_thread, r) != 0) {
        pthread_mutex_destroy(&r->mu);
        goto fail;
    }
    *fd = r->fd;
    return r;
fail:
    if (r->fd >= 0) close(r->fd);
    free(r->hosts);
    free(r->ports);
    free(r);
    return NULL;
}

int ts_pg_resolve_done(ts_pg_resolve *r) {
    uint64_t v;
    if (read(r->fd, &v, sizeof v) < 0) { /* EAGAIN: not signalled yet */ }
    pthread_mutex_lock(&r->mu);
    int d = r->done;
    pthread_mutex_unlock(&r->mu);
    return d;
}

const char *ts_pg_resolve_result(ts_pg_resolve *r, const char **host, const char **hostaddr, const char **port) {
    if (r->err[0]) return r->err;
    *host = r->out_host.s;
    *hostaddr = r->out_addr.s;
    *port = r->out_port.s;
    return NULL;
}

void ts_pg_resolve_release(ts_pg_resolve *r) {
    if (r) resolve_unref(r);
}

/* ---- cancel requests ---- */

typedef struct cancel_job {
    PGcancel *cn;
    int pid, ok;
    char why[64], err[256];
    struct cancel_job *next;
} cancel_job;

static pthread_mutex_t c_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c_cv = PTHREAD_COND_INITIALIZER;
static int c_pending, c_fd = -1;
static cancel_job *c_over;    /* sent (or failed), not logged yet */
static ts_loop *c_loop;       /* the loop watching c_fd */

/* Logs and frees the cancels that are over (the loop's thread: the log is not thread-safe). */
static void reap(void) {
    pthread_mutex_lock(&c_mu);
    cancel_job *j = c_over;
    c_over = NULL;
    pthread_mutex_unlock(&c_mu);
    while (j) {
        cancel_job *next = j->next;
        if (j->ok) ts_info("pg: %s: the server has the cancel request for backend %d", j->why, j->pid);
        else ts_warn("pg: %s: the cancel request for backend %d failed: %.*s", j->why, j->pid,
                     (int)strcspn(j->err, "\n"), j->err);
        free(j);
        j = next;
    }
}

static void on_cancel_fd(void *ud) {
    (void)ud;
    uint64_t v;
    if (read(c_fd, &v, sizeof v) < 0) { /* EAGAIN: another turn read it */ }
    reap();
}

static void *cancel_thread(void *arg) {
    cancel_job *j = arg;
    j->ok = PQcancel(j->cn, j->err, sizeof j->err);
    PQfreeCancel(j->cn);
    j->cn = NULL;
    pthread_mutex_lock(&c_mu);
    j->next = c_over;
    c_over = j;
    c_pending--;
    pthread_cond_broadcast(&c_cv);
    uint64_t one = 1;
    if (c_fd >= 0 && write(c_fd, &one, sizeof one) < 0) { /* the counter cannot overflow here */ }
    pthread_mutex_unlock(&c_mu);
    return NULL;
}

int ts_pg_cancel_start(PGconn *c, ts_loop *loop, const char *why) {
    cancel_job *j = calloc(1, sizeof *j);
    if (!j || !(j->cn = PQgetCancel(c))) {
        free(j);
        ts_warn("pg: %s: cannot cancel the statement (no cancel key)", why);
        return -1;
    }
    j->pid = PQbackendPID(c);
    snprintf(j->why, sizeof j->why, "%s", why);
    pthread_mutex_lock(&c_mu);
    if (c_fd < 0) c_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop && c_fd >= 0 && c_loop != loop) {
        if (c_loop) ts_loop_watch_fd(c_loop, c_fd, NULL, NULL);
        ts_loop_watch_fd(loop, c_fd, on_cancel_fd, NULL);
        c_loop = loop;
    }
    c_pending++;
    pthread_mutex_unlock(&c_mu);
    if (start_detached(cancel_thread, j) != 0) {
        pthread_mutex_lock(&c_mu);
        c_pending--;
        pthread_mutex_unlock(&c_mu);
        PQfreeCancel(j->cn);
        free(j);
        ts_warn("pg: %s: cannot cancel the statement (no thread)", why);
        return -1;
    }
    ts_counter_add(ts_counter_get("pg_cancels"), 1);
    return 0;
}

int ts_pg_cancel_finish(int64_t deadline_ms) {
    pthread_mutex_lock(&c_mu);
    while (c_pending > 0) {
        int64_t left = deadline_ms - ts_mono_ms();
        if (left <= 0) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&c_cv, &c_mu, &ts);
    }
    int left = c_pending;
    if (c_loop) ts_loop_watch_fd(c_loop, c_fd, NULL, NULL);
    c_loop = NULL;
    pthread_mutex_unlock(&c_mu);
    reap();
    return left;
}
