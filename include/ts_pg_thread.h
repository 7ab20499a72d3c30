/* ts_pg_thread: the two libpq-side jobs that block and so never run on the daemon's loop
 * (C core): resolving the host names of a conninfo (getaddrinfo) and sending a cancel
 * request (PQcancel), each on a short-lived detached thread that tells the loop through an
 * eventfd. src/pg_async.c and src/pg.c use them; the daemon waits for cancels at shutdown. */
#ifndef TS_PG_THREAD_H
#define TS_PG_THREAD_H
#include <libpq-fe.h>
#include <stdint.h>
#include "ts_http.h"

typedef struct ts_pg_resolve ts_pg_resolve;

/* Starts resolving every name of hosts (libpq's comma-separated host list; socket
 * directories and empty entries are passed through) on a helper thread; ports is the
 * port list (NULL or one entry: left alone). *fd becomes readable once it is over.
 * NULL when no thread could be started. */
ts_pg_resolve *ts_pg_resolve_start(const char *hosts, const char *ports, int *fd);
/* 1 once over (clears fd's readiness), 0 while it runs. */
int ts_pg_resolve_done(ts_pg_resolve *r);
/* Once over: NULL and the host, hostaddr and port lists to hand libpq (one entry per
 * address; port NULL when the caller's stays), or the error text. */
const char *ts_pg_resolve_result(ts_pg_resolve *r, const char **host, const char **hostaddr, const char **port);
/* The caller lets go (a resolver still running frees itself when it ends). */
void ts_pg_resolve_release(ts_pg_resolve *r);

/* Sends a cancel request for c's running statement from a helper thread (PQgetCancel
 * copies what it needs: c may be reset or finished meanwhile); the outcome is logged on
 * loop's turn. -1 when it could not be started (logged). */
int ts_pg_cancel_start(PGconn *c, ts_loop *loop, const char *why);
/* Shutdown: waits until every cancel started is sent or deadline (ts_mono_ms) passes,
 * logs their outcomes, lets go of the loop; returns how many are still pending. */
int ts_pg_cancel_finish(int64_t deadline_ms);

#endif
