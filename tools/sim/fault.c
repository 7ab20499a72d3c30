/* tstats-sim faults and monitor sockets (C, test side).
 * A fault is "KIND[:ARG][@TARGET]" on the command line, or kind/arg/monitor on
 * POST /sim/fault. Faults on one target combine; kind "none" clears them. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "sim.h"
#include "ts_log.h"

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    if (ts_log_level() < TS_LOG_DEBUG) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    ts_debug("mhd: %s", msg);
}

int ts_sim_monitor_listen(sim_monitor *m, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ts_sim.listen, &sa.sin_addr) != 1 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(fd, 512) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    m->fd = fd;
    m->port = ntohs(sa.sin_port);
    return 0;
}

int ts_sim_monitor_start(sim_monitor *m) {
    /* Thread per connection: a slow or hung answer only parks its own thread,
     * so other monitors and other clients of this monitor keep going. */
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO |
                                MHD_USE_ITC | MHD_USE_ERROR_LOG,
                            0, NULL, NULL, ts_sim_tm_handler, m, MHD_OPTION_LISTEN_SOCKET, m->fd,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                            NULL, MHD_OPTION_END);
    if (!m->d) {
        close(m->fd);
        m->fd = -1;
        return -1;
    }
    return 0;
}

/* "dead": stop accepting and close the port; requests already running finish,
 * and kept-alive connections are dropped by the handler on their next request. */
