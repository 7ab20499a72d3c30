/* pg.c: tstats.pg, the PostgreSQL binding for Lua (C core side, libpq).
 * Policy (which SQL, when, transactions) lives in Lua (lua/summary.lua); this file
 * only turns libpq into `connect`, `query`, `exec` with text parameters and typed
 * rows, reconnects a lost connection once, and keeps passwords out of messages.
 * In a coroutine the daemon marked async the calls run on its loop and yield
 * (src/pg_async.c drives libpq, src/pg_thread.c looks host names up and sends cancel
 * requests off the loop); elsewhere they block. */
#include "ts_pg.h"
#include "ts_async.h"
#include "ts_log.h"
#include "ts_pg_async.h"

#include <lauxlib.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Type OIDs from pg_type.h (stable since forever; the server header is not
 * part of libpq-dev). */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700
};

#define MAX_SECRETS 2

typedef struct pgconn {
    PGconn *c;
    /* Whether the last completed call left us inside a transaction block:
     * after a lost connection the server rolled it back, so a later statement
     * of that transaction must fail instead of running in autocommit. */
    int in_tx;
    /* A call on the loop gave up waiting (timeout_ms): the connection's state
     * is unknown, so the next call starts with a reset. */
    int stale;
    int64_t timeout_ms;       /* per call on the loop (connect: the conninfo's connect_timeout); 0 = none */
    char *secret[MAX_SECRETS];
} pgconn;

static ts_counter *c_errors, *c_resets, *c_timeouts;

static void counters_init(void) {
    if (!c_errors) {
        c_errors = ts_counter_get("pg_errors");
        c_resets = ts_counter_get("pg_reconnects");
        c_timeouts = ts_counter_get("pg_timeouts");
    }
}

static void add_secret(pgconn *p, const char *s) {
    /* Very short passwords are not scrubbed: replacing every "ab" in a message
     * would garble it, and libpq does not echo passwords in the first place;
     * this is a second line of defence for URI/conninfo parse errors. */
    if (!s || strlen(s) < 4) return;
    for (int i = 0; i < MAX_SECRETS; i++) {
        if (p->secret[i] && strcmp(p->secret[i], s) == 0) return;
        if (!p->secret[i]) {
            p->secret[i] = strdup(s);
            return;
        }
    }
}

static void free_secrets(pgconn *p) {
    for (int i = 0; i < MAX_SECRETS; i++) {
        free(p->secret[i]);
        p->secret[i] = NULL;
    }
}

/* Pushes msg flattened to one line (libpq messages end with '\n' and may hold
 * several lines), trimmed, with every secret replaced by "***". */
static void push_clean(lua_State *L, const char *prefix, const char *msg, char *const *secrets) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (prefix) luaL_addstring(&b, prefix);
    if (!msg || !*msg) msg = "unknown error";
    while (*msg == ' ' || *msg == '\n' || *msg == '\t' || *msg == '\r') msg++;
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ' || msg[n - 1] == '\r' || msg[n - 1] == '\t')) n--;
    for (size_t i = 0; i < n;) {
        int hit = 0;
        for (int k = 0; secrets && k < MAX_SECRETS; k++) {
            size_t sl = secrets[k] ? strlen(secrets[k]) : 0;
            if (sl && sl <= n - i && memcmp(msg + i, secrets[k], sl) == 0) {
                luaL_addstring(&b, "***");
                i += sl;
                hit = 1;
                break;
            }
        }
        if (hit) continue;
        if (msg[i] == '\n') {
            luaL_addstring(&b, "; ");
            i++;
            while (i < n && (msg[i] == ' ' || msg[i] == '\t')) i++;
        } else {
            luaL_addchar(&b, msg[i++]);
        }
    }
    luaL_pushresult(&b);
}

