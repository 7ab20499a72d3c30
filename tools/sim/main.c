/* tstats-sim entry point (C, test side): command line, startup of the TO and
 * per-monitor HTTP servers, the ready file, and clean shutdown on SIGTERM/SIGINT.
 * The simulator is the demo's data source, the runtime tests' peer and the
 * benchmark's load generator; docs/SIMULATOR.md is its manual. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sim.h"
#include "ts_log.h"

sim_state ts_sim;

static void usage(FILE *fp) {
    fputs("usage: tstats-sim [options]\n"
          "  --listen ADDR            IPv4 address to listen on (127.0.0.1)\n"
          "  --to-port P              Traffic Ops port (0 = any free port)\n"
          "  --cdns C                 number of CDNs, named cdn1..cdnC (1)\n"
          "  --monitors-per-cdn K     ONLINE Traffic Monitors per CDN, each on its own port (2)\n"
          "  --caches N               caches per CDN, ~80% EDGE (20)\n"
          "  --stats M                stats per cache: the 37 CiaB CacheStats + synthetic ones (40)\n"
          "  --ds D                   delivery services per CDN (5)\n"
          "  --cachegroups G          cache groups; the last one has a dot in its name (3)\n"
          "  --seed S                 value generator seed (1)\n"
          "  --fault SPEC             KIND[:ARG][@TARGET], repeatable (see docs/SIMULATOR.md)\n"
          "  --ready-file F           write the ready JSON here (also printed on stdout)\n"
          "  --payload-cache-ms MS    reuse a generated TM payload for MS ms (1000; 0 = never)\n"
          "  --poll-ms MS             simulated TM poll period: history spacing and time stamps (1000)\n"
          "  --user U --password PW   TO credentials (admin / twelve12)\n"
          "  --session-ttl S          TO session lifetime in seconds (21600)\n"
          "  --no-params              TRAFFIC_STATS profile without parameters\n"
          "  --log FILE               log file (stderr)\n"
          "  -v, --verbose            debug log (every request)\n"
          "  --bench N                time N CacheStats generations of cdn1 (no HTTP), print JSON, exit\n"
          "  --bench-stats LIST       stats filter for --bench (wildcard); default: CiaB list\n"
          "  --fixture-cachestats F   fixture mode: serve this legacy CacheStats payload (times shifted to now)\n"
          "  --fixture-dsstats F      fixture mode: serve this DsStats payload (both files are required)\n"
          "  --fixture-cdn NAME       the fixture's CDN name (CDN-in-a-Box)\n",
          fp);
}

static int opt_int(const char *name, const char *v, int lo, int hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi) {
        fprintf(stderr, "tstats-sim: --%s wants an integer in [%d, %d], got '%s'\n", name, lo, hi, v);
        exit(2);
    }
    return (int)x;
}

static void write_ready(ts_buf *b) {
    ts_buf_printf(b, "{\"to_url\":\"http://%s:%d\",\"monitors\":[", ts_sim.host_for_urls, ts_sim.to_port);
    for (int i = 0; i < ts_sim.nmon; i++) {
        const sim_monitor *m = &ts_sim.mons[i];
        ts_buf_printf(b, "%s{\"cdn\":\"%s\",\"index\":%d,\"url\":\"http://%s:%d\",\"port\":%d,\"status\":\"%s\"}",
                      i ? "," : "", ts_sim.cdns[m->cdn].name, m->index, ts_sim.host_for_urls, m->port, m->port,
                      m->offline ? "OFFLINE" : "ONLINE");
    }
    ts_buf_adds(b, "]");
    if (ts_sim.fixture) {
        ts_buf_adds(b, ",\"fixture_cdn\":");
        ts_sim_json_str(b, ts_sim.fixture_cdn);
        ts_buf_printf(b, ",\"fixture_time_delta_ms\":%lld", (long long)ts_sim.fixture_delta_ms);
    }
    ts_buf_printf(b, ",\"pid\":%d,\"user\":", (int)getpid());
    ts_sim_json_str(b, ts_sim.user);
    ts_buf_adds(b, ",\"password\":");
    ts_sim_json_str(b, ts_sim.password);
    ts_buf_adds(b, "}");
}

int main(int argc, char **argv) {
    sim_state *S = &ts_sim;
    snprintf(S->listen, sizeof S->listen, "127.0.0.1");
    snprintf(S->user, sizeof S->user, "admin");
    snprintf(S->password, sizeof S->password, "twelve12");
    S->ncdn = 1;
    S->mon_per_cdn = 2;
    S->ncache_per_cdn = 20;
    S->nstats = 40;
    S->nds_per_cdn = 5;
    S->ncg = 3;
    S->seed = 1;
    S->payload_cache_ms = 1000;
    S->poll_ms = 1000;
    S->session_ttl_s = 21600;
    int bench = 0;
    const char *bench_stats = NULL, *logfile = NULL;
    const char *fx_cs = NULL, *fx_ds = NULL, *fx_cdn = NULL;
    int cdns_given = 0;
    static char *faults[256];
    int nfaults = 0;

    enum { O_LISTEN = 256, O_TOPORT, O_CDNS, O_MPC, O_CACHES, O_STATS, O_DS, O_CG, O_SEED, O_FAULT, O_READY,
           O_PCMS, O_POLL, O_USER, O_PW, O_TTL, O_NOPARAMS, O_LOG, O_BENCH, O_BENCHSTATS, O_HELP, O_FXCS, O_FXDS,
           O_FXCDN };
    static const struct option lo[] = {
        {"listen", 1, 0, O_LISTEN}, {"to-port", 1, 0, O_TOPORT}, {"cdns", 1, 0, O_CDNS},
        {"monitors-per-cdn", 1, 0, O_MPC}, {"caches", 1, 0, O_CACHES}, {"stats", 1, 0, O_STATS},
        {"ds", 1, 0, O_DS}, {"cachegroups", 1, 0, O_CG}, {"seed", 1, 0, O_SEED}, {"fault", 1, 0, O_FAULT},
        {"ready-file", 1, 0, O_READY}, {"payload-cache-ms", 1, 0, O_PCMS}, {"poll-ms", 1, 0, O_POLL},
        {"user", 1, 0, O_USER}, {"password", 1, 0, O_PW}, {"session-ttl", 1, 0, O_TTL},
        {"no-params", 0, 0, O_NOPARAMS}, {"log", 1, 0, O_LOG}, {"verbose", 0, 0, 'v'},
        {"bench", 1, 0, O_BENCH}, {"bench-stats", 1, 0, O_BENCHSTATS}, {"help", 0, 0, O_HELP},
        {"fixture-cachestats", 1, 0, O_FXCS}, {"fixture-dsstats", 1, 0, O_FXDS}, {"fixture-cdn", 1, 0, O_FXCDN},
        {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
        switch (o) {
        case O_LISTEN: snprintf(S->listen, sizeof S->listen, "%s", optarg); break;
        case O_TOPORT: S->to_port = opt_int("to-port", optarg, 0, 65535); break;
        case O_CDNS: S->ncdn = opt_int("cdns", optarg, 1, 100); cdns_given = 1; break;
        case O_MPC: S->mon_per_cdn = opt_int("monitors-per-cdn", optarg, 1, 50); break;
        case O_CACHES: S->ncache_per_cdn = opt_int("caches", optarg, 0, 1000000); break;
        case O_STATS: S->nstats = opt_int("stats", optarg, 0, 100000); break;
        case O_DS: S->nds_per_cdn = opt_int("ds", optarg, 0, 100000); break;
        case O_CG: S->ncg = opt_int("cachegroups", optarg, 1, 10000); break;
        case O_SEED: S->seed = strtoull(optarg, NULL, 0); break;
        case O_FAULT:
            if (nfaults == (int)(sizeof faults / sizeof faults[0])) {
                fprintf(stderr, "tstats-sim: too many --fault options\n");
                return 2;
            }
            faults[nfaults++] = optarg;
            break;
        case O_READY: S->ready_file = optarg; break;
        case O_PCMS: S->payload_cache_ms = opt_int("payload-cache-ms", optarg, 0, 3600000); break;
        case O_POLL: S->poll_ms = opt_int("poll-ms", optarg, 1, 3600000); break;
        case O_USER: snprintf(S->user, sizeof S->user, "%s", optarg); break;
        case O_PW: snprintf(S->password, sizeof S->password, "%s", optarg); break;
        case O_TTL: S->session_ttl_s = opt_int("session-ttl", optarg, 1, 86400 * 365); break;
        case O_NOPARAMS: S->no_params = 1; break;
        case O_LOG: logfile = optarg; break;
        case 'v': S->verbose = 1; break;
        case O_BENCH: bench = opt_int("bench", optarg, 1, 100000); break;
        case O_BENCHSTATS: bench_stats = optarg; break;
        case O_FXCS: fx_cs = optarg; break;
        case O_FXDS: fx_ds = optarg; break;
        case O_FXCDN: fx_cdn = optarg; break;
        case O_HELP: case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tstats-sim: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    struct in_addr ia;
    if (inet_pton(AF_INET, S->listen, &ia) != 1) {
        fprintf(stderr, "tstats-sim: --listen wants an IPv4 address, got '%s'\n", S->listen);
        return 2;
    }
    /* A wildcard listen address is not a place to connect to: advertise loopback. */
    if (ia.s_addr == 0) strcpy(S->host_for_urls, "127.0.0.1");
    else memcpy(S->host_for_urls, S->listen, sizeof S->host_for_urls);
    if (logfile && ts_log_open(logfile) < 0) {
        fprintf(stderr, "tstats-sim: cannot open log %s: %s\n", logfile, strerror(errno));
        return 2;
    }
    ts_log_set_level(S->verbose ? TS_LOG_DEBUG : TS_LOG_INFO);
    S->start_ms = ts_now_ms();
    pthread_mutex_init(&S->fault_lock, NULL);
    pthread_mutex_init(&S->to_lock, NULL);
    if (fx_cdn && !fx_cs && !fx_ds) {
        fprintf(stderr, "tstats-sim: --fixture-cdn needs --fixture-cachestats and --fixture-dsstats\n");
        return 2;
    }
    if (fx_cs || fx_ds) {
        char err[512];
        if (!fx_cs || !fx_ds) {
            fprintf(stderr, "tstats-sim: fixture mode needs both --fixture-cachestats and --fixture-dsstats\n");
            return 2;
        }
        if (cdns_given && S->ncdn != 1) {
            fprintf(stderr, "tstats-sim: fixture mode serves exactly one CDN (--cdns %d)\n", S->ncdn);
            return 2;
        }
        if (ts_sim_fixture_load(fx_cs, fx_ds, fx_cdn ? fx_cdn : "CDN-in-a-Box", err, sizeof err) < 0) {
            ts_error("%s", err);
            fprintf(stderr, "tstats-sim: %s\n", err);
            return 2;
        }
    }
    ts_sim_build_model();
    if (S->fixture) ts_sim_fixture_apply_model();

    if (bench) {
        if (!bench_stats) {
            static char ciab[4096];
            size_t n = 0;
            for (int i = 0; ts_sim_ciab_cache_stat(i); i++)
                n += (size_t)snprintf(ciab + n, sizeof ciab - n, "%s%s", i ? "," : "", ts_sim_ciab_cache_stat(i));
            bench_stats = ciab;
        }
        ts_sim_bench(bench, "", 0);
        ts_sim_bench(bench, bench_stats, 1);
        return 0;
    }

    /* Signals are taken synchronously by main; every MHD thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Monitors: K ONLINE ones per CDN plus one OFFLINE one (index K) that clients must ignore. */
    S->nmon = S->ncdn * (S->mon_per_cdn + 1);
    S->mons = calloc((size_t)S->nmon, sizeof *S->mons);
    for (int k = 0, i = 0; k < S->ncdn; k++) {
        for (int j = 0; j <= S->mon_per_cdn; j++, i++) {
            sim_monitor *m = &S->mons[i];
            m->cdn = k;
            m->index = j;
            m->offline = j == S->mon_per_cdn;
            m->fd = -1;
            if (ts_sim_monitor_listen(m, 0) < 0 || ts_sim_monitor_start(m) < 0) {
                ts_error("cannot start monitor %s:%d: %s", S->cdns[k].name, j, strerror(errno));
                return 1;
            }
        }
    }
    ts_sim_build_servers();

    sim_monitor tom;
    memset(&tom, 0, sizeof tom);
    if (ts_sim_monitor_listen(&tom, S->to_port) < 0) {
        ts_error("cannot listen for TO on %s:%d: %s", S->listen, S->to_port, strerror(errno));
        return 1;
    }
    S->to_port = tom.port;
    S->to_fd = tom.fd;
    S->to_d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO |
                                   MHD_USE_ERROR_LOG,
                               0, NULL, NULL, ts_sim_to_handler, NULL, MHD_OPTION_LISTEN_SOCKET, S->to_fd,
                               MHD_OPTION_NOTIFY_COMPLETED, ts_sim_to_completed, NULL,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    if (!S->to_d) {
        ts_error("cannot start the TO server");
        return 1;
    }
    for (int i = 0; i < nfaults; i++) {
        char err[256];
        if (ts_sim_fault_spec(faults[i], err, sizeof err) < 0) {
            ts_error("--fault %s: %s", faults[i], err);
            fprintf(stderr, "tstats-sim: --fault %s: %s\n", faults[i], err);
            return 2;
        }
    }

    ts_buf rb;
    ts_buf_init(&rb);
    write_ready(&rb);
    if (S->ready_file) {
        /* Write then rename, so a watcher never reads half a file. */
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", S->ready_file, (int)getpid());
        FILE *fp = fopen(tmp, "w");
        if (!fp || fwrite(rb.data, 1, rb.len, fp) != rb.len || fputc('\n', fp) == EOF || fclose(fp) != 0 ||
            rename(tmp, S->ready_file) != 0) {
            ts_error("cannot write ready file %s: %s", S->ready_file, strerror(errno));
            return 1;
        }
    }
    fwrite(rb.data, 1, rb.len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    ts_info("ready: TO on %s:%d, %d monitors, %d caches", S->host_for_urls, S->to_port, S->nmon, S->ncache);

    int sig = 0;
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP)
        ts_info("SIGHUP ignored");
    ts_info("signal %d: shutting down", sig);
    atomic_store(&S->stopping, 1);
    MHD_stop_daemon(S->to_d);
    for (int i = 0; i < S->nmon; i++) {
        sim_monitor *m = &S->mons[i];
        if (m->d) MHD_stop_daemon(m->d);
        for (int g = 0; g < m->ngrave; g++) MHD_stop_daemon(m->graveyard[g]);
    }
    if (S->ready_file) unlink(S->ready_file);
    for (int k = 0; k < S->ncdn; k++)
        for (int i = 0; i < SIM_PCACHE; i++) {
            sim_pentry *e = &S->cdns[k].pc[i];
            free(e->key);
            ts_sim_payload_unref(e->raw);
            ts_sim_payload_unref(e->gz);
        }
    ts_sim_fixture_free();
    ts_sim_payload_unref(S->servers_raw);
    ts_sim_payload_unref(S->servers_gz);
    for (int i = 0; i < S->nsessions; i++) free(S->sessions[i]);
    free(S->sessions);
    free(S->session_exp);
    free(S->summaries);
    for (int i = 0; i < S->nparam_cache; i++) free(S->param_cache[i]);
    for (int i = 0; i < S->nparam_ds; i++) free(S->param_ds[i]);
    free(S->param_cache);
    free(S->param_ds);
    for (int i = ts_sim_ciab_ncache_stats(); i < S->nstat; i++) free((char *)S->stats[i].name);
    free(S->stats);
    free(S->cg_names);
    free(S->caches);
    free(S->cdns);
    free(S->mons);
    ts_buf_free(&rb);
    ts_info("stopped");
    return 0;
}
