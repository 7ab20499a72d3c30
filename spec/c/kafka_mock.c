/* tstats-kafka-mock: test helper (C, librdkafka; not part of tstats). Hosts
 * a librdkafka mock cluster, a Kafka without a broker installation, for
 * runtime specs: prints "bootstrap.servers=HOST:PORT,..." on stdout, then
 * reads commands, one per line, from a FIFO (--control):
 *   down | up            all brokers refuse connections / accept them again
 *   dump TOPIC FILE      every message of TOPIC from the beginning into FILE,
 *                        one per line: partition TAB key TAB value (written
 *                        to FILE.tmp, renamed when complete)
 *   quit
 *   tstats-kafka-mock --control FIFO [--brokers N] [--topic NAME] [--partitions N] */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafka_consumer.h"

static const char *g_bootstraps;
static int g_partitions = 4;

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dump(const char *topic, const char *file) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    FILE *out = fopen(tmp, "w");
    if (!out) return -1;
    rd_kafka_t *rk = kafka_consumer_from_start(g_bootstraps, "tstats-kafka-mock", topic, g_partitions);
    if (!rk) {
        fclose(out);
        return -1;
    }
    int eofs = 0;
    long n = 0;
    long long deadline = mono_ms() + 60000;
    while (eofs < g_partitions && mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) eofs++;
        else if (!m->err) {
            fprintf(out, "%d\t%.*s\t%.*s\n", (int)m->partition, (int)m->key_len, m->key ? (const char *)m->key : "",
                    (int)m->len, m->payload ? (const char *)m->payload : "");
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    fclose(out);
    if (eofs < g_partitions) return -1;
    rename(tmp, file);
    printf("dumped %s: %ld messages\n", topic, n);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    const char *control = NULL, *topic = "tstats";
    int brokers = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--control")) control = argv[i + 1];
        else if (!strcmp(argv[i], "--brokers")) brokers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--topic")) topic = argv[i + 1];
        else if (!strcmp(argv[i], "--partitions")) g_partitions = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "tstats-kafka-mock: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!control) {
        fprintf(stderr, "usage: tstats-kafka-mock --control FIFO [--brokers N] [--topic NAME] [--partitions N]\n");
        return 2;
    }
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "0", e, sizeof e);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof e);
    if (!rk) return 1;
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) return 1;
    g_bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    rd_kafka_mock_topic_create(mc, topic, g_partitions, brokers < 3 ? brokers : 3);
    /* O_RDWR: the FIFO never reports end of file when a writer closes */
    int fd = open(control, O_RDWR);
    if (fd < 0) {
        fprintf(stderr, "tstats-kafka-mock: %s: %s\n", control, strerror(errno));
        return 1;
    }
    FILE *in = fdopen(fd, "r");
    printf("bootstrap.servers=%s\n", g_bootstraps);
    fflush(stdout);
    char line[4096];
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\r\n")] = '\0';
        char cmd[32] = "", a[1024] = "", b[2048] = "";
        if (sscanf(line, "%31s %1023s %2047s", cmd, a, b) < 1) continue;
        if (!strcmp(cmd, "down")) {
            rd_kafka_mock_broker_set_down(mc, -1);
            printf("brokers down\n");
        } else if (!strcmp(cmd, "up")) {
            rd_kafka_mock_broker_set_up(mc, -1);
            printf("brokers up\n");
        } else if (!strcmp(cmd, "dump") && *a && *b) {
            if (dump(a, b) != 0) printf("dump %s failed\n", a);
        } else if (!strcmp(cmd, "quit")) {
            break;
        } else {
            printf("unknown command: %s\n", line);
        }
        fflush(stdout);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
