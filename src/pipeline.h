/* pipeline.h: the publishing connection: PUBLISH commands pipelined over one socket, replies
 * matched in order, an outbox while Redis is unreachable, reconnect through a short-lived
 * connector thread. No Python.h: the host (the Python type) drives it through hooks, the way
 * hiredis's async layer is driven by an adapter.
 * Threading: every function here runs on the loop thread; only the connector thread (internal)
 * runs elsewhere, and it talks back through queue records. */
#ifndef VPS_PIPELINE_H
#define VPS_PIPELINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "compat.h"
#include "queue.h"

/* How a publish ended, reported through hooks.done. */
enum {
    VPS_PUB_OK = 0,      /* Redis replied with the receiver count */
    VPS_PUB_REDIS_ERROR, /* Redis replied with an error (detail has its text) */
    VPS_PUB_QUEUED,      /* Redis unreachable: kept in the outbox, will be sent later */
    VPS_PUB_DROPPED,     /* pushed out of a full outbox (oldest first) */
};

/* Notices for the host's log and stats. */
enum {
    VPS_NOTE_CONNECTED = 1, /* the publishing connection is up */
    VPS_NOTE_LOST,          /* it went down (text: why); publishes now queue */
    VPS_NOTE_CONNECT_FAILED,/* an attempt failed (text: why) */
    VPS_NOTE_OVERFLOW,      /* the outbox dropped its oldest messages (text: how many) */
};

typedef struct vps_pipeline_hooks {
    void *host;
    /* watch fd for readability/writability (0/1 each); fd is closed only after (0, 0) */
    void (*watch)(void *host, int fd, int readable, int writable);
    /* arrange one call of vps_pipeline_flush soon (e.g. loop.call_soon) */
    void (*schedule_flush)(void *host);
    /* a publish that had a token finished; status VPS_PUB_*; detail may be NULL */
    void (*done)(void *host, void *token, int status, const char *detail);
    /* VPS_NOTE_* with a text */
    void (*notice)(void *host, int what, const char *text);
} vps_pipeline_hooks;

typedef struct vps_cmd {
    struct vps_cmd *next;
    void *token;  /* the host's waiter, or NULL once resolved */
    double queued_at; /* vps_now() when published */
    unsigned resends; /* connection losses it was in flight for */
    size_t len;
    char buf[];   /* RESP text of the command */
} vps_cmd;

typedef struct vps_pipeline {
    const vps_endpoint *ep;    /* borrowed, immutable */
    vps_queue *queue;          /* borrowed: the connector posts PIPE_* records here */
    vps_pipeline_hooks hooks;
    size_t max_messages, max_bytes; /* outbox bounds */
    double backoff_min, backoff_max;

    int fd;                    /* -1 when not connected */
    vps_cmd *sent_head, *sent_tail; /* written, waiting for their replies, oldest first */
    size_t sent_count;
    vps_cmd *out_head, *out_tail;   /* not yet fully written (the outbox), oldest first */
    size_t out_count, out_bytes, out_off; /* out_off: bytes of out_head already written */
    redisReader *reader;
    int want_write, flush_scheduled;
    int hold;                  /* set by the host: connect, but do not write yet */

    /* the connector thread: alive only while connecting */
    pthread_t connector;
    int connector_alive;
    vps_signal cancel_sig;     /* readable when close() stops the connector */
    vps_signal nudge;          /* readable when the host saw Redis come back: retry now */
    volatile int cancel;
    uint64_t generation;       /* attempt counter; stale records are ignored */
    uint64_t seed;
    int outage;                /* an attempt failed or the connection dropped; cleared on connect */

    uint64_t ok, failed, queued, dropped, reconnects, overflow_reported;
} vps_pipeline;

/* Returns a new, unconnected pipeline or NULL with err set. Loop thread. */
vps_pipeline *vps_pipeline_new(const vps_endpoint *ep, vps_queue *queue,
                               const vps_pipeline_hooks *hooks, size_t max_messages,
                               size_t max_bytes, double backoff_min, double backoff_max,
                               vps_err *err);

/* Queue PUBLISH channel payload. Returns VPS_PUB_OK when the token is kept: hooks.done is
 * called with it exactly once, later or already during this call; VPS_PUB_QUEUED when Redis
 * is known to be unreachable (the message is in the outbox, the token was not kept); or -1 on
 * ENOMEM (nothing queued). Loop thread. */
int vps_pipeline_publish(vps_pipeline *p, const char *chan, size_t chan_len, const char *payload,
                         size_t payload_len, void *token);
/* Write as much pending output as the socket takes. Loop thread. */
void vps_pipeline_flush(vps_pipeline *p);
/* The socket is readable: read and complete publishes. Loop thread. */
void vps_pipeline_on_readable(vps_pipeline *p);
/* A PIPE_CONNECTED / PIPE_FAILED record from the queue. Takes ownership of r. Loop thread. */
void vps_pipeline_on_record(vps_pipeline *p, vps_record *r);
/* Cut the connector's current reconnect delay short. Loop thread. */
void vps_pipeline_nudge(vps_pipeline *p);
/* Make sure a connection exists or is being made. Loop thread. */
void vps_pipeline_connect(vps_pipeline *p);
/* Close the connection and stop connecting; every waiting token is completed as QUEUED and
 * unacknowledged commands go back to the outbox. Joins the connector (call without the GIL
 * if it may take long; it returns within milliseconds). Loop thread. */
void vps_pipeline_close(vps_pipeline *p);
/* Hold writes (on) while the host's own listener is not subscribed, so that what was queued
 * during an outage is not published before anyone here can receive it; off flushes. Loop
 * thread. */
void vps_pipeline_set_hold(vps_pipeline *p, int on);
/* Release (hooks.done with VPS_PUB_QUEUED) every waiting token published before `before`
 * (vps_now() seconds); the commands stay queued or in flight. Returns how many were released
 * and stores in *oldest the publish time of the oldest token still waiting (0 if none).
 * Loop thread. */
size_t vps_pipeline_expire(vps_pipeline *p, double before, double *oldest);
/* Commands not yet acknowledged (outbox + in flight). Loop thread. */
size_t vps_pipeline_pending(const vps_pipeline *p);
/* Free a closed pipeline; drop(token) is called for every token still held. Loop thread. */
void vps_pipeline_free(vps_pipeline *p, void (*drop)(void *token));
/* Forget a pipeline inherited through fork(): close descriptors without joining a thread
 * that does not exist in the child; tokens are passed to drop. */
void vps_pipeline_abandon(vps_pipeline *p, void (*drop)(void *token));

#endif
