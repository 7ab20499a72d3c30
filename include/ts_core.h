/* Internal interfaces of the tstats core (C side): the Lua runtime, the
 * configuration, mapping caches, collection and the daemon. The Lua side
 * (lua/) decides; these modules apply its decisions. */
#ifndef TS_CORE_H
#define TS_CORE_H
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include "ts_http.h"
#include "ts_writer.h"

#include "ts_version.h"
#define TS_VERSION_STRING TS_VERSION

/* ---- Lua runtime (lua_rt.c) ---------------------------------------------- */
typedef struct ts_lua_limits {
    size_t mem_bytes;        /* cap on Lua heap; 0 = unlimited */
    long instr_budget;       /* instructions per protected call of a hook; 0 = unlimited */
} ts_lua_limits;

/* Creates the state inside a protected call: stock libs, cjson, the module
 * searcher (script_dir first, then the scripts embedded in the binary), and
 * the `tstats` API. Returns NULL (after logging) on failure. */
lua_State *ts_lua_new(const char *script_dir, const ts_lua_limits *lim);
void ts_lua_close(lua_State *L);
void ts_lua_set_script_dir(lua_State *L, const char *dir);
/* Protected call with traceback: function + nargs are on the stack. On error
 * logs "<what>: <file:line: msg>" with the traceback at debug level, bumps the
 * lua_errors counter, leaves nothing on the stack and returns -1. `budget`
 * instructions at most (0 = unlimited). */
int ts_lua_pcall(lua_State *L, int nargs, int nresults, const char *what, long budget);
/* Counts a Lua error (lua_errors) and logs "what: first line", the rest of
 * msg (a traceback) at debug. */
void ts_lua_log_error(const char *what, const char *msg);
/* require(mod) in protected mode; pushes the module on success. */
int ts_lua_require(lua_State *L, const char *mod);
/* Does an embedded module of that name exist? */
int ts_lua_embedded_exists(const char *mod);
size_t ts_lua_mem_used(lua_State *L);

/* ---- API (lua_api.c) ---------------------------------------------------- */
typedef struct ts_api_ctx {
    ts_loop *loop;           /* may be NULL (no async writer) */
    ts_writer *writer;       /* queue for tstats.influx.write; may be NULL */
    int *async_wake;         /* set to 1 when a request of an async coroutine is over; may be NULL */
} ts_api_ctx;
void ts_api_open(lua_State *L);            /* sets global `tstats` and package.loaded.tstats */
void ts_json_records_open(lua_State *L);   /* adds tstats.json.decode_records */
/* Streaming decoder of Traffic Ops records (src/json_records.c): keeps the
 * listed top-level scalar fields of each record of {"response":[...]}. */
typedef struct ts_records ts_records;
ts_records *ts_records_push_new(lua_State *L, int fields_idx); /* pushes its owning userdata */
int ts_records_feed(ts_records *c, const char *p, size_t n);    /* 0, or -1 once the JSON is invalid */
int ts_records_finish(ts_records *c);                          /* 0, or -1 (see ts_records_error) */
const char *ts_records_error(const ts_records *c);
void ts_records_push(lua_State *L, const ts_records *c);       /* the array of records */
void ts_api_set_ctx(lua_State *L, ts_api_ctx *ctx);
/* Requests made by coroutine co run on ctx->loop and yield until done. */
void ts_api_mark_async(lua_State *L, lua_State *co);
ts_api_ctx *ts_api_get_ctx(lua_State *L);

/* ---- configuration (config.c) -------------------------------------------- */
/* Loads FILE (or the embedded default config when NULL), validates it with
 * lua/options.lua, and leaves the resolved table in the registry as the
 * current config (and as tstats.config). Returns 0 or -1 (logged). */
int ts_config_load(lua_State *L, const char *file);
/* Getters on the current config by dotted path ("influxdb.max_publish_size"). */
int64_t ts_cfg_int(lua_State *L, const char *path, int64_t def);
double ts_cfg_num(lua_State *L, const char *path, double def);
int ts_cfg_bool(lua_State *L, const char *path, int def);
/* Returned string is copied into buf (truncated to n); returns buf or def. */
const char *ts_cfg_str(lua_State *L, const char *path, const char *def, char *buf, size_t n);
/* Pushes the value at path (nil when absent). */
void ts_cfg_push(lua_State *L, const char *path);
/* The influxdb.* section, read in one place for the daemon's writer, the CLI's
 * writer and tstats._influx_post. `o` and `conn` point into the struct's own
 * strings: use it where it was read (do not copy it), then free it. */
