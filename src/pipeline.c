/* pipeline.c: PUBLISH pipelining over one connection, the outbox, and the connector thread.
 * Threading: all entry points on the loop thread (driven by host hooks); the connector thread
 * only opens a connection and reports it through a queue record. */
#include "pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "conn.h"

#define MAX_IOV 256
#define READ_CHUNK (64 * 1024)

/* ---- the connector thread ------------------------------------------------------------ */

typedef struct connector_args {
    vps_pipeline *p;
    uint64_t generation;
    double first_delay;
} connector_args;

/* Connect with backoff until it works or close() cancels; posts PIPE_FAILED per failed
 * attempt and one PIPE_CONNECTED at the end. Connector thread; touches only p->ep, the cancel
 * pipe/flag and the queue. */
static void *connector_main(void *arg)
{
    connector_args a = *(connector_args *)arg;
    free(arg);
    vps_pipeline *p = a.p;
    uint64_t seed = a.generation * 0x9E3779B97F4A7C15ull + (uint64_t)(vps_now() * 1e9);
    double delay = a.first_delay;
    unsigned attempt = 0;
    vps_err err;
    for (;;) {
        if (delay > 0 && vps_pause(delay, &p->cancel_sig, &p->nudge) == VPS_CANCELLED)
            break;
        if (p->cancel)
            break;
        err.text[0] = '\0';
        int fd = vps_conn_open(p->ep, "vuemantics-pubsub:publisher", p->cancel_sig.rfd, &err);
        if (fd == VPS_CANCELLED)
            break;
        if (fd >= 0) {
            vps_record *r = vps_record_new(VPS_REC_PIPE_CONNECTED, 0);
            if (r == NULL) {
                vps_conn_abort(fd);
                vps_err_set(&err, "out of memory");
            } else {
                r->fd = fd;
                r->generation = a.generation;
                vps_queue_push(p->queue, r);
                break;
            }
        }
        vps_record *r = vps_record_text(VPS_REC_PIPE_FAILED, err.text, a.generation);
        if (r != NULL)
            vps_queue_push(p->queue, r);
        delay = vps_backoff_delay(attempt, p->backoff_min, p->backoff_max, &seed);
        if (attempt < 30)
            attempt++;
    }
    return NULL;
}

/* Join the connector if one ran. Loop thread. */
static void join_connector(vps_pipeline *p)
{
    if (!p->connector_alive)
        return;
    pthread_join(p->connector, NULL);
    p->connector_alive = 0;
}

/* Start a connector after `delay` seconds unless one is running. Loop thread. */
static void start_connector(vps_pipeline *p, double delay)
{
    if (p->connector_alive || p->fd >= 0)
        return;
    connector_args *a = malloc(sizeof *a);
    if (a == NULL)
        return;
    vps_signal_clear(&p->cancel_sig); /* a stale byte from an earlier close() */
    vps_signal_clear(&p->nudge);
    p->cancel = 0;
    a->p = p;
    a->generation = ++p->generation;
    a->first_delay = delay;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->connector, NULL, connector_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        free(a);
        if (p->hooks.notice)
            p->hooks.notice(p->hooks.host, VPS_NOTE_CONNECT_FAILED,
                            "cannot start the connector thread");
        return;
    }
    p->connector_alive = 1;
}

/* Ask the connector to stop and join it. Loop thread. */
static void cancel_connector(vps_pipeline *p)
{
    if (!p->connector_alive)
        return;
    p->cancel = 1;
    vps_signal_raise(&p->cancel_sig);
    join_connector(p);
}

/* ---- the command lists ------------------------------------------------------------------ */

static void finish(vps_pipeline *p, vps_cmd *c, int status, const char *detail)
{
    void *token = c->token;
    c->token = NULL;
    if (token != NULL)
        p->hooks.done(p->hooks.host, token, status, detail);
}

/* Drop the oldest unsent commands until the outbox fits its bounds; a partly written head
 * stays (it must be completed on the wire). Loop thread. */
static void enforce_bounds(vps_pipeline *p)
{
    uint64_t dropped = 0;
    while (p->out_count > p->max_messages || p->out_bytes > p->max_bytes) {
        vps_cmd **link = &p->out_head;
        vps_cmd *prev = NULL;
        if (p->out_off > 0) { /* keep the head that is half on the wire */
            prev = p->out_head;
            link = &p->out_head->next;
        }
        vps_cmd *victim = *link;
        if (victim == NULL)
            break;
        *link = victim->next;
        if (p->out_tail == victim)
            p->out_tail = prev;
        p->out_count--;
        p->out_bytes -= victim->len;
        finish(p, victim, VPS_PUB_DROPPED, NULL);
        free(victim);
        dropped++;
    }
    if (dropped > 0) {
        p->dropped += dropped;
        if (p->hooks.notice) {
            char text[128];
            snprintf(text, sizeof text,
                     "outbox full (%zu messages / %zu bytes): dropped the %llu oldest", p->max_messages,
                     p->max_bytes, (unsigned long long)dropped);
            p->hooks.notice(p->hooks.host, VPS_NOTE_OVERFLOW, text);
        }
    }
}

