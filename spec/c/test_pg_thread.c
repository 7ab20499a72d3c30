/* test_pg_thread.c: the host name lookup handed to libpq (C test side, ts_pg_thread.h):
 * each name becomes one host/hostaddr entry per address, socket directories and empty
 * entries pass through with an empty hostaddr, a per-host port list follows its hosts,
 * a name that does not resolve is skipped unless none is left. Names: localhost (from
 * /etc/hosts) and numeric addresses only, so no DNS server is asked. */
#include <poll.h>
#include <string.h>
#include "check.h"
#include "ts_pg_thread.h"

/* Runs a lookup to its end (the eventfd says when); returns its error or NULL. */
static const char *lookup(const char *hosts, const char *ports, const char **h, const char **a, const char **p,
                          ts_pg_resolve **out) {
    int fd = -1;
    ts_pg_resolve *r = ts_pg_resolve_start(hosts, ports, &fd);
    CHECK(r != NULL && fd >= 0, "started");
    *out = r;
    if (!r) return "not started";
    for (int i = 0; i < 100 && !ts_pg_resolve_done(r); i++) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        poll(&pf, 1, 100);
    }
    CHECK(ts_pg_resolve_done(r), "over within 10 s");
    *h = *a = *p = NULL;
    return ts_pg_resolve_result(r, h, a, p);
}

int main(void) {
    const char *h, *a, *p, *err;
    ts_pg_resolve *r;

    err = lookup("localhost", NULL, &h, &a, &p, &r);
    CHECK(!err, "%s", err ? err : "");
    /* /etc/hosts may list ::1 for localhost too: every address keeps the name */
    CHECK(h && strncmp(h, "localhost", 9) == 0, "host %s", h ? h : "(null)");
    CHECK(a && strstr(a, "127.0.0.1") != NULL, "hostaddr %s", a ? a : "(null)");
    CHECK(p == NULL, "a single port stays the caller's");
    ts_pg_resolve_release(r);

    err = lookup("/run/postgresql,127.0.0.1,,@abstract", "5432,5433,5434,5435", &h, &a, &p, &r);
    CHECK(!err, "%s", err ? err : "");
    CHECK(h && strcmp(h, "/run/postgresql,127.0.0.1,,@abstract") == 0, "host %s", h ? h : "(null)");
    CHECK(a && strcmp(a, ",127.0.0.1,,") == 0, "hostaddr %s", a ? a : "(null)");
    CHECK(p && strcmp(p, "5432,5433,5434,5435") == 0, "port %s", p ? p : "(null)");
    ts_pg_resolve_release(r);

    /* a port list of another length than the hosts' is libpq's to refuse: left alone */
    err = lookup("127.0.0.1,::1", "5432,5433,5434", &h, &a, &p, &r);
    CHECK(!err && p == NULL, "%s", err ? err : "");
    CHECK(a && strcmp(a, "127.0.0.1,::1") == 0, "hostaddr %s", a ? a : "(null)");
    ts_pg_resolve_release(r);

    /* a name with a character no resolver takes fails here without any DNS query (strace showed none); the next host
     * is kept (libpq too goes on to the next host), and with none left the error is said */
    err = lookup("bad name!,127.0.0.1", "1,2", &h, &a, &p, &r);
    CHECK(!err && a && strcmp(a, "127.0.0.1") == 0 && p && strcmp(p, "2") == 0, "%s / %s / %s", err ? err : "",
          a ? a : "(null)", p ? p : "(null)");
    ts_pg_resolve_release(r);
    err = lookup("bad name!", NULL, &h, &a, &p, &r);
    CHECK(err && strstr(err, "could not translate host name \"bad name!\""), "%s", err ? err : "(null)");
    ts_pg_resolve_release(r);

    /* released while its thread still runs: the thread frees it (ASan: no leak, no use after free) */
    int fd;
    r = ts_pg_resolve_start("localhost", NULL, &fd);
    CHECK(r != NULL);
    ts_pg_resolve_release(r);
    struct pollfd none = {.fd = -1};
    poll(&none, 0, 200);
    return check_report("test_pg_thread");
}
