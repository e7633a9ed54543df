/* listener.h: the subscriber connection and the thread that runs it (PSUBSCRIBE upload:* user:*,
 * liveness PINGs, reconnect with backoff). No Python.h: the thread never touches Python.
 * Threading: vps_listener_start/stop/free on the loop thread; the rest runs on the thread. */
#ifndef VPS_LISTENER_H
#define VPS_LISTENER_H

#include <pthread.h>
#include <stdint.h>

#include "common.h"
#include "compat.h"
#include "queue.h"

typedef struct vps_listener_opts {
    double ping_interval;  /* idle seconds before a PING */
    double ping_timeout;   /* seconds to wait for any reply after a PING */
    double backoff_min, backoff_max; /* reconnect delays, seconds */
} vps_listener_opts;

typedef struct vps_listener {
    const vps_endpoint *ep;   /* borrowed from the publisher; immutable */
    vps_listener_opts opts;   /* immutable after start */
    vps_queue *queue;         /* borrowed; where records go */
    pthread_t thread;
    vps_signal cancel_sig;      /* readable once stop was asked */
    vps_signal nudge;           /* readable when the host saw Redis come back: retry now */
    volatile int cancel;        /* set by stop; read by the thread */
    /* the thread's session state, kept here (not on its stack) so that a forked child, where
     * the thread does not exist, can still free it */
    int fd;                   /* the session's socket, -1 between sessions */
    char *buf;                /* READ_CHUNK bytes for recv() */
    redisReader *reader;      /* the current session's parser */
    vps_chain chain;          /* records parsed and not yet pushed */
    /* written by the thread, read by anyone: plain counters, torn reads are harmless */
    volatile uint64_t reconnects;
    volatile uint64_t pings;
    volatile int subscribed;
} vps_listener;

/* Start the thread. Returns a new listener or NULL with err set. Loop thread. */
vps_listener *vps_listener_start(const vps_endpoint *ep, const vps_listener_opts *opts,
                                 vps_queue *queue, vps_err *err);
/* Ask the thread to stop and join it (returns within milliseconds: every wait of the
 * thread watches the cancel pipe). Call with the GIL released. Loop thread. */
void vps_listener_stop(vps_listener *l);
/* Cut the current reconnect delay short (Redis is known to be back). Any thread. */
void vps_listener_nudge(vps_listener *l);
/* Free a stopped listener. Loop thread. */
void vps_listener_free(vps_listener *l);
/* Forget a listener inherited through fork(): its thread does not exist in the child, so
 * only the descriptors are closed. Loop thread of the child. */
void vps_listener_abandon(vps_listener *l);

#endif
