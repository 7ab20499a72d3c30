/* Kafka target configuration (C core, librdkafka; no Lua here): checks the
 * target's options and builds librdkafka's configuration from them, refusing
 * the properties that a kafka.* option owns so that one setting never
 * silently overrides the other. */
#include "ts_kafka_conf.h"

#include <stdio.h>
#include <string.h>

static int conf_set(rd_kafka_conf_t *c, const char *name, const char *value, char *err, size_t errlen) {
    char e[256];
    if (rd_kafka_conf_set(c, name, value, e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka: %s = \"%s\": %s", name, value, e);
        return -1;
    }
    return 0;
}

/* Properties that a kafka.* option sets, and the option to use instead. */
static const char *const owned_props[][2] = {
    {"bootstrap.servers", "kafka.brokers"},   {"metadata.broker.list", "kafka.brokers"},
    {"acks", "kafka.acks"},                   {"request.required.acks", "kafka.acks"},
    {"enable.idempotence", "kafka.idempotence"}, {"compression.codec", "kafka.compression"},
    {"compression.type", "kafka.compression"},
    {"partitioner", "nothing: tstats partitions by series key with murmur2, as the Java client"},
    {"dr_msg_cb", "nothing (internal)"},
};

rd_kafka_conf_t *ts_kafka_conf_new(const ts_kafka_opts *o, char *err, size_t errlen) {
    if (!o->brokers || !*o->brokers) {
        snprintf(err, errlen, "kafka: kafka.brokers is empty");
        return NULL;
    }
    const char *acks = o->acks && *o->acks ? o->acks : "all";
    if (strcmp(acks, "all") && strcmp(acks, "-1") && strcmp(acks, "1") && strcmp(acks, "0")) {
        snprintf(err, errlen, "kafka: kafka.acks = \"%s\": must be all, 1 or 0", acks);
        return NULL;
    }
    if (o->idempotence && strcmp(acks, "all") && strcmp(acks, "-1")) {
        snprintf(err, errlen, "kafka: kafka.idempotence needs kafka.acks = \"all\" (it is \"%s\")", acks);
        return NULL;
    }
    if ((!o->topic || !*o->topic) && (!o->db_topics || !o->db_topics[0])) {
        snprintf(err, errlen, "kafka: neither kafka.topic nor kafka.topics is set");
        return NULL;
    }
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *compression = o->compression && *o->compression ? o->compression : "none";
    /* Defaults first, then the user's properties. linger: a poll's points
     * come at once, so fewer and fuller batches cost less CPU than the 5 ms
     * default. */
    if (conf_set(c, "bootstrap.servers", o->brokers, err, errlen) || conf_set(c, "acks", acks, err, errlen) ||
        conf_set(c, "enable.idempotence", o->idempotence ? "true" : "false", err, errlen) ||
        conf_set(c, "compression.codec", compression, err, errlen) || conf_set(c, "linger.ms", "100", err, errlen) ||
        conf_set(c, "queue.buffering.max.messages", "1000000", err, errlen) ||
        conf_set(c, "queue.buffering.max.kbytes", "262144", err, errlen) ||
        conf_set(c, "log.queue", "true", err, errlen) || conf_set(c, "client.id", "tstats", err, errlen))
        goto fail;
    for (const char *const *p = o->properties; p && p[0] && p[1]; p += 2) {
        for (size_t i = 0; i < sizeof owned_props / sizeof owned_props[0]; i++) {
            if (strcmp(p[0], owned_props[i][0]) == 0) {
                snprintf(err, errlen, "kafka: kafka.properties[\"%s\"]: set %s instead", p[0], owned_props[i][1]);
                goto fail;
            }
        }
        if (conf_set(c, p[0], p[1], err, errlen)) goto fail;
    }
    return c;
fail:
    rd_kafka_conf_destroy(c);
    return NULL;
}

int ts_kafka_conf_permanent(rd_kafka_resp_err_t e) {
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return 1;
    default:
        return 0;
    }
}
