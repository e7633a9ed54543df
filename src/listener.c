/* listener.c: the subscriber thread: connect, PSUBSCRIBE, read pmessages into the queue,
 * PING when idle, reconnect with backoff. Threading: runs on its own thread; never takes the
 * GIL, never touches a Python object; reports through queue records only. */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "conn.h"

#define READ_CHUNK (64 * 1024)

static const char PSUBSCRIBE_CMD[] = "*3\r\n$10\r\nPSUBSCRIBE\r\n$8\r\nupload:*\r\n$6\r\nuser:*\r\n";
static const char PING_CMD[] = "*1\r\n$4\r\nPING\r\n";

/* Queue an error/state record; a failed allocation drops it (it is informational). */
static void post_text(vps_listener *l, uint32_t kind, const char *text)
{
    vps_record *r = vps_record_text(kind, text, 0);
    if (r != NULL)
        vps_queue_push(l->queue, r);
}

/* Sleep `seconds` unless cancelled. Returns VPS_CANCELLED or 0. */
static int pause_for(vps_listener *l, double seconds)
{
    int w = vps_pause(seconds, &l->cancel_sig, &l->nudge);
    return w == VPS_CANCELLED || l->cancel ? VPS_CANCELLED : 0;
}

static int str_is(const redisReply *r, const char *s, size_t n)
{
    return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS
               ? r->len == n && memcmp(r->str, s, n) == 0
               : 0;
}

/* Turn one reply into records. 0, or VPS_ERROR with err set. */
static int handle_reply(vps_listener *l, redisReply *reply, vps_chain *chain, int *confirmed,
                        vps_err *err)
{
    if (reply->type == REDIS_REPLY_ERROR) {
        vps_err_redacted(err, "Redis error on the subscriber connection: ", reply->str,
                         l->ep->password);
        return VPS_ERROR;
    }
    if (!VPS_IS_PUSH_FRAME(reply->type) || reply->elements < 1)
        return 0; /* a PONG status outside subscribe mode cannot happen; ignore */
    redisReply **e = reply->element;
    if (reply->elements == 4 && str_is(e[0], "pmessage", 8)) {
        redisReply *chan = e[2], *payload = e[3];
        if (chan->type != REDIS_REPLY_STRING || payload->type != REDIS_REPLY_STRING)
            return 0;
        vps_record *r = vps_record_new(VPS_REC_MESSAGE, chan->len + payload->len);
        if (r == NULL) {
            vps_err_set(err, "out of memory for a %zu-byte message", payload->len);
            return VPS_ERROR;
        }
        r->chan_len = (uint32_t)chan->len;
        memcpy(r->data, chan->str, chan->len);
        memcpy(r->data + chan->len, payload->str, payload->len);
        r->payload_len = payload->len;
        vps_chain_add(chain, r);
        return 0;
    }
    if (str_is(e[0], "psubscribe", 10)) {
        if (++*confirmed == 2) {
            vps_record *r = vps_record_new(VPS_REC_SUBSCRIBED, 0);
            if (r != NULL)
                vps_chain_add(chain, r);
            l->subscribed = 1;
        }
    }
    /* "pong" frames only prove liveness, which any read already did */
    return 0;
}

/* Run one subscribed session on fd until it fails or stop is asked.
 * Returns VPS_CANCELLED, or VPS_ERROR with err set. */
static int run_session(vps_listener *l, int fd, vps_err *err)
{
    int rc = VPS_ERROR, confirmed = 0;
    double now = vps_now();
    double subscribe_deadline = now + l->ep->connect_timeout;
    double last_rx = now, ping_sent = 0;
    char *buf = l->buf;
    redisReader *reader = l->reader = vps_reader_new();
    vps_chain *chain = &l->chain;
    if (reader == NULL) {
        vps_err_set(err, "out of memory");
        goto done;
    }
    rc = vps_conn_write_all(fd, PSUBSCRIBE_CMD, sizeof PSUBSCRIBE_CMD - 1, l->cancel_sig.rfd,
                            subscribe_deadline, err);
    if (rc != 0)
        goto done;
    for (;;) {
        if (!vps_queue_wait_room(l->queue, &l->cancel)) {
            rc = VPS_CANCELLED;
            goto done;
        }
        double deadline;
        if (confirmed < 2)
            deadline = subscribe_deadline;
        else if (ping_sent > 0)
            deadline = ping_sent + l->opts.ping_timeout;
        else
            deadline = last_rx + l->opts.ping_interval;
        int w = vps_conn_wait(fd, POLLIN, l->cancel_sig.rfd, deadline);
        if (w == VPS_CANCELLED || l->cancel) {
            rc = VPS_CANCELLED;
            goto done;
        }
        if (w < 0) {
            vps_err_set(err, "poll: %s", strerror(errno));
            rc = VPS_ERROR;
            goto done;
        }
        now = vps_now();
        if (w == 0) {
            if (confirmed < 2) {
                vps_err_set(err, "PSUBSCRIBE not confirmed within %.3g s", l->ep->connect_timeout);
                rc = VPS_ERROR;
                goto done;
            }
            if (ping_sent > 0) {
                vps_err_set(err, "no reply to PING within %.3g s; connection presumed dead",
                            l->opts.ping_timeout);
                rc = VPS_ERROR;
                goto done;
            }
            rc = vps_conn_write_all(fd, PING_CMD, sizeof PING_CMD - 1, l->cancel_sig.rfd,
                                    now + l->opts.ping_timeout, err);
            if (rc != 0)
                goto done;
            ping_sent = now;
            l->pings++;
            continue;
        }
        ssize_t n = recv(fd, buf, READ_CHUNK, 0);
        if (n == 0) {
            vps_err_set(err, "connection closed by Redis");
            rc = VPS_ERROR;
            goto done;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            vps_err_set(err, "read: %s", strerror(errno));
            rc = VPS_ERROR;
            goto done;
        }
        last_rx = now;
        ping_sent = 0;
        if (vps_reader_feed(reader, buf, (size_t)n) != REDIS_OK) {
            vps_err_set(err, "protocol error: %s", reader->errstr);
            rc = VPS_ERROR;
            goto done;
        }
        for (;;) {
            void *reply = NULL;
            if (vps_reader_next(reader, &reply) != REDIS_OK) {
                vps_err_set(err, "protocol error: %s", reader->errstr);
                rc = VPS_ERROR;
                goto done;
            }
            if (reply == NULL)
                break;
            rc = handle_reply(l, reply, chain, &confirmed, err);
            vps_reply_free(reply);
            if (rc != 0)
                goto done;
        }
        vps_queue_push_chain(l->queue, chain);
    }
done:
    /* whatever was parsed before a failure is still delivered, in order */
    vps_queue_push_chain(l->queue, chain);
    l->subscribed = 0;
    if (reader != NULL)
        vps_reader_free(reader);
    l->reader = NULL;
    return rc;
}