void ts_sim_monitor_kill(sim_monitor *m) {
    if (!m->d || m->fd < 0) return;
    MHD_socket fd = MHD_quiesce_daemon(m->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    m->fd = -1;
    ts_info("monitor %s:%d (port %d) is dead", ts_sim.cdns[m->cdn].name, m->index, m->port);
}

void ts_sim_monitor_revive(sim_monitor *m) {
    if (m->fd >= 0) return;
    struct MHD_Daemon *old = m->d;
    if (old) {
        /* Stopping joins its connection threads; park it until exit instead. */
        if (m->ngrave == (int)(sizeof m->graveyard / sizeof m->graveyard[0])) {
            MHD_stop_daemon(m->graveyard[0]);
            memmove(m->graveyard, m->graveyard + 1, sizeof m->graveyard[0] * (size_t)(m->ngrave - 1));
            m->ngrave--;
        }
        m->graveyard[m->ngrave++] = old;
        m->d = NULL;
    }
    int port = m->port;
    if (ts_sim_monitor_listen(m, port) < 0) {
        ts_error("monitor %s:%d: cannot listen again on port %d: %s", ts_sim.cdns[m->cdn].name, m->index, port,
                 strerror(errno));
        m->port = port;
        return;
    }
    if (ts_sim_monitor_start(m) < 0) {
        ts_error("monitor %s:%d: cannot restart on port %d", ts_sim.cdns[m->cdn].name, m->index, port);
        return;
    }
    ts_info("monitor %s:%d is back on port %d", ts_sim.cdns[m->cdn].name, m->index, m->port);
}

void ts_sim_fault_get(int mon, sim_fault *out) {
    pthread_mutex_lock(&ts_sim.fault_lock);
    *out = mon < 0 ? ts_sim.to_fault : ts_sim.mons[mon].fault;
    pthread_mutex_unlock(&ts_sim.fault_lock);
}

static int parse_num(const char *arg, int dflt, int lo, int hi, int *out) {
    if (!arg || !*arg) {
        if (dflt < 0) return -1;
        *out = dflt;
        return 0;
    }
    char *end;
    long v = strtol(arg, &end, 10);
    if (*end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* One kind on one monitor; caller holds fault_lock. */
static int apply_one(sim_monitor *m, const char *kind, const char *arg, char *err, size_t errn) {
    sim_fault *f = &m->fault;
    int v;
    if (!strcmp(kind, "none")) {
        int was_dead = f->dead;
        memset(f, 0, sizeof *f);
        if (was_dead) ts_sim_monitor_revive(m);
    } else if (!strcmp(kind, "503-start")) {
        if (parse_num(arg, 30, 0, 86400 * 365, &v) < 0) goto bad;
        /* Counted from now: at startup that is the sim's start, later it mimics a TM restart. */
        f->start503_until_ms = ts_now_ms() + (int64_t)v * 1000;
    } else if (!strcmp(kind, "503")) {
        f->always503 = 1;
    } else if (!strcmp(kind, "slow")) {
        if (parse_num(arg, -1, 0, 3600 * 1000, &v) < 0) goto bad;
        __atomic_store_n(&f->slow_ms, v, __ATOMIC_RELAXED);
    } else if (!strcmp(kind, "hang")) {
        __atomic_store_n(&f->hang, 1, __ATOMIC_RELAXED);
    } else if (!strcmp(kind, "dead")) {
        f->dead = 1;
        ts_sim_monitor_kill(m);
    } else if (!strcmp(kind, "truncate")) {
        f->truncate = 1;
    } else if (!strcmp(kind, "cut")) {
        f->cut = 1;
    } else if (!strcmp(kind, "invalid")) {
        f->invalid = 1;
    } else if (!strcmp(kind, "huge")) {
        if (parse_num(arg, -1, 1, 4096, &v) < 0) goto bad;
        f->huge_mb = v;
    } else if (!strcmp(kind, "hostile")) {
        f->hostile = 1;
    } else {
        snprintf(err, errn, "unknown fault kind '%s'", kind);
        return -1;
    }
    return 0;
bad:
    snprintf(err, errn, "fault '%s' needs a valid argument (got '%s')", kind, arg ? arg : "");
    return -1;
}

static int apply_to(const char *kind, const char *arg, char *err, size_t errn) {
    int v;
    if (!strcmp(kind, "none")) {
        ts_sim.to_down = 0;
        ts_sim.to_slow_ms = 0;
    } else if (!strcmp(kind, "to-down")) {
        ts_sim.to_down = 1;
    } else if (!strcmp(kind, "to-slow")) {
        if (parse_num(arg, -1, 0, 3600 * 1000, &v) < 0) {
            snprintf(err, errn, "fault 'to-slow' needs milliseconds (got '%s')", arg ? arg : "");
            return -1;
        }
        ts_sim.to_slow_ms = v;
    } else {
        snprintf(err, errn, "unknown TO fault kind '%s'", kind);
        return -1;
    }
    return 0;
}

int ts_sim_fault_apply(const char *target, const char *kind, const char *arg, char *err, size_t errn) {
    if (!kind || !*kind) {
        snprintf(err, errn, "missing fault kind");
        return -1;
    }
    int all = !target || !*target || !strcmp(target, "*") || !strcmp(target, "all");
    int rc = 0;
    pthread_mutex_lock(&ts_sim.fault_lock);
    if (!strncmp(kind, "to-", 3) || (target && !strcmp(target, "to"))) {
        rc = apply_to(kind, arg, err, errn);
        goto out;
    }
    if (all && !strcmp(kind, "none")) apply_to(kind, arg, err, errn);
    /* Target: "cdnN" (its monitors) or "cdnN:IDX" (one monitor). */
    char cdn[64] = "";
    int idx = -1;
    if (!all) {
        const char *colon = strchr(target, ':');
        size_t n = colon ? (size_t)(colon - target) : strlen(target);
        if (n >= sizeof cdn) n = sizeof cdn - 1;
        memcpy(cdn, target, n);
        cdn[n] = '\0';
        if (colon) {
            char *end;
            long v = strtol(colon + 1, &end, 10);
            if (*end || v < 0) {
                snprintf(err, errn, "bad monitor target '%s' (want cdnN:INDEX)", target);
                rc = -1;
                goto out;
            }
            idx = (int)v;
        }
    }
    int hits = 0;
    for (int i = 0; i < ts_sim.nmon && rc == 0; i++) {
        sim_monitor *m = &ts_sim.mons[i];
        if (!all && strcmp(ts_sim.cdns[m->cdn].name, cdn) != 0) continue;
        if (idx >= 0 && m->index != idx) continue;
        hits++;
        rc = apply_one(m, kind, arg, err, errn);
    }
    if (rc == 0 && hits == 0) {
        snprintf(err, errn, "no monitor matches '%s'", target);
        rc = -1;
    }
out:
    pthread_mutex_unlock(&ts_sim.fault_lock);
    if (rc == 0)
        ts_info("fault %s%s%s on %s", kind, arg && *arg ? ":" : "", arg ? arg : "", all ? "all monitors" : target);
    return rc;
}

int ts_sim_fault_spec(const char *spec, char *err, size_t errn) {
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", spec);
    char *target = strchr(tmp, '@');
    if (target) *target++ = '\0';
    char *arg = strchr(tmp, ':');
    if (arg) *arg++ = '\0';
    return ts_sim_fault_apply(target, tmp, arg, err, errn);
}