static void set_write_interest(vps_pipeline *p, int on)
{
    if (p->want_write == on || p->fd < 0)
        return;
    p->want_write = on;
    p->hooks.watch(p->hooks.host, p->fd, 1, on);
}

/* Put the commands written but not acknowledged back at the front of the outbox (Redis may or
 * may not have run them: at-least-once). A command that was in flight at MAX_RESENDS
 * connection losses is dropped as failed instead: it may be what makes Redis close the
 * connection. */
#define MAX_RESENDS 3
static void requeue_sent(vps_pipeline *p)
{
    vps_cmd *keep_head = NULL, *keep_tail = NULL;
    for (vps_cmd *c = p->sent_head, *next; c != NULL; c = next) {
        next = c->next;
        c->next = NULL;
        if (++c->resends > MAX_RESENDS) {
            p->failed++;
            finish(p, c, VPS_PUB_REDIS_ERROR, "connection lost with it in flight too many times");
            free(c);
            continue;
        }
        if (keep_tail)
            keep_tail->next = c;
        else
            keep_head = c;
        keep_tail = c;
        p->out_count++;
        p->out_bytes += c->len;
    }
    if (keep_head != NULL) {
        keep_tail->next = p->out_head;
        if (p->out_tail == NULL)
            p->out_tail = keep_tail;
        p->out_head = keep_head;
    }
    p->sent_head = p->sent_tail = NULL;
    p->sent_count = 0;
    p->out_off = 0;
}

/* Redis is unreachable: callers waiting on the outbox are released as QUEUED. */
static void enter_outage(vps_pipeline *p)
{
    p->outage = 1;
    for (vps_cmd *c = p->out_head; c != NULL; c = c->next) {
        if (c->token != NULL) {
            p->queued++;
            finish(p, c, VPS_PUB_QUEUED, NULL);
        }
    }
}

/* Tear the connection down after an error: unacknowledged commands go back to the front of
 * the outbox, every waiting caller is released as QUEUED, and a reconnect starts. */
static void lose_connection(vps_pipeline *p, const char *why)
{
    if (p->fd < 0)
        return;
    p->hooks.watch(p->hooks.host, p->fd, 0, 0);
    vps_conn_abort(p->fd);
    p->fd = -1;
    p->want_write = 0;
    requeue_sent(p);
    enter_outage(p);
    if (p->reader != NULL)
        vps_reader_free(p->reader);
    p->reader = NULL;
    p->reconnects++;
    if (p->hooks.notice)
        p->hooks.notice(p->hooks.host, VPS_NOTE_LOST, why);
    enforce_bounds(p);
    start_connector(p, vps_backoff_delay(0, p->backoff_min, p->backoff_max, &p->seed));
}

/* ---- public entry points ---------------------------------------------------------------- */

vps_pipeline *vps_pipeline_new(const vps_endpoint *ep, vps_queue *queue,
                               const vps_pipeline_hooks *hooks, size_t max_messages,
                               size_t max_bytes, double backoff_min, double backoff_max,
                               vps_err *err)
{
    vps_pipeline *p = calloc(1, sizeof *p);
    if (p == NULL) {
        vps_err_set(err, "out of memory");
        return NULL;
    }
    p->nudge.rfd = p->nudge.wfd = -1;
    if (vps_signal_open(&p->cancel_sig) < 0 || vps_signal_open(&p->nudge) < 0) {
        vps_err_set(err, "pipe(): %s", strerror(errno));
        vps_signal_close(&p->cancel_sig);
        vps_signal_close(&p->nudge);
        free(p);
        return NULL;
    }
    p->ep = ep;
    p->queue = queue;
    p->hooks = *hooks;
    p->max_messages = max_messages;
    p->max_bytes = max_bytes;
    p->backoff_min = backoff_min;
    p->backoff_max = backoff_max;
    p->fd = -1;
    p->seed = (uint64_t)(uintptr_t)p;
    return p;
}

void vps_pipeline_nudge(vps_pipeline *p)
{
    if (p->connector_alive)
        vps_signal_raise(&p->nudge);
}

void vps_pipeline_connect(vps_pipeline *p)
{
    if (p->fd < 0 && !p->connector_alive)
        start_connector(p, 0);
}

