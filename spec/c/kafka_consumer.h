/* A read-back consumer for tests and test tools (librdkafka): a topic's
 * partitions 0..partitions-1 from their beginning, assigned directly (no
 * group rebalance, no commits), each partition's end reported as
 * RD_KAFKA_RESP_ERR__PARTITION_EOF so a reader knows when it has it all. */
#ifndef TS_SPEC_KAFKA_CONSUMER_H
#define TS_SPEC_KAFKA_CONSUMER_H
#include <librdkafka/rdkafka.h>

/* NULL when librdkafka refuses to make it; the caller closes and destroys it. */
static inline rd_kafka_t *kafka_consumer_from_start(const char *bootstraps, const char *group, const char *topic,
                                                    int partitions) {
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, e, sizeof e);
    rd_kafka_conf_set(c, "group.id", group, e, sizeof e);
    rd_kafka_conf_set(c, "enable.partition.eof", "true", e, sizeof e);
    rd_kafka_conf_set(c, "enable.auto.commit", "false", e, sizeof e);
    rd_kafka_conf_set(c, "log_level", "0", e, sizeof e);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, e, sizeof e);
    if (!rk) return NULL;
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(tp, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, tp);
    rd_kafka_topic_partition_list_destroy(tp);
    return rk;
}

#endif