/* nil, message: the I/O error convention of the tstats Lua API. */
static int fail(lua_State *L, pgconn *p, const char *prefix, const char *msg) {
    counters_init();
    ts_counter_add(c_errors, 1);
    lua_pushnil(L);
    push_clean(L, prefix, msg, p ? p->secret : NULL);
    return 2;
}

static void notice_to_log(void *arg, const char *message) {
    (void)arg;
    /* Server notices (e.g. "no transaction in progress") are not errors; libpq
     * would print them on stderr, which is the daemon's log channel. */
    ts_debug("pg: %.*s", (int)strcspn(message, "\n"), message);
}

static pgconn *check_conn(lua_State *L) { return luaL_checkudata(L, 1, TS_PG_CONN_MT); }

static void conn_finish(pgconn *p) {
    if (p->c) PQfinish(p->c);
    p->c = NULL;
    p->in_tx = 0;
    p->stale = 0;
    free_secrets(p);
}

/* PQreset re-runs the connection with the original parameters (and the same
 * connect_timeout), so a server that came back is picked up transparently. */
static int do_reset(pgconn *p) {
    counters_init();
    ts_counter_add(c_resets, 1);
    PQreset(p->c);
    p->in_tx = 0;
    p->stale = 0;
    if (PQstatus(p->c) == CONNECTION_OK) {
        ts_info("pg: reconnected to %s:%s", PQhost(p->c) ? PQhost(p->c) : "?", PQport(p->c) ? PQport(p->c) : "?");
        return 0;
    }
    return -1;
}

static int pg_k(lua_State *L, int status, lua_KContext k);
enum { ST_RESOLVE, ST_CONNECT, ST_RESET_FIRST, ST_QUERY, ST_RESET_RETRY };
enum { OP_QUERY, OP_EXEC };

/* The conninfo's connect_timeout (libpq applies it only to blocking connects); on the
 * loop a connect_timeout of 0 still gets the call's bound: nothing there waits forever. */
static int64_t connect_timeout_ms(const pgconn *p) {
    int64_t ms = 0;
    PQconninfoOption *o = PQconninfo(p->c);
    for (PQconninfoOption *i = o; i && i->keyword; i++)
        if (strcmp(i->keyword, "connect_timeout") == 0 && i->val) ms = (int64_t)atoi(i->val) * 1000;
    PQconninfoFree(o);
    return ms > 0 ? ms : p->timeout_ms;
}

static const char *opt_val(PQconninfoOption *opts, const char *kw) {
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, kw) == 0 && o->val && *o->val) return o->val;
    return NULL;
}

/* Whether the host list has a name to look up (not only socket directories). */
static int has_name(const char *hosts) {
    for (const char *h = hosts; h && *h; h += strcspn(h, ","), h += *h == ',') {
        if (*h != ',' && *h != '/' && *h != '@') return 1;
    }
    return 0;
}

/* The end of a connect: the connection at idx, or nil, err. */
static int connected(lua_State *L, pgconn *p, int idx) {
    add_secret(p, PQpass(p->c)); /* may come from PGPASSWORD or .pgpass */
    if (PQstatus(p->c) != CONNECTION_OK) {
        int r = fail(L, p, "pg: connect: ", PQerrorMessage(p->c));
        conn_finish(p);
        return r;
    }
    PQsetNoticeProcessor(p->c, notice_to_log, NULL);
    lua_pushvalue(L, idx);
    return 1;
}

/* Starts the non-blocking connect of the conninfo at index 1; host, hostaddr, port (when
 * not NULL) come after it and so override its own. 0: started (stage ST_CONNECT); else
 * p->c is NULL or bad and connected() says why. */
