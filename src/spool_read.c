/* The spool's record reader (C core): what is on disk is input, so every
 * field is checked before it is believed, and each kind of damage is told
 * apart (corrupt record, garbage, torn tail) for src/spool.c to count and
 * log. The format is described in include/ts_spool.h. */
#include "ts_spool_read.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "ts_spool_fmt.h"
#include "ts_spool_rec.h"

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

/* blen bytes of the body at file offset `from` into raw at `at` = raw->len
 * (NUL after them); raw->len is not moved. */
static ts_spool_rd_kind read_body(ts_spool_rd *rd, uint64_t from, ts_buf *raw, size_t at, size_t blen) {
    ts_buf_reserve(raw, blen + 1);
    size_t got = 0;
    while (got < blen) {
        ssize_t n = pread(rd->fd, raw->data + at + got, blen - got, (off_t)(from + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return rd->err = errno, TS_SPOOL_RD_ERROR;
        if (n == 0) break;
        got += (size_t)n;
    }
    if (got < blen) return torn_to_end(rd);
    raw->data[at + blen] = '\0';
    return TS_SPOOL_RD_RECORD;
}

/* The body read (at `body`): its checksum where the segment is not this
 * run's, then what a checksum cannot prove. Line protocol is then in dst
 * already; compact points are encoded into it (rd->body_at / body_len set
 * either way, dst->len moved past the body). */
static ts_spool_rd_kind check_body(ts_spool_rd *rd, int ver, const unsigned char *h, const unsigned char *ph,
                                   size_t body_off, const char *body, size_t blen, ts_buf *dst) {
    /* Segments this process wrote in this run were checked when they were
     * made: what comes back from them is what append had in memory. Anything
     * older (a previous run, a crash) is checked in full. */
    if (!rd->trusted) {
        uint32_t pc = ts_spool_sum(ver, 0, ph, body_off);
        pc = ts_spool_sum(ver, pc, body, blen);
        if (pc != ts_get32(h + 12)) return corrupt(rd, "payload checksum mismatch");
    }
    uint32_t nl = ts_get32(ph);
    unsigned dbl = ph[5], rpl = ph[6];
    /* a checksum only proves what was written; check it is what we write */
    const char *db = (const char *)ph + PAY_HDR, *rp = db + dbl;
    if (memchr(db, '\0', dbl) || memchr(rp, '\0', rpl) || nl == 0) return corrupt(rd, "inconsistent payload");
    if (ph[7] == TS_SPOOL_KIND_LP) {
        if (body[blen - 1] != '\n' || (!rd->trusted && ts_spool_count_lines(body, blen) != nl))
            return corrupt(rd, "inconsistent payload");
        /* series by series, as compact records are decoded */
        ts_spool_lp_by_series(dst->data + dst->len, blen);
        rd->body_at = dst->len;
        rd->body_len = blen;
        dst->len += blen;
        return TS_SPOOL_RD_RECORD;
    }
    /* compact points are always decoded with every bound checked: what
     * comes out is line protocol made by the encoder, never bytes from disk */
    size_t at = dst->len;
    const char *why = NULL;
    if (ts_spool_rec_decode((const unsigned char *)body, blen, (ts_precision)ph[4], nl, dst, &why) < 0)
        return corrupt(rd, why);
    rd->body_at = at;
    rd->body_len = dst->len - at;
    return TS_SPOOL_RD_RECORD;
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
    if (kind > TS_SPOOL_KIND_COMPACT || prec > TS_PREC_H || dbl == 0 || dbl > 127 || rpl > 127 ||
        PAY_HDR + dbl + rpl >= len) {
        /* checked before the checksum: a wrong header cannot be a record we wrote either way */
        return corrupt(rd, payload_crc_ok(rd->fd, ver, off, len, ts_get32(h + 12)) ? "bad payload header"
                                                                             : "payload checksum mismatch");
    }
    size_t body_off = PAY_HDR + dbl + rpl, blen = (size_t)len - body_off;
    /* line protocol goes straight into dst; compact points into scratch
     * first, then encoded into dst */
    ts_buf own;
    ts_buf_init(&own);
    ts_buf *raw = kind == TS_SPOOL_KIND_LP ? dst : rd->scratch ? rd->scratch : &own;
    size_t at = kind == TS_SPOOL_KIND_LP ? dst->len : 0;
    if (raw != dst) raw->len = 0;
    ts_spool_rd_kind k = read_body(rd, off + REC_HDR + body_off, raw, at, blen);
    if (k == TS_SPOOL_RD_RECORD) k = check_body(rd, ver, h, ph, body_off, raw->data + at, blen, dst);
    ts_buf_free(&own);
    if (k != TS_SPOOL_RD_RECORD) return k;
    const char *db = (const char *)ph + PAY_HDR, *rp = db + dbl;
    memcpy(rd->db, db, dbl);
    rd->db[dbl] = '\0';
    memcpy(rd->rp, rp, rpl);
    rd->rp[rpl] = '\0';
    rd->precision = (ts_precision)prec;
    rd->lines = nl;
    rd->kind = (int)kind;
    rd->time_ms = (int64_t)ts_get64(ph + 8);
    return TS_SPOOL_RD_RECORD;
}
