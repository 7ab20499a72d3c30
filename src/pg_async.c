/* pg_async.c: libpq's non-blocking connect and statements on the daemon's loop
 * (C core, libpq). Nothing here blocks: the socket's readiness and a deadline
 * wake the coroutine, which calls ts_pg_wait_step; src/pg.c keeps the policy
 * (reconnects, transactions, errors as Lua sees them). */
#include "ts_pg_async.h"

#include <lauxlib.h>
#include <string.h>
#include "ts_clock.h"

enum { K_CONNECT = 1, K_RESET, K_QUERY, K_RESOLVE };

static ts_pg_wait *attached;   /* one loop per process: the daemon's */

static void on_fd(void *ud) {
    ts_pg_wait *w = ud;
    w->ready = 1;
    *w->wake = 1;
}

static void on_timer(void *ud) {
    ts_pg_wait *w = ud;
    w->timer = 0;
    w->timed_out = 1;
    *w->wake = 1;
}

static void unwatch(ts_pg_wait *w) {
    if (w->fd >= 0 && w->attached) ts_loop_watch_fd(w->loop, w->fd, NULL, NULL);
    w->fd = -1;
}

static void detach(ts_pg_wait *w) {
    unwatch(w);
    if (w->attached) {
        if (w->timer > 0) ts_loop_timer_cancel(w->loop, w->timer);
        for (ts_pg_wait **pp = &attached; *pp; pp = &(*pp)->next)
            if (*pp == w) { *pp = w->next; break; }
    }
    w->timer = 0;
    w->attached = 0;
}

/* Waits for the socket (again: libpq may have changed it while connecting). */
static void watch(ts_pg_wait *w, int writable) {
    int fd = PQsocket(w->c);
    if (fd != w->fd) unwatch(w);
    w->fd = fd;
    if (fd >= 0) ts_loop_watch_fd_for(w->loop, fd, writable, on_fd, w);
}

static void drop_job(ts_pg_wait *w) {
    ts_pg_resolve_release(w->job);
    w->job = NULL;
}

static void attach(ts_pg_wait *w, PGconn *c, int kind, int64_t timeout_ms) {
    detach(w);
    drop_job(w);
    if (w->res) PQclear(w->res);
    w->res = NULL;
    w->c = c;
    w->kind = kind;
    w->timed_out = 0;
    w->ready = 1;              /* the first step tries at once */
    w->attached = 1;
    w->next = attached;
    attached = w;
    if (timeout_ms > 0) w->timer = ts_loop_timer(w->loop, ts_mono_ms() + timeout_ms, on_timer, w);
}

static int wait_gc(lua_State *L) {
    ts_pg_wait *w = lua_touserdata(L, 1);
    detach(w);
    drop_job(w);
    if (w->res) PQclear(w->res);
    w->res = NULL;
    return 0;
}

ts_pg_wait *ts_pg_wait_push(lua_State *L, ts_loop *loop, int *wake) {
    ts_pg_wait *w = lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->loop = loop;
    w->wake = wake;
    if (luaL_newmetatable(L, "tstats.pg.wait")) {
        lua_pushcfunction(L, wait_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return w;
}

int ts_pg_wait_connect(ts_pg_wait *w, PGconn *c, int reset, int64_t timeout_ms) {
    if (reset && !PQresetStart(c)) return -1;
    if (PQstatus(c) == CONNECTION_BAD) return -1;
    attach(w, c, reset ? K_RESET : K_CONNECT, timeout_ms);
    /* libpq: before the first PQconnectPoll, wait as if it had said "writing" */
    w->ready = 0;
    watch(w, 1);
    return 0;
}

int ts_pg_wait_resolve(ts_pg_wait *w, const char *hosts, const char *ports, int64_t timeout_ms) {
    int fd = -1;
    ts_pg_resolve *r = ts_pg_resolve_start(hosts, ports, &fd);
    if (!r) return -1;
    attach(w, NULL, K_RESOLVE, timeout_ms);
    w->job = r;
    w->ready = 0;
    w->fd = fd;
    ts_loop_watch_fd_for(w->loop, fd, 0, on_fd, w);
    return 0;
}

ts_pg_resolve *ts_pg_wait_resolved(ts_pg_wait *w) { return w->job; }

int ts_pg_wait_query(ts_pg_wait *w, PGconn *c, const char *sql, int n, const char *const *vals, int64_t timeout_ms) {
    /* a connection used blocking before (PQexecParams ignores this mode) */
    if (PQsetnonblocking(c, 1) != 0) return -1;
    if (!PQsendQueryParams(c, sql, n, NULL, vals, NULL, NULL, 0)) return -1;
    attach(w, c, K_QUERY, timeout_ms);
    w->flushing = 1;
    return 0;
}

PGresult *ts_pg_wait_take(ts_pg_wait *w) {
    PGresult *r = w->res;
    w->res = NULL;
    return r;
}

static int finish(ts_pg_wait *w, int outcome) {
    detach(w);
    return outcome;
}

static int step_query(ts_pg_wait *w) {
    if (w->flushing) {
        int f = PQflush(w->c);
        if (f < 0) return finish(w, TS_PGW_FAILED);
        if (f > 0) {
            /* libpq reads as it flushes (the server may answer early): either readiness will do */
            if (!PQconsumeInput(w->c)) return finish(w, TS_PGW_FAILED);
            watch(w, 1);
            return TS_PGW_AGAIN;
        }
        w->flushing = 0;
    }
    if (!PQconsumeInput(w->c)) {
        /* the connection broke: libpq may still hold an error result */
        PGresult *r;
        while ((r = PQgetResult(w->c))) {
            if (w->res) PQclear(w->res);
            w->res = r;
            if (PQstatus(w->c) == CONNECTION_BAD) break;
        }
        return finish(w, TS_PGW_FAILED);
    }
    while (!PQisBusy(w->c)) {
        PGresult *r = PQgetResult(w->c);
        if (!r) return finish(w, TS_PGW_DONE);
        ExecStatusType st = PQresultStatus(r);
        int err = st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
        if (!w->res || err || PQresultStatus(w->res) != PGRES_FATAL_ERROR) {
            if (w->res) PQclear(w->res);
            w->res = r;
        } else {
            PQclear(r);
        }
    }
    watch(w, 0);
    return TS_PGW_AGAIN;
}

int ts_pg_wait_step(ts_pg_wait *w) {
    if (!w->attached) return TS_PGW_FAILED;
    if (w->timed_out) return finish(w, TS_PGW_TIMEOUT);
    if (!w->ready) return TS_PGW_AGAIN;     /* resumed for another coroutine's request */
    w->ready = 0;
    if (w->kind == K_QUERY) return step_query(w);
    if (w->kind == K_RESOLVE) return ts_pg_resolve_done(w->job) ? finish(w, TS_PGW_DONE) : TS_PGW_AGAIN;
    PostgresPollingStatusType st = w->kind == K_RESET ? PQresetPoll(w->c) : PQconnectPoll(w->c);
    if (st == PGRES_POLLING_OK) return finish(w, TS_PGW_DONE);
    if (st == PGRES_POLLING_FAILED) return finish(w, TS_PGW_FAILED);
    watch(w, st == PGRES_POLLING_WRITING);
    return TS_PGW_AGAIN;
}

void ts_pg_wait_cancel_all(const char *why) {
    for (ts_pg_wait *w = attached; w; w = w->next)
        if (w->kind == K_QUERY && w->c) ts_pg_cancel_start(w->c, w->loop, why);
}

void ts_pg_wait_detach_all(void) {
    while (attached) detach(attached);
}