static void *listener_main(void *arg)
{
    vps_listener *l = arg;
    uint64_t seed = (uint64_t)(uintptr_t)l ^ (uint64_t)(vps_now() * 1e9);
    unsigned attempt = 0;
    vps_err err;
    while (!l->cancel) {
        if (l->buf == NULL && (l->buf = malloc(READ_CHUNK)) == NULL) {
            post_text(l, VPS_REC_LISTENER_DOWN, "out of memory");
            if (pause_for(l, l->opts.backoff_max) == VPS_CANCELLED)
                break;
            continue;
        }
        err.text[0] = '\0';
        int fd = vps_conn_open(l->ep, "vuemantics-pubsub:listener", l->cancel_sig.rfd, &err);
        if (fd == VPS_CANCELLED)
            break;
        if (fd >= 0) {
            double began = vps_now();
            l->fd = fd;
            int rc = run_session(l, fd, &err);
            l->fd = -1;
            vps_conn_abort(fd);
            if (rc == VPS_CANCELLED)
                break;
            /* a session that lived a while earns a fresh backoff */
            if (vps_now() - began > l->opts.backoff_max)
                attempt = 0;
        }
        l->reconnects++;
        post_text(l, VPS_REC_LISTENER_DOWN, err.text);
        if (pause_for(l, vps_backoff_delay(attempt, l->opts.backoff_min, l->opts.backoff_max,
                                           &seed)) == VPS_CANCELLED)
            break;
        if (attempt < 30)
            attempt++;
    }
    return NULL;
}

vps_listener *vps_listener_start(const vps_endpoint *ep, const vps_listener_opts *opts,
                                 vps_queue *queue, vps_err *err)
{
    vps_listener *l = calloc(1, sizeof *l);
    if (l == NULL) {
        vps_err_set(err, "out of memory");
        return NULL;
    }
    l->nudge.rfd = l->nudge.wfd = -1;
    l->fd = -1;
    if (vps_signal_open(&l->cancel_sig) < 0 || vps_signal_open(&l->nudge) < 0) {
        vps_err_set(err, "pipe(): %s", strerror(errno));
        vps_signal_close(&l->cancel_sig);
        vps_signal_close(&l->nudge);
        free(l);
        return NULL;
    }
    l->ep = ep;
    l->opts = *opts;
    l->queue = queue;
    /* the thread must not receive the process's signals (SIGINT belongs to Python) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&l->thread, NULL, listener_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        vps_err_set(err, "cannot start the listener thread: %s", strerror(rc));
        vps_signal_close(&l->cancel_sig);
        vps_signal_close(&l->nudge);
        free(l);
        return NULL;
    }
    return l;
}

void vps_listener_stop(vps_listener *l)
{
    l->cancel = 1;
    vps_signal_raise(&l->cancel_sig);
    vps_queue_kick(l->queue);
    pthread_join(l->thread, NULL);
}

void vps_listener_free(vps_listener *l)
{
    if (l == NULL)
        return;
    free(l->buf);
    if (l->reader != NULL) /* only after fork(): a live thread always frees its reader */
        vps_reader_free(l->reader);
    for (vps_record *r = l->chain.head, *next; r != NULL; r = next) {
        next = r->next;
        vps_record_free(r);
    }
    vps_signal_close(&l->cancel_sig);
    vps_signal_close(&l->nudge);
    free(l);
}

void vps_listener_nudge(vps_listener *l)
{
    vps_signal_raise(&l->nudge);
}

void vps_listener_abandon(vps_listener *l)
{
    if (l->fd >= 0) /* the parent's subscriber connection: let go of our copy */
        close(l->fd);
    vps_listener_free(l);
}
