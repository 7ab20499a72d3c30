/* Daemon-side glue of the Kafka target (C core): kafka.* read from the
 * resolved configuration into ts_kafka_opts, the batches of a poll fed to the
 * target as line protocol, and the Lua primitives tstats._kafka_lines (the
 * points Lua writes, e.g. daily summaries) and tstats.kafka_stats(). */
#ifndef TS_KAFKA_GLUE_H
#define TS_KAFKA_GLUE_H
#include <lua.h>
#include "ts_batch.h"
#include "ts_kafka.h"
#include "ts_kafka_feed.h"

typedef struct ts_kafka_cfg {
    int enabled;
    ts_kafka_opts o;
    char *strs[256];           /* strings o points at */
    int nstrs;
    const char *db_topics[130];   /* NULL-terminated pairs */
    const char *props[258];       /* NULL-terminated pairs */
} ts_kafka_cfg;
/* Reads kafka.*; returns 0, or -1 with a message in err (nothing enabled). */
int ts_kafka_cfg_read(lua_State *L, ts_kafka_cfg *c, char *err, size_t errlen);
void ts_kafka_cfg_free(ts_kafka_cfg *c);

/* The target from the configuration, or NULL (kafka.enabled false, or an
 * error already logged: *failed set). The kafka.* it was made from is kept
 * as the running configuration. */
ts_kafka *ts_kafka_from_config(lua_State *L, ts_loop *loop, int *failed);
/* The running kafka.* (NULL before ts_kafka_from_config); set_running takes
 * over c (malloc'd, read with ts_kafka_cfg_read) and frees the previous one. */
const ts_kafka_cfg *ts_kafka_cfg_running(void);
void ts_kafka_cfg_set_running(ts_kafka_cfg *c);
/* "kafka: <what> <brokers> (topic, format, ...)" */
void ts_kafka_describe(const ts_kafka_cfg *c, const char *what);
/* The feed's mark for c: half of kafka.max_buffer_bytes, at most 64 MiB. */
size_t ts_kafka_feed_high(const ts_kafka_cfg *c);

/* Kafka's position in the spool for k, holding back above half of
 * kafka.max_buffer_bytes (at most 64 MiB); NULL when the consumer cannot be
 * opened (logged: Kafka is then fed from memory). */
ts_kafka_feed *ts_kafka_feed_from_config(lua_State *L, ts_kafka *k, ts_spool *s, ts_loop *loop);

/* Hands b to submit (the writer, which appends it to the spool and takes
 * it) and sees that Kafka gets it too: through its spool position when the
 * append took it, from memory when the spool refused it and the last append
 * had failed already (disk full); without a feed, from memory. Points the
 * spool refused at the first failure cannot reach Kafka: counted
 * (kafka_points_missed) and logged. */
void ts_kafka_submit_through(ts_kafka *k, ts_kafka_feed *feed, ts_spool *spool, ts_batch *b,
                             void (*submit)(void *ud, ts_batch *b), void *ud);

/* Feeds a batch (left unchanged) to the target as its line protocol. */
void ts_kafka_submit_batch(ts_kafka *k, const ts_batch *b);

/* Registers tstats._kafka_lines(db, rp, precision, body) and
 * tstats.kafka_stats() for k (NULL: both absent / nil). */
void ts_kafka_lua_open(lua_State *L, ts_kafka *k);

/* "kafka: delivered=... pending=..." for the daemon's periodic stats line
 * (feed may be NULL). */
void ts_kafka_report(const ts_kafka *k, const ts_kafka_feed *feed);
#endif
