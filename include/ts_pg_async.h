/* ts_pg_async: libpq's non-blocking calls driven by the daemon's loop (C core).
 * A wait is a Lua userdata on the calling coroutine's stack: it starts a connect,
 * a reset or one statement, watches the connection's socket and a deadline on the
 * loop, and ts_pg_wait_step advances it each time the coroutine is resumed.
 * src/pg.c decides what to run and what an outcome means (tstats.pg). */
#ifndef TS_PG_ASYNC_H
#define TS_PG_ASYNC_H
#include <libpq-fe.h>
#include <lua.h>
#include <stdint.h>
#include "ts_http.h"
#include "ts_pg_thread.h"

enum { TS_PGW_AGAIN, TS_PGW_DONE, TS_PGW_FAILED, TS_PGW_TIMEOUT };

typedef struct ts_pg_wait {
    /* the driver's */
    PGconn *c;
    int kind;                 /* connect, reset, statement or host name resolution */
    int flushing;             /* statement: output not all sent yet */
    int ready, timed_out, attached;
    int fd, timer;
    PGresult *res;            /* statement: its result (an error one wins) */
    ts_pg_resolve *job;       /* resolution: the helper thread's (kept until the next start) */
    ts_loop *loop;
    int *wake;
    struct ts_pg_wait *next;  /* waits attached to a loop */
    /* the caller's (pg.c): what it is doing across yields */
    int stage, op, retried, was_tx, tx_before, conn_idx, nparams;
    const char *sql;
    const char *const *vals;
} ts_pg_wait;

/* Pushes a new idle wait on L's stack (collected with it; its result is cleared). */
ts_pg_wait *ts_pg_wait_push(lua_State *L, ts_loop *loop, int *wake);
/* Starts connecting c (made by PQconnectStartParams; reset: PQresetStart on a
 * used one) with at most timeout_ms (0: none). Returns -1 when libpq refused to start. */
int ts_pg_wait_connect(ts_pg_wait *w, PGconn *c, int reset, int64_t timeout_ms);
/* Resolves hosts (and ports: see ts_pg_resolve_start) off the loop with at most
 * timeout_ms (0: none); -1 when no thread could start. After DONE,
 * ts_pg_wait_resolved has the result until the wait's next start. */
int ts_pg_wait_resolve(ts_pg_wait *w, const char *hosts, const char *ports, int64_t timeout_ms);
ts_pg_resolve *ts_pg_wait_resolved(ts_pg_wait *w);
/* Sends one statement with text parameters (kept bound: PQsendQueryParams). -1: not sent. */
int ts_pg_wait_query(ts_pg_wait *w, PGconn *c, const char *sql, int n, const char *const *vals, int64_t timeout_ms);
/* Advances the wait: TS_PGW_AGAIN (yield and resume later), DONE, FAILED
 * (PQerrorMessage says why) or TIMEOUT (the connection's state is unknown). */
int ts_pg_wait_step(ts_pg_wait *w);
/* The statement's result, now the caller's (NULL when none came). */
PGresult *ts_pg_wait_take(ts_pg_wait *w);
/* Shutdown: a cancel request (ts_pg_cancel_start) for every statement still waited on,
 * so the server does not keep an abandoned transaction (or a lock wait) open. */
void ts_pg_wait_cancel_all(const char *why);
/* Before the loop is freed: every wait still attached to it lets go of it
 * (a coroutine abandoned at shutdown is collected after the loop is gone). */
void ts_pg_wait_detach_all(void);

#endif