static int start_connect(lua_State *L, pgconn *p, ts_pg_wait *w, const char *host, const char *hostaddr,
                         const char *port) {
    /* Defaults placed before dbname so the operator's conninfo wins: a dead
     * host must not block the daemon forever, and the server should see who we are. */
    const char *kw[7] = {"connect_timeout", "fallback_application_name", "dbname"};
    const char *val[7] = {"10", "tstats", lua_tostring(L, 1)};
    int n = 3;
    if (host) { kw[n] = "host"; val[n++] = host; }
    if (hostaddr) { kw[n] = "hostaddr"; val[n++] = hostaddr; }
    if (port) { kw[n] = "port"; val[n++] = port; }
    kw[n] = val[n] = NULL;
    p->c = PQconnectStartParams(kw, val, 1);
    if (!p->c) return -1;
    w->stage = ST_CONNECT;
    return ts_pg_wait_connect(w, p->c, 0, connect_timeout_ms(p));
}

static int l_connect(lua_State *L) {
    const char *conninfo = luaL_checkstring(L, 1);
    double timeout = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "timeout");
        timeout = luaL_optnumber(L, -1, 0);
        lua_pop(L, 1);
        luaL_argcheck(L, timeout >= 0, 2, "timeout must be >= 0 seconds");
    }
    lua_settop(L, 2);
    pgconn *p = lua_newuserdatauv(L, sizeof *p, 0);   /* index 3 */
    memset(p, 0, sizeof *p);
    luaL_setmetatable(L, TS_PG_CONN_MT);
    p->timeout_ms = (int64_t)(timeout * 1000.0 + 0.5);

    /* Learn the password first so it can be scrubbed even from a parse error. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        /* The text may be a URI whose userinfo holds the password: do not echo it. */
        const char *at = strchr(conninfo, '@'), *colon = NULL;
        if (at && strstr(conninfo, "://")) {
            const char *u = strstr(conninfo, "://") + 3;
            colon = memchr(u, ':', (size_t)(at - u));
            if (colon) {
                char *pw = strndup(colon + 1, (size_t)(at - colon - 1));
                add_secret(p, pw);
                free(pw);
            }
        }
        int r = fail(L, p, "pg: invalid conninfo: ", perr ? perr : "out of memory");
        PQfreemem(perr);
        free_secrets(p);
        return r;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val) add_secret(p, o->val);

    ts_loop *loop;
    int *wake;
    if (ts_async_get(L, &loop, &wake)) {
        /* libpq looks host names up with a blocking getaddrinfo inside PQconnectStartParams /
         * PQconnectPoll unless hostaddr is given: look them up on a helper thread first and
         * hand libpq both (host stays the name, for TLS, .pgpass and messages). */
        const char *hosts = opt_val(opts, "host"), *ct = opt_val(opts, "connect_timeout");
        if (!hosts) hosts = getenv("PGHOST");
        int resolve = has_name(hosts) && !opt_val(opts, "hostaddr") && !getenv("PGHOSTADDR");
        int64_t ct_ms = (ct ? atoi(ct) : 10) * (int64_t)1000;
        ts_pg_wait *w = ts_pg_wait_push(L, loop, wake);   /* index 4 */
        w->conn_idx = 3;
        w->stage = ST_RESOLVE;
        int rc = resolve ? ts_pg_wait_resolve(w, hosts, opt_val(opts, "port"), ct_ms > 0 ? ct_ms : p->timeout_ms) : 1;
        PQconninfoFree(opts);
        if (rc < 0) {
            int r = fail(L, p, "pg: connect: ", "cannot start the host name lookup (no thread)");
            free_secrets(p);
            return r;
        }
        if (rc > 0) {
            /* socket directories or addresses only: nothing to look up */
            if (start_connect(L, p, w, NULL, NULL, NULL) != 0) return connected(L, p, 3);
        }
        return pg_k(L, LUA_OK, (lua_KContext)lua_gettop(L));
    }
    PQconninfoFree(opts);
    const char *const kw[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const val[] = {"10", "tstats", conninfo, NULL};
    p->c = PQconnectdbParams(kw, val, 1);
    if (!p->c) {
        free_secrets(p);
        return fail(L, NULL, "pg: connect: ", "out of memory");
    }
    return connected(L, p, 3);
}

