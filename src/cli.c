/* Command line (C side): parses the global options and the subcommand; the
 * daemon modes run in C (daemon.c), every other subcommand is a Lua function
 * of lua/cli.lua called with the remaining arguments. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ts_cli.h"

#include "ts_api.h"
#include "ts_config.h"
#include "ts_daemon.h"
#include "ts_derive.h"
#include "ts_log.h"
#include "ts_lua.h"
#include "ts_version.h"
#include "ts_writer.h"

static const char USAGE[] =
    "usage: tstats [--config FILE] [--log-level LEVEL] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  run                       the daemon: poll Traffic Monitors, write InfluxDB, daily summaries\n"
    "  once                      one poll of every CDN, flush, exit non-zero if nothing was written\n"
    "  poll --dry-run            one poll, print the line protocol that would be written\n"
    "  check                     validate the configuration and print it (secrets masked)\n"
    "  options                   print every configuration key as a Markdown table\n"
    "  setup-influx              create the databases, retention policies and continuous queries (as ATC)\n"
    "  rollup --from D --to D [--cdn NAME] [--rollup NAME]   recompute daily summaries\n"
    "  backfill-cq --from D --to D   re-run the continuous queries over a past window, then the rollups\n"
    "  script FILE.lua [ARGS]    run a one-off operator script with the full Lua API\n"
    "  import-atc FILE [--out F] convert ATC's traffic_stats.cfg into a config.lua\n"
    "  sync --source URL --target URL [--database DB] [--days N]   copy InfluxDB data (ATC's sync_ts_databases)\n"
    "  grafana --out DIR         write Grafana provisioning: datasources and dashboards\n"
    "\n"
    "options:\n"
    "  --config FILE   configuration (Lua); default: the embedded config.lua\n"
    "  --log-level L   error | warn | info | debug (overrides log.level)\n"
    "  --help, --version\n";

/* Runs cli.<fn>(args) from lua/cli.lua with a writer available for async writes. */
static int run_lua_command(const char *config, const char *cmd, int argc, char **argv) {
    lua_State *L = ts_lua_new(0, ts_api_open);
    if (!L) return 1;
    int rc = 1;
    /* `options` must work without a loadable config. */
    if (strcmp(cmd, "options") != 0 && ts_config_load(L, config) != 0) { ts_lua_close(L); return 2; }
    const ts_settings *s = ts_config_settings(L);
    ts_loop *loop = ts_loop_new();
    ts_writer *w = NULL;
    if (s) {
        ts_lua_set_script_dir(L, s->script_dir);
        /* scripts run under the same heap cap as the daemon */
        ts_lua_set_memory_limit(L, (size_t)s->lua.memory_limit);
        ts_writer_opts o;
        ts_config_writer_opts(s, &o);
        if (s->influxdb.nurls > 0) w = ts_writer_new(loop, &o);
    }
    ts_api_ctx ctx = {loop, w, w ? ts_writer_influx(w) : NULL, NULL, NULL, NULL};   /* scripts block on their requests */
    ts_api_set_ctx(L, &ctx);
    if (ts_lua_require(L, "cli") == 0) {
        lua_getfield(L, -1, "main");
        lua_pushstring(L, cmd);
        lua_createtable(L, argc, 0);
        for (int i = 0; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i + 1);
        }
        lua_pushboolean(L, isatty(STDOUT_FILENO));
        if (ts_lua_pcall(L, 3, 1, cmd, 0) == 0) {
            rc = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : (lua_toboolean(L, -1) ? 0 : 1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    /* points a script queued asynchronously are written before we exit */
    if (w) {
        ts_writer_flush(w);
        size_t lost = ts_writer_drain(w, ts_mono_ms() + 30000);
        if (lost) { ts_error("%zu points could not be written", lost); if (rc == 0) rc = 1; }
        ts_writer_free(w);
    }
    ts_loop_free(loop);
    ts_lua_close(L);
    return rc;
}

static int check_config(const char *config) {
    lua_State *L = ts_lua_new(0, ts_api_open);
    if (!L) return 1;
    if (ts_config_load(L, config) != 0) {
        fprintf(stderr, "configuration %s is NOT valid\n", config ? config : "[embedded]config.lua");
        ts_lua_close(L);
        return 2;
    }
    int rc = 1;
    if (ts_lua_require(L, "options") == 0) {
        lua_getfield(L, -1, "dump");
        lua_getglobal(L, "tstats");
        lua_getfield(L, -1, "config");
        lua_remove(L, -2);
        if (ts_lua_pcall(L, 1, 1, "options.dump", 0) == 0) {
            printf("# configuration %s is valid\n%s\n", config ? config : "[embedded]config.lua", lua_tostring(L, -1));
            lua_pop(L, 1);
            rc = 0;
        }
        lua_pop(L, 1);
    }
    if (rc == 0) rc = ts_derive_check(L, config, stdout);
    ts_lua_close(L);
    return rc;
}

int ts_cli_main(int argc, char **argv) {
    const char *config = NULL, *level = NULL;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { fputs(USAGE, stdout); return 0; }
        if (strcmp(a, "--version") == 0) { printf("tstats %s (Lua %s)\n", TS_VERSION, LUA_RELEASE + 4); return 0; }
        if ((strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) && i + 1 < argc) { config = argv[++i]; continue; }
        if (strncmp(a, "--config=", 9) == 0) { config = a + 9; continue; }
        if (strcmp(a, "--log-level") == 0 && i + 1 < argc) { level = argv[++i]; continue; }
        if (a[0] == '-') { fprintf(stderr, "tstats: unknown option %s\n\n%s", a, USAGE); return 2; }
        break;
    }
    if (i >= argc) { fputs(USAGE, stderr); return 2; }
    const char *cmd = argv[i++];
    /* --config may also follow the command (but not a script's own args) */
    int rest = i;
    if (strcmp(cmd, "script") != 0) {
        for (int j = i; j < argc; j++) {
            if ((strcmp(argv[j], "--config") == 0 || strcmp(argv[j], "-c") == 0) && j + 1 < argc) {
                config = argv[j + 1];
                memmove(&argv[j], &argv[j + 2], sizeof(char *) * (size_t)(argc - j - 2));
                argc -= 2;
                j--;
            }
        }
    }
    if (level) {
        int lv = ts_log_parse_level(level);
        if (lv < 0) { fprintf(stderr, "tstats: unknown log level %s\n", level); return 2; }
        ts_log_set_level(lv);
        setenv("TSTATS_LOG_LEVEL", level, 1);   /* the embedded config reads it */
    }
    if (ts_http_global_init() != 0) { fprintf(stderr, "tstats: libcurl initialisation failed\n"); return 1; }
    int rc;
    if (strcmp(cmd, "run") == 0) rc = ts_daemon_main(config, TS_MODE_RUN);
    else if (strcmp(cmd, "once") == 0) rc = ts_daemon_main(config, TS_MODE_ONCE);
    else if (strcmp(cmd, "poll") == 0) {
        int dry = 0;
        for (int j = rest; j < argc; j++) if (strcmp(argv[j], "--dry-run") == 0) dry = 1;
        rc = ts_daemon_main(config, dry ? TS_MODE_DRYRUN : TS_MODE_ONCE);
    } else if (strcmp(cmd, "check") == 0) rc = check_config(config);
    else if (strcmp(cmd, "options") == 0 || strcmp(cmd, "setup-influx") == 0 || strcmp(cmd, "rollup") == 0 ||
             strcmp(cmd, "backfill-cq") == 0 || strcmp(cmd, "script") == 0 ||
             strcmp(cmd, "import-atc") == 0 || strcmp(cmd, "sync") == 0 || strcmp(cmd, "grafana") == 0)
        rc = run_lua_command(config, cmd, argc - rest, argv + rest);
    else { fprintf(stderr, "tstats: unknown command '%s'\n\n%s", cmd, USAGE); rc = 2; }
    ts_http_global_cleanup();
    return rc;
}