typedef struct ts_influx_cfg {
    char *urls[65];            /* NULL-terminated, at most 64 */
    int nurls;
    char user[256], password[256];
    ts_writer_opts o;
    ts_influx_conn conn;
} ts_influx_cfg;
int ts_influx_cfg_read(lua_State *L, ts_influx_cfg *c);   /* returns nurls */
void ts_influx_cfg_free(ts_influx_cfg *c);

/* ---- mapping caches (mapping.c) ------------------------------------------ */
/* A mapper binds one endpoint's Lua mapping module (and its ctx table) to a
 * cache of answers. One "generation" owns the memory of every answer; batches
 * hold references to it, so a refresh never frees memory a pending point uses. */
typedef struct ts_mapper ts_mapper;
ts_mapper *ts_mapper_new(lua_State *L, const char *module, int ctx_ref, const char *label);
const ts_stat_map *ts_mapper_stat(ts_mapper *m, const char *name, size_t len);
const ts_entity_map *ts_mapper_entity(ts_mapper *m, const char *name, size_t len);
/* Per-sample hook (only for stats that asked for one). Returns 0 keep (value
 * may be replaced), -1 drop. */
int ts_mapper_sample_hook(ts_mapper *m, const ts_stat_map *st, double *value, const char *text, int64_t time_ms);
const ts_map_owner *ts_mapper_owner(ts_mapper *m);
void ts_mapper_release(ts_mapper *m);     /* the plan lets go; memory stays while batches use it */
uint64_t ts_mapper_lua_calls(const ts_mapper *m);

/* The per-sample path: turns one scanned sample into a compact point by the
 * cached answers. Returns TS_SAMPLE_OK with *out filled, or why it was skipped. */
enum { TS_SAMPLE_OK = 0, TS_SAMPLE_NO_TIME, TS_SAMPLE_OLD, TS_SAMPLE_NON_NUMERIC, TS_SAMPLE_HOOK_DROP };
int ts_mapper_sample(ts_mapper *m, const ts_stat_map *st, const ts_entity_map *ent, const char *val, size_t vlen,
                     int val_kind, int64_t time_ms, int has_time, int64_t cutoff_ms, int zero_non_numeric,
                     ts_cpoint *out);

/* Value parsing shared by collection and tests: TM sends numbers as strings.
 * Returns 1 and *out on a finite number, 0 otherwise. */
int ts_parse_number(const char *s, size_t n, double *out);

/* ---- collection (collect.c) ---------------------------------------------- */
typedef struct ts_collector ts_collector;
typedef void (*ts_emit_fn)(void *ud, ts_batch *b);  /* takes ownership */
ts_collector *ts_collector_new(lua_State *L, ts_loop *loop, ts_emit_fn emit, void *emit_ud);
/* Where compact batches come from (default ts_batch_new_compact): `points` and
 * `runs` are the endpoint's last poll, for ts_batch_reserve. */
typedef ts_batch *(*ts_batch_source_fn)(void *ud, const ts_dest *d, const ts_map_owner *owner, size_t points,
                                        size_t runs);
void ts_collector_set_batch_source(ts_collector *c, ts_batch_source_fn fn, void *ud);
/* Install the plan table at the top of the stack (from lua/plan.lua). Returns the
 * number of endpoints, or -1 on a malformed plan (old plan kept). */
int ts_collector_set_plan(ts_collector *c, int plan_index);
/* Start one poll of every endpoint (async on the loop). */
void ts_collector_poll(ts_collector *c);
int ts_collector_busy(const ts_collector *c);  /* fetches still running */
typedef struct ts_collect_stats {
    uint64_t polls, endpoints_ok, endpoints_failed, points, bytes;
    uint64_t skipped_non_numeric, skipped_old, skipped_no_time, lua_calls;
} ts_collect_stats;
void ts_collector_get_stats(const ts_collector *c, ts_collect_stats *s);
/* Shutdown order: ts_collector_close, ts_loop_free (aborts fetches), ts_collector_free. */
void ts_collector_close(ts_collector *c);
void ts_collector_free(ts_collector *c);

/* ---- daemon and CLI (daemon.c, cli.c) ------------------------------------ */
typedef enum { TS_MODE_RUN, TS_MODE_ONCE, TS_MODE_DRYRUN } ts_mode;
int ts_daemon_main(const char *config_file, ts_mode mode);
int ts_cli_main(int argc, char **argv);
/* `once`'s exit status from the poll's outcome (cli.c): 1 when an endpoint failed, 3 when
 * the plan came from the cached Traffic Ops data, else rc. */
int ts_cli_once_status(lua_State *L, ts_collector *coll, int rc);

#endif