/* Shortest text that reads back as the same double (STYLE: numbers exact). */
static void fmt_double(char *out, size_t cap, double d) {
    if (isnan(d)) {
        snprintf(out, cap, "NaN");
        return;
    }
    if (isinf(d)) {
        snprintf(out, cap, d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, d);
        if (strtod(out, NULL) == d) return;
    }
}

typedef struct params {
    int n;
    const char **vals;
    char (*num)[40];
} params;

/* Converts arguments first..top into text parameters. Strings stay on the Lua
 * stack for the whole call, numbers are formatted into GC-owned scratch memory
 * so a raised error leaks nothing. Returns NULL or an error message. */
static const char *collect_params(lua_State *L, int first, params *pp) {
    int top = lua_gettop(L);
    pp->n = top >= first ? top - first + 1 : 0;
    size_t sz = (size_t)pp->n * (sizeof(char *) + sizeof *pp->num) + 1;
    char *mem = lua_newuserdatauv(L, sz, 0); /* pushed above the args: indices unchanged */
    pp->num = (char (*)[40])mem;
    pp->vals = (const char **)(mem + (size_t)pp->n * sizeof *pp->num);
    for (int i = 0; i < pp->n; i++) {
        int idx = first + i;
        switch (lua_type(L, idx)) {
        case LUA_TNIL: pp->vals[i] = NULL; break;
        case LUA_TBOOLEAN: pp->vals[i] = lua_toboolean(L, idx) ? "t" : "f"; break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx))
                snprintf(pp->num[i], sizeof pp->num[i], "%lld", (long long)lua_tointeger(L, idx));
            else
                fmt_double(pp->num[i], sizeof pp->num[i], lua_tonumber(L, idx));
            pp->vals[i] = pp->num[i];
            break;
        case LUA_TSTRING: {
            size_t len;
            const char *s = lua_tolstring(L, idx, &len);
            if (strlen(s) != len) return "parameter contains a NUL byte";
            pp->vals[i] = s;
            break;
        }
        default:
            luaL_argerror(L, idx, lua_pushfstring(L, "parameter $%d: string, number, boolean or nil expected, got %s",
                                                   i + 1, luaL_typename(L, idx)));
        }
    }
    return NULL;
}

static int result_ok(PGresult *r) {
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
}

/* Pushes a result error as "ERROR: primary (SQLSTATE x)" plus detail: the
 * full message has LINE/caret lines that are useless in a one-line log. */
static int fail_result(lua_State *L, pgconn *p, PGresult *r) {
    const char *prim = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!prim) return fail(L, p, "pg: ", r && *PQresultErrorMessage(r) ? PQresultErrorMessage(r) : PQerrorMessage(p->c));
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    char *msg = NULL;
    if (asprintf(&msg, "%s: %s%s%s (SQLSTATE %s)", sev ? sev : "ERROR", prim, detail ? "; DETAIL: " : "",
                 detail ? detail : "", code ? code : "?") < 0)
        msg = NULL;
    int n = fail(L, p, "pg: ", msg ? msg : prim);
    free(msg);
    return n;
}

/* Runs one statement with the reconnect policy: a connection known to be bad
 * is reset before the call; a call that fails because the connection broke is
 * retried once after a reset, unless it ran inside a transaction (the server
 * rolled that back: replaying one statement of it in autocommit would be wrong).
 * On success returns the result; on failure pushes nil, err and returns NULL. */
