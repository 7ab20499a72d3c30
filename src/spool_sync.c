/* The spool's disk syncs off the event loop (C core): a helper thread with a
 * FIFO of jobs (segment fdatasync, directory fsync, position-file save). The
 * spool (src/spool.c) asks and reads back what is durable; nothing else in
 * the core is touched by the thread. */
#include "ts_spool_sync.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_spool_fmt.h"

enum { JOB_DATA, JOB_DIR, JOB_POS };

typedef struct job {
    struct job *next;
    int kind;
    int fd;              /* JOB_DATA: owned by the job */
    uint64_t seg, seq;
    char *file, *name;   /* JOB_POS */
    uint64_t off;
} job;

struct ts_spool_syncer {
    char *dir;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv, done_cv;
    job *head, *tail;
    int running;         /* a job taken off the queue and not finished */
    int stop;
    ts_spool_sync_state st;
    ts_spool_sync_hook hook;
    void *hook_arg;
};

static void job_free(job *j) {
    if (j->kind == JOB_DATA && j->fd >= 0) close(j->fd);
    free(j->file);
    free(j->name);
    free(j);
}

static int job_run(ts_spool_syncer *y, job *j) {
    int err = 0;
    if (j->kind == JOB_DATA) {
        if (fdatasync(j->fd) != 0) err = errno;
    } else if (j->kind == JOB_DIR) {
        ts_spool_fsync_dir(y->dir);
    } else {
        ts_spool_pos_write(y->dir, j->file, j->name, j->seg, j->off, 1, ".s.tmp", &err);
    }
    return err;
}

static void *thread_main(void *arg) {
    ts_spool_syncer *y = arg;
    pthread_mutex_lock(&y->mu);
    for (;;) {
        while (!y->head && !y->stop) pthread_cond_wait(&y->cv, &y->mu);
        if (!y->head) break;   /* stop, and nothing left */
        job *j = y->head;
        y->head = j->next;
        if (!y->head) y->tail = NULL;
        y->running = 1;
        pthread_mutex_unlock(&y->mu);
        if (y->hook) y->hook(y->hook_arg);
        int err = job_run(y, j);
        pthread_mutex_lock(&y->mu);
        y->running = 0;
        if (j->kind == JOB_DATA) {
            y->st.fsyncs++;
            /* a failed fdatasync leaves the data in the kernel; it is not durable */
            if (!err && j->seq > y->st.durable_seq) y->st.durable_seq = j->seq;
        }
        if (err) {
            y->st.failures++;
            y->st.last_errno = err;
        }
        job_free(j);
        pthread_cond_broadcast(&y->done_cv);
    }
    pthread_mutex_unlock(&y->mu);
    return NULL;
}

ts_spool_syncer *ts_spool_syncer_new(const char *dir, ts_spool_sync_hook hook, void *hook_arg) {
    ts_spool_syncer *y = calloc(1, sizeof *y);
    if (!y) abort();
    y->dir = strdup(dir);
    if (!y->dir) abort();
    y->hook = hook;
    y->hook_arg = hook_arg;
    pthread_mutex_init(&y->mu, NULL);
    pthread_cond_init(&y->cv, NULL);
    pthread_cond_init(&y->done_cv, NULL);
    /* the thread takes no signal: the daemon's SIGTERM / SIGHUP go to the
     * loop (which may block them only after the spool is open) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&y->th, NULL, thread_main, y) != 0) abort();
    pthread_setname_np(y->th, "tstats-sync");   /* its CPU apart in top and perf (comm) */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return y;
}

void ts_spool_syncer_free(ts_spool_syncer *y) {
    if (!y) return;
    pthread_mutex_lock(&y->mu);
    y->stop = 1;
    pthread_cond_signal(&y->cv);
    pthread_mutex_unlock(&y->mu);
    pthread_join(y->th, NULL);
    pthread_mutex_destroy(&y->mu);
    pthread_cond_destroy(&y->cv);
    pthread_cond_destroy(&y->done_cv);
    free(y->dir);
    free(y);
}

static void enqueue(ts_spool_syncer *y, job *j) {
    /* y->mu held */
    if (y->tail) y->tail->next = j;
    else y->head = j;
    y->tail = j;
    pthread_cond_signal(&y->cv);
}

void ts_spool_sync_data(ts_spool_syncer *y, int fd, uint64_t seg, uint64_t seq, int close_fd) {
    pthread_mutex_lock(&y->mu);
    job *t = y->tail;
    if (t && t->kind == JOB_DATA && t->seg == seg) {
        /* one waiting fdatasync of this segment covers the later appends too */
        if (seq > t->seq) t->seq = seq;
        pthread_mutex_unlock(&y->mu);
        if (close_fd) close(fd);   /* the waiting job has its own descriptor */
        return;
    }
    pthread_mutex_unlock(&y->mu);
    job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->kind = JOB_DATA;
    j->fd = close_fd ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 0);
    j->seg = seg;
    j->seq = seq;
    pthread_mutex_lock(&y->mu);
    if (j->fd < 0) {
        y->st.failures++;
        y->st.last_errno = errno;
        pthread_mutex_unlock(&y->mu);
        free(j);
        return;
    }
    enqueue(y, j);
    pthread_mutex_unlock(&y->mu);
}

void ts_spool_sync_dir(ts_spool_syncer *y) {
    job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->kind = JOB_DIR;
    j->fd = -1;
    pthread_mutex_lock(&y->mu);
    enqueue(y, j);
    pthread_mutex_unlock(&y->mu);
}

void ts_spool_sync_pos(ts_spool_syncer *y, const char *file, const char *name, uint64_t seg, uint64_t off) {
    job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->kind = JOB_POS;
    j->fd = -1;
    j->file = strdup(file);
    j->name = strdup(name);
    if (!j->file || !j->name) abort();
    j->seg = seg;
    j->off = off;
    pthread_mutex_lock(&y->mu);
    enqueue(y, j);
    pthread_mutex_unlock(&y->mu);
}

void ts_spool_sync_get(ts_spool_syncer *y, ts_spool_sync_state *st) {
    pthread_mutex_lock(&y->mu);
    *st = y->st;
    st->busy = y->head != NULL || y->running;
    pthread_mutex_unlock(&y->mu);
}

void ts_spool_sync_wait(ts_spool_syncer *y) {
    pthread_mutex_lock(&y->mu);
    while (y->head || y->running) pthread_cond_wait(&y->done_cv, &y->mu);
    pthread_mutex_unlock(&y->mu);
}