int vps_pipeline_publish(vps_pipeline *p, const char *chan, size_t chan_len, const char *payload,
                         size_t payload_len, void *token)
{
    char head[96];
    int hlen = snprintf(head, sizeof head, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n", chan_len);
    char mid[32];
    int mlen = snprintf(mid, sizeof mid, "\r\n$%zu\r\n", payload_len);
    size_t len = (size_t)hlen + chan_len + (size_t)mlen + payload_len + 2;
    vps_cmd *c = malloc(sizeof *c + len);
    if (c == NULL)
        return -1;
    char *w = c->buf;
    memcpy(w, head, (size_t)hlen);
    w += hlen;
    memcpy(w, chan, chan_len);
    w += chan_len;
    memcpy(w, mid, (size_t)mlen);
    w += mlen;
    memcpy(w, payload, payload_len);
    w += payload_len;
    memcpy(w, "\r\n", 2);
    c->len = len;
    c->next = NULL;
    c->queued_at = vps_now();
    c->resends = 0;
    int connected = p->fd >= 0;
    /* while Redis is known to be unreachable the caller does not wait; while a first
     * connection is merely being made, it waits for the acknowledgement as usual */
    int waits = connected || !p->outage;
    c->token = waits ? token : NULL;
    int was_idle = p->out_head == NULL && p->sent_head == NULL;
    if (p->out_tail)
        p->out_tail->next = c;
    else
        p->out_head = c;
    p->out_tail = c;
    p->out_count++;
    p->out_bytes += len;
    if (!connected) {
        enforce_bounds(p);
        vps_pipeline_connect(p);
        if (waits)
            return VPS_PUB_OK;
        p->queued++;
        return VPS_PUB_QUEUED;
    }
    if (was_idle && !p->hold) {
        /* nothing in flight: send now, one syscall, no extra loop iteration */
        vps_pipeline_flush(p);
    } else if (!p->flush_scheduled && !p->want_write && !p->hold) {
        /* a burst: let the other publishers of this loop iteration join one write */
        p->flush_scheduled = 1;
        p->hooks.schedule_flush(p->hooks.host);
    }
    /* c may be gone now (written, or dropped by a lost connection); its token was kept, and
     * hooks.done sees it exactly once, possibly already */
    if (p->fd >= 0)
        enforce_bounds(p);
    return VPS_PUB_OK;
}

void vps_pipeline_flush(vps_pipeline *p)
{
    p->flush_scheduled = 0;
    if (p->hold) {
        set_write_interest(p, 0);
        return;
    }
    while (p->fd >= 0 && p->out_head != NULL) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        for (vps_cmd *c = p->out_head; c != NULL && n < MAX_IOV; c = c->next, n++) {
            size_t off = n == 0 ? p->out_off : 0;
            iov[n].iov_base = c->buf + off;
            iov[n].iov_len = c->len - off;
        }
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)n;
        ssize_t wrote = sendmsg(p->fd, &msg, MSG_NOSIGNAL);
        if (wrote < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_write_interest(p, 1);
                return;
            }
            char why[128];
            snprintf(why, sizeof why, "write: %s", strerror(errno));
            lose_connection(p, why);
            return;
        }
        size_t left = (size_t)wrote;
        while (left > 0 && p->out_head != NULL) {
            vps_cmd *c = p->out_head;
            size_t rest = c->len - p->out_off;
            if (left < rest) {
                p->out_off += left;
                left = 0;
                break;
            }
            left -= rest;
            p->out_off = 0;
            p->out_head = c->next;
            if (p->out_head == NULL)
                p->out_tail = NULL;
            p->out_count--;
            p->out_bytes -= c->len;
            c->next = NULL;
            if (p->sent_tail)
                p->sent_tail->next = c;
            else
                p->sent_head = c;
            p->sent_tail = c;
            p->sent_count++;
        }
    }
    set_write_interest(p, 0);
}

void vps_pipeline_on_readable(vps_pipeline *p)
{
    char buf[READ_CHUNK];
    if (p->fd < 0)
        return;
    ssize_t n = recv(p->fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        char why[128];
        snprintf(why, sizeof why, "%s", n == 0 ? "connection closed by Redis" : strerror(errno));
        lose_connection(p, why);
        return;
    }
    if (vps_reader_feed(p->reader, buf, (size_t)n) != REDIS_OK) {
        lose_connection(p, "protocol error");
        return;
    }
    for (;;) {
        void *raw = NULL;
        if (vps_reader_next(p->reader, &raw) != REDIS_OK) {
            lose_connection(p, "protocol error");
            return;
        }
        if (raw == NULL)
            break;
        redisReply *reply = raw;
        vps_cmd *c = p->sent_head;
        if (c == NULL) {
            vps_reply_free(reply);
            lose_connection(p, "unexpected reply from Redis");
            return;
        }
        p->sent_head = c->next;
        if (p->sent_head == NULL)
            p->sent_tail = NULL;
        p->sent_count--;
        if (reply->type == REDIS_REPLY_ERROR) {
            p->failed++;
            vps_err e;
            vps_err_redacted(&e, "", reply->str, p->ep->password);
            finish(p, c, VPS_PUB_REDIS_ERROR, e.text);
        } else {
            p->ok++;
            finish(p, c, VPS_PUB_OK, NULL);
        }
        vps_reply_free(reply);
        free(c);
        if (p->fd < 0) /* a hook closed us */
            return;
    }
}