static PGresult *run(lua_State *L, pgconn *p, const char *sql, const params *pp) {
    if (!p->c) {
        fail(L, p, "pg: ", "connection is closed");
        return NULL;
    }
    int retried = 0;
    if (PQstatus(p->c) != CONNECTION_OK || p->stale) {
        int was_tx = p->in_tx;
        if (do_reset(p) != 0) {
            fail(L, p, "pg: connection lost, reconnect failed: ", PQerrorMessage(p->c));
            return NULL;
        }
        if (was_tx) {
            fail(L, p, "pg: ", "connection was lost inside a transaction (rolled back); reconnected, "
                               "restart the transaction");
            return NULL;
        }
        retried = 1;
    }
    for (;;) {
        PGTransactionStatusType ts = PQtransactionStatus(p->c);
        int tx_before = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
        PGresult *r = PQexecParams(p->c, sql, pp->n, NULL, pp->vals, NULL, NULL, 0);
        if (r && result_ok(r)) {
            ts = PQtransactionStatus(p->c);
            p->in_tx = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
            return r;
        }
        if (PQstatus(p->c) != CONNECTION_BAD) {
            /* An SQL error on a healthy connection: report it as is. */
            ts = PQtransactionStatus(p->c);
            p->in_tx = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
            fail_result(L, p, r);
            PQclear(r);
            return NULL;
        }
        PQclear(r);
        if (tx_before) {
            /* Outcome unknown (a COMMIT may or may not have landed): reset so
             * the next call works, and let the caller decide. */
            lua_pushfstring(L, "%s", PQerrorMessage(p->c));
            const char *lost = lua_tostring(L, -1);
            do_reset(p);
            fail(L, p, "pg: connection lost inside a transaction (not retried): ", lost);
            lua_remove(L, -3);
            return NULL;
        }
        if (retried || do_reset(p) != 0) {
            fail(L, p, "pg: connection lost: ", PQerrorMessage(p->c));
            return NULL;
        }
        retried = 1;
    }
}

static void push_value(lua_State *L, PGresult *r, int row, int col) {
    const char *v = PQgetvalue(r, row, col);
    switch (PQftype(r, col)) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8: {
        char *end;
        long long x = strtoll(v, &end, 10);
        if (*end == '\0') lua_pushinteger(L, (lua_Integer)x);
        else lua_pushstring(L, v);
        break;
    }
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC:
        /* strtod reads "NaN", "Infinity" and "-Infinity" as PostgreSQL prints them. */
        lua_pushnumber(L, strtod(v, NULL));
        break;
    case OID_BOOL: lua_pushboolean(L, v[0] == 't'); break;
    default: lua_pushlstring(L, v, (size_t)PQgetlength(r, row, col)); break;
    }
}

