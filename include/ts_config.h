/* Configuration (C side): config.lua is loaded and validated by
 * lua/options.lua (the one option table, which holds every default); C turns
 * the resolved table into one typed struct per load and every C module reads
 * that struct. A setting C reads that options.lua does not define is a
 * start-up error, never a silent default. */
#ifndef TS_CONFIG_H
#define TS_CONFIG_H
#include <lua.h>
#include <stdint.h>
#include "ts_writer.h"

typedef struct ts_settings {
    char *log_level, *log_file, *log_format;
    char *state_dir, *script_dir;
    int64_t polling_interval, publishing_interval, config_interval, daily_summary_interval;   /* s */
    double shutdown_timeout;            /* s */
    int summary_enabled;
    struct {
        double timeout, connect_timeout;   /* s */
        int gzip;
        int64_t max_sample_age;            /* s */
        char *non_numeric;                 /* "skip" | "zero" */
        int64_t max_payload_bytes;
    } collect;
    struct {
        char **urls;                       /* NULL-terminated */
        char *mode;                        /* "failover" | "mirror" */
        int nurls;
        char *user, *password;
        int insecure, gzip;
        char *ca_file, *ca_path, *client_cert, *client_key;   /* TLS; NULL = unset */
        double timeout;                    /* s */
        int64_t max_publish_size, max_buffer_bytes, max_inflight;
    } influxdb;
    struct {
        int enabled;
        char *dir;                         /* NULL: <state_dir>/spool */
        int64_t max_bytes, segment_bytes, replay_rate;
        char *fsync;                       /* "interval" | "always" | "never" */
        double fsync_interval;             /* s */
    } spool;
    struct {
        int64_t memory_limit;              /* bytes of Lua heap */
        int64_t hook_budget;               /* instructions per mapping call */
        int64_t poll_budget_ms;            /* CPU ms per endpoint and poll, all mapping calls */
    } lua;
    struct {
        char *listen;                      /* NULL: the HTTP listener is off */
        char *user, *password, *token;
        int64_t health_intervals;
    } http;
} ts_settings;

/* Loads FILE (or the embedded default config when NULL), validates it with
 * lua/options.lua, builds the settings, and on success makes both current
 * (the table as tstats.config). On failure the previous ones stay and -1 is
 * returned (logged). */
int ts_config_load(lua_State *L, const char *file);
/* The settings of the last successful load (NULL before one). Valid until
 * the next successful load: read what you need, do not keep the pointer
 * across a reload. */
const ts_settings *ts_config_settings(lua_State *L);
/* Writer options from the settings; the strings point into s. */
void ts_config_writer_opts(const ts_settings *s, ts_writer_opts *o);

#endif