void vps_pipeline_on_record(vps_pipeline *p, vps_record *r)
{
    int stale = r->generation != p->generation;
    if (r->kind == VPS_REC_PIPE_CONNECTED) {
        /* a stale record's connector was joined by the close() that made it stale; the
         * current one may still be connecting and must not be waited for here */
        if (!stale)
            join_connector(p);
        if (stale || p->fd >= 0) {
            vps_conn_abort(r->fd);
        } else if ((p->reader = vps_reader_new()) == NULL) {
            vps_conn_abort(r->fd);
        } else {
            p->fd = r->fd;
            p->outage = 0;
            p->hooks.watch(p->hooks.host, p->fd, 1, 0);
            if (p->hooks.notice)
                p->hooks.notice(p->hooks.host, VPS_NOTE_CONNECTED, "");
            vps_pipeline_flush(p);
        }
    } else if (r->kind == VPS_REC_PIPE_FAILED && !stale) {
        enter_outage(p);
        if (p->hooks.notice)
            p->hooks.notice(p->hooks.host, VPS_NOTE_CONNECT_FAILED, r->data);
    }
    vps_record_free(r);
}

void vps_pipeline_close(vps_pipeline *p)
{
    cancel_connector(p);
    p->generation++; /* records still in the queue from the old connector are stale */
    if (p->fd >= 0) {
        p->hooks.watch(p->hooks.host, p->fd, 0, 0);
        vps_conn_abort(p->fd);
        p->fd = -1;
        p->want_write = 0;
    }
    requeue_sent(p);
    for (vps_cmd *c = p->out_head; c != NULL; c = c->next)
        finish(p, c, VPS_PUB_QUEUED, NULL);
    if (p->reader != NULL)
        vps_reader_free(p->reader);
    p->reader = NULL;
    p->flush_scheduled = 0;
}

void vps_pipeline_set_hold(vps_pipeline *p, int on)
{
    p->hold = on;
    if (!on && p->fd >= 0 && p->out_head != NULL)
        vps_pipeline_flush(p);
}

/* Release the expired tokens of one list; track the oldest remaining. */
static size_t expire_list(vps_pipeline *p, vps_cmd *c, double before, double *oldest)
{
    size_t n = 0;
    for (; c != NULL; c = c->next) {
        if (c->token == NULL)
            continue;
        if (c->queued_at < before) {
            finish(p, c, VPS_PUB_QUEUED, NULL);
            n++;
        } else if (*oldest == 0 || c->queued_at < *oldest) {
            *oldest = c->queued_at;
        }
    }
    return n;
}

size_t vps_pipeline_expire(vps_pipeline *p, double before, double *oldest)
{
    *oldest = 0;
    size_t n = expire_list(p, p->sent_head, before, oldest);
    n += expire_list(p, p->out_head, before, oldest);
    p->queued += n;
    return n;
}

size_t vps_pipeline_pending(const vps_pipeline *p)
{
    return p->out_count + p->sent_count;
}

static void free_list(vps_cmd *c, void (*drop)(void *token))
{
    while (c != NULL) {
        vps_cmd *next = c->next;
        if (c->token != NULL && drop != NULL)
            drop(c->token);
        free(c);
        c = next;
    }
}

void vps_pipeline_free(vps_pipeline *p, void (*drop)(void *token))
{
    if (p == NULL)
        return;
    cancel_connector(p);
    if (p->fd >= 0)
        vps_conn_abort(p->fd);
    free_list(p->sent_head, drop);
    free_list(p->out_head, drop);
    if (p->reader != NULL)
        vps_reader_free(p->reader);
    vps_signal_close(&p->cancel_sig);
    vps_signal_close(&p->nudge);
    free(p);
}

void vps_pipeline_abandon(vps_pipeline *p, void (*drop)(void *token))
{
    if (p == NULL)
        return;
    p->connector_alive = 0; /* that thread lives only in the parent */
    if (p->fd >= 0)
        close(p->fd);       /* a plain close: the parent still uses the connection */
    p->fd = -1;
    vps_pipeline_free(p, drop);
}