static int push_rows(lua_State *L, PGresult *r) {
    int nrows = PQntuples(r), nf = PQnfields(r);
    lua_createtable(L, nrows, 0);
    for (int i = 0; i < nrows; i++) {
        lua_createtable(L, 0, nf);
        for (int j = 0; j < nf; j++) {
            if (PQgetisnull(r, i, j)) continue; /* NULL -> absent key = nil */
            push_value(L, r, i, j);
            lua_setfield(L, -2, PQfname(r, j));
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int push_count(lua_State *L, PGresult *r) {
    const char *n = PQcmdTuples(r); /* "" for statements without a count (BEGIN) */
    lua_pushinteger(L, *n ? (lua_Integer)strtoll(n, NULL, 10) : 0);
    return 1;
}

static void note_tx(pgconn *p) {
    PGTransactionStatusType ts = PQtransactionStatus(p->c);
    p->in_tx = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
}

static int start_query(lua_State *L, pgconn *p, ts_pg_wait *w) {
    PGTransactionStatusType ts = PQtransactionStatus(p->c);
    w->tx_before = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
    w->stage = ST_QUERY;
    if (ts_pg_wait_query(w, p->c, w->sql, w->nparams, w->vals, p->timeout_ms) == 0) return 0;
    if (PQstatus(p->c) == CONNECTION_BAD) return 1;   /* handled as a lost connection */
    fail(L, p, "pg: ", PQerrorMessage(p->c));
    return -1;
}

static int start_reset(lua_State *L, pgconn *p, ts_pg_wait *w, int stage) {
    counters_init();
    ts_counter_add(c_resets, 1);
    p->in_tx = 0;
    p->stale = 0;
    w->stage = stage;
    if (ts_pg_wait_connect(w, p->c, 1, connect_timeout_ms(p)) == 0) return 0;
    fail(L, p, "pg: connection lost, reconnect failed: ", PQerrorMessage(p->c));
    return -1;
}

/* The reconnect policy of run() on the loop, one stage per outcome of the
 * wait at stack index k; each call either yields again or returns the answer. */
static int pg_k(lua_State *L, int status, lua_KContext k) {
    (void)status;
    ts_pg_wait *w = lua_touserdata(L, (int)k);
    pgconn *p = lua_touserdata(L, w->conn_idx);
    for (;;) {
        int rc = ts_pg_wait_step(w);
        if (rc == TS_PGW_AGAIN) return lua_yieldk(L, 0, k, pg_k);
        if (w->stage == ST_RESOLVE) {
            const char *host = NULL, *addr = NULL, *port = NULL, *err = "no answer within connect_timeout";
            if (rc == TS_PGW_DONE) err = ts_pg_resolve_result(ts_pg_wait_resolved(w), &host, &addr, &port);
            if (err) {
                int r = fail(L, p, "pg: connect: host name lookup: ", err);
                free_secrets(p);
                return r;
            }
            ts_info("pg: connecting to %s at %s (host names looked up off the loop)", host, addr);
            if (start_connect(L, p, w, host, addr, port) != 0) {
                if (!p->c) {
                    free_secrets(p);
                    return fail(L, NULL, "pg: connect: ", "out of memory");
                }
                return connected(L, p, w->conn_idx);
            }
            continue;
        }
        if (w->stage == ST_CONNECT) {
            if (rc == TS_PGW_TIMEOUT) {
                int r = fail(L, p, "pg: connect: ", "no answer within connect_timeout");
                conn_finish(p);
                return r;
            }
            return connected(L, p, w->conn_idx);
        }
        if (w->stage == ST_RESET_FIRST || w->stage == ST_RESET_RETRY) {
            if (rc != TS_PGW_DONE) {
                p->stale = 1;   /* try again from scratch next time */
                return fail(L, p, w->stage == ST_RESET_FIRST ? "pg: connection lost, reconnect failed: " : "pg: connection lost: ",
                            rc == TS_PGW_TIMEOUT ? "no answer within connect_timeout" : PQerrorMessage(p->c));
            }
            ts_info("pg: reconnected to %s:%s", PQhost(p->c) ? PQhost(p->c) : "?", PQport(p->c) ? PQport(p->c) : "?");
            if (w->stage == ST_RESET_FIRST && w->was_tx)
                return fail(L, p, "pg: ", "connection was lost inside a transaction (rolled back); reconnected, "
                                          "restart the transaction");
            w->retried = 1;
            int s = start_query(L, p, w);
            if (s < 0) return 2;
            if (s > 0) rc = TS_PGW_FAILED;
            else continue;
        }
        /* ST_QUERY */
        PGresult *r = ts_pg_wait_take(w);
        if (rc == TS_PGW_TIMEOUT) {
            PQclear(r);
            /* The server may be hung: cancel the statement (from a helper thread: PQcancel
             * blocks) so its transaction and locks go once the server runs again, and drop
             * the connection at the next call (a reset; a transaction of it is rolled back
             * by the server, as on a lost one). */
            counters_init();
            ts_counter_add(c_timeouts, 1);
            ts_pg_cancel_start(p->c, w->loop, "a statement got no answer in time");
            p->stale = 1;
            p->in_tx = w->tx_before;
            lua_pushnil(L);
            lua_pushfstring(L, "pg: no answer within %d ms; the connection is dropped and its statement cancelled",
                            (int)p->timeout_ms);
            ts_counter_add(c_errors, 1);
            return 2;
        }
        if (rc == TS_PGW_DONE && r && result_ok(r)) {
            note_tx(p);
            int n = w->op == OP_QUERY ? push_rows(L, r) : push_count(L, r);
            PQclear(r);
            return n;
        }
        if (PQstatus(p->c) != CONNECTION_BAD) {
            note_tx(p);
            fail_result(L, p, r);
            PQclear(r);
            return 2;
        }
        PQclear(r);
        if (w->tx_before) {
            /* outcome unknown, as in run(); the next call reconnects first */
            p->in_tx = 0;
            return fail(L, p, "pg: connection lost inside a transaction (not retried): ", PQerrorMessage(p->c));
        }
        if (w->retried) return fail(L, p, "pg: connection lost: ", PQerrorMessage(p->c));
        if (start_reset(L, p, w, ST_RESET_RETRY) != 0) return 2;
    }
}

/* query / exec: on the loop in an async coroutine, else run() blocking. */
static int call(lua_State *L, int op) {
    pgconn *p = check_conn(L);
    const char *sql = luaL_checkstring(L, 2);
    params pp;
    const char *perr = collect_params(L, 3, &pp);   /* its userdata stays on the stack: vals live */
    if (perr) return fail(L, p, "pg: ", perr);
    ts_loop *loop;
    int *wake;
    if (!ts_async_get(L, &loop, &wake)) {
        PGresult *r = run(L, p, sql, &pp);
        if (!r) return 2;
        int n = op == OP_QUERY ? push_rows(L, r) : push_count(L, r);
        PQclear(r);
        return n;
    }
    if (!p->c) return fail(L, p, "pg: ", "connection is closed");
    ts_pg_wait *w = ts_pg_wait_push(L, loop, wake);
    w->conn_idx = 1;
    w->op = op;
    w->sql = sql;
    w->nparams = pp.n;
    w->vals = pp.vals;
    lua_KContext k = (lua_KContext)lua_gettop(L);
    if (PQstatus(p->c) != CONNECTION_OK || p->stale) {
        w->was_tx = p->in_tx;
        if (start_reset(L, p, w, ST_RESET_FIRST) != 0) return 2;
    } else {
        int s = start_query(L, p, w);
        if (s < 0) return 2;
        if (s > 0 && w->tx_before) {
            p->in_tx = 0;
            return fail(L, p, "pg: connection lost inside a transaction (not retried): ", PQerrorMessage(p->c));
        }
        if (s > 0 && start_reset(L, p, w, ST_RESET_RETRY) != 0) return 2;
    }
    return pg_k(L, LUA_OK, k);
}

static int l_query(lua_State *L) { return call(L, OP_QUERY); }
static int l_exec(lua_State *L) { return call(L, OP_EXEC); }

static int l_close(lua_State *L) {
    conn_finish(check_conn(L));
    return 0;
}

static int l_ok(lua_State *L) {
    pgconn *p = check_conn(L);
    lua_pushboolean(L, p->c && PQstatus(p->c) == CONNECTION_OK);
    return 1;
}

static int l_tostring(lua_State *L) {
    pgconn *p = check_conn(L);
    if (!p->c) lua_pushstring(L, "tstats.pg.conn (closed)");
    else
        lua_pushfstring(L, "tstats.pg.conn (%s@%s:%s/%s)", PQuser(p->c), PQhost(p->c) ? PQhost(p->c) : "",
                        PQport(p->c) ? PQport(p->c) : "", PQdb(p->c));
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"query", l_query}, {"exec", l_exec}, {"close", l_close}, {"ok", l_ok}, {NULL, NULL}};

int ts_pg_open(lua_State *L) {
    counters_init();
    if (luaL_newmetatable(L, TS_PG_CONN_MT)) {
        luaL_newlib(L, conn_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_connect);
    lua_setfield(L, -2, "connect");
    return 1;
}
