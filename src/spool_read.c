/* The spool's record reader (C core): what is on disk is input, so every
 * field is checked before it is believed, and each kind of damage is told
 * apart (corrupt record, garbage, torn tail) for src/spool.c to count and
 * log. The format is described in include/ts_spool.h. */
#include "ts_spool_read.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "ts_spool_fmt.h"

#define REC_HDR TS_SPOOL_REC_HDR
#define PAY_HDR TS_SPOOL_PAY_HDR

ts_spool_rd_kind ts_spool_rd_segment(ts_spool_rd *rd, uint64_t id) {
    unsigned char h[TS_SPOOL_SEG_HDR];
    ssize_t n = pread(rd->fd, h, sizeof h, 0);
    if (n < 0) return rd->err = errno, TS_SPOOL_RD_ERROR;
    if (n < (ssize_t)sizeof h) return TS_SPOOL_RD_TORN;
    if (memcmp(h, ts_spool_seg_magic, 8) != 0 || ts_get64(h + 8) != id) {
        rd->why = "bad segment header";
        return TS_SPOOL_RD_CORRUPT;
    }
    return TS_SPOOL_RD_RECORD;
}

/* Offset of the next plausible record header in [from, end), or end. */
static uint64_t resync(int fd, uint64_t from, uint64_t end) {
    unsigned char win[65536];
    uint64_t off = from;
    while (off + REC_HDR <= end) {
        size_t want = end - off < sizeof win ? (size_t)(end - off) : sizeof win;
        ssize_t n = pread(fd, win, want, (off_t)off);
        if (n < (ssize_t)REC_HDR) break;
        for (size_t i = 0; i + REC_HDR <= (size_t)n; i++) {
            if (win[i] != 'T') continue;   /* both magics start "TSR" */
            if (ts_spool_hdr_ok(win + i)) return off + i;
        }
        /* the last REC_HDR-1 bytes may begin a header split by the window */
        off += (uint64_t)n - (REC_HDR - 1);
    }
    return end;
}

/* Whether the payload at `off` matches its checksum (error path only: tells
 * a damaged record from a well-formed one we do not understand). */
static int payload_crc_ok(int fd, int ver, uint64_t off, uint64_t len, uint32_t want) {
    ts_buf tmp;
    ts_buf_init(&tmp);
    ts_buf_reserve(&tmp, (size_t)len + 1);
    ssize_t n = pread(fd, tmp.data, (size_t)len, (off_t)(off + REC_HDR));
    int ok = n == (ssize_t)len && ts_spool_sum(ver, 0, tmp.data, (size_t)len) == want;
    ts_buf_free(&tmp);
    return ok;
}

static ts_spool_rd_kind corrupt(ts_spool_rd *rd, const char *why) {
    rd->why = why;
    return TS_SPOOL_RD_CORRUPT;
}

static ts_spool_rd_kind torn_to_end(ts_spool_rd *rd) {
    /* shorter on disk than we thought, or cut: nothing after it can be trusted */
    rd->next = rd->size;
    return TS_SPOOL_RD_TORN;
}

ts_spool_rd_kind ts_spool_rd_next(ts_spool_rd *rd, uint64_t off, ts_buf *dst) {
    rd->skipped = 0;
    rd->next = off;
    uint64_t remain = rd->size - off;
    unsigned char h[REC_HDR];
    if (remain < REC_HDR) return rd->is_open ? TS_SPOOL_RD_WAIT : torn_to_end(rd);
    ssize_t n = pread(rd->fd, h, REC_HDR, (off_t)off);
    if (n < 0) return rd->err = errno, TS_SPOOL_RD_ERROR;
    if (n < (ssize_t)REC_HDR) return torn_to_end(rd);
    int ver = ts_spool_hdr_ok(h);
    if (!ver) {
        uint64_t next = resync(rd->fd, off + 1, rd->size);
        rd->skipped = next - off;
        rd->next = next;
        /* garbage up to the end of a closed segment is its torn tail
         * (e.g. blocks a power loss left zeroed) */
        if (next == rd->size && !rd->is_open) return TS_SPOOL_RD_TORN;
        return corrupt(rd, "bad record header");
    }
    uint64_t len = ts_get32(h + 4);
    if (len > remain - REC_HDR) {
        if (rd->is_open) return TS_SPOOL_RD_WAIT;   /* cannot happen: appends commit whole records */
        rd->skipped = remain;
        return torn_to_end(rd);
    }
    rd->next = off + REC_HDR + len;
    if (len < PAY_HDR + 2) return corrupt(rd, "short payload");
    /* The payload in two reads: its header with db and rp, then the body
     * straight into the destination buffer (no copy of megabytes). */
    unsigned char ph[PAY_HDR + 254];
    size_t hl = len < sizeof ph ? (size_t)len : sizeof ph;
    n = pread(rd->fd, ph, hl, (off_t)(off + REC_HDR));
    if (n < 0) return rd->err = errno, TS_SPOOL_RD_ERROR;
    if ((size_t)n < hl) return torn_to_end(rd);
    uint32_t nl = ts_get32(ph);
    unsigned prec = ph[4], dbl = ph[5], rpl = ph[6], kind = ph[7];
    if (kind != 0 || prec > TS_PREC_H || dbl == 0 || dbl > 127 || rpl > 127 || PAY_HDR + dbl + rpl >= len) {
        /* checked before the checksum: a wrong header cannot be a record we wrote either way */
        return corrupt(rd, payload_crc_ok(rd->fd, ver, off, len, ts_get32(h + 12)) ? "bad payload header"
                                                                             : "payload checksum mismatch");
    }
    size_t body_off = PAY_HDR + dbl + rpl, blen = (size_t)len - body_off;
    size_t at = dst->len;
    ts_buf_reserve(dst, blen + 1);
    size_t got = 0;
    while (got < blen) {
        n = pread(rd->fd, dst->data + at + got, blen - got, (off_t)(off + REC_HDR + body_off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return rd->err = errno, TS_SPOOL_RD_ERROR;
        if (n == 0) break;
        got += (size_t)n;
    }
    if (got < blen) return torn_to_end(rd);
    char *body = dst->data + at;
    body[blen] = '\0';
    /* Segments this process wrote in this run were checked when they were
     * made: what comes back from them is what append had in memory. Anything
     * older (a previous run, a crash) is checked in full. */
    if (!rd->trusted) {
        uint32_t pc = ts_spool_sum(ver, 0, ph, body_off);
        pc = ts_spool_sum(ver, pc, body, blen);
        if (pc != ts_get32(h + 12)) return corrupt(rd, "payload checksum mismatch");
    }
    /* a checksum only proves what was written; check it is what we write */
    const char *db = (const char *)ph + PAY_HDR, *rp = db + dbl;
    if (memchr(db, '\0', dbl) || memchr(rp, '\0', rpl) || body[blen - 1] != '\n' || nl == 0 ||
        (!rd->trusted && ts_spool_count_lines(body, blen) != nl))
        return corrupt(rd, "inconsistent payload");
    dst->len = at + blen;
    memcpy(rd->db, db, dbl);
    rd->db[dbl] = '\0';
    memcpy(rd->rp, rp, rpl);
    rd->rp[rpl] = '\0';
    rd->precision = (ts_precision)prec;
    rd->lines = nl;
    rd->time_ms = (int64_t)ts_get64(ph + 8);
    rd->body_at = at;
    rd->body_len = blen;
    return TS_SPOOL_RD_RECORD;
}
