/* queue.h: bounded multi-producer queue of records from engine threads to the loop thread,
 * with a non-blocking wake-up fd. Threading: producers on any engine thread, one consumer
 * (the loop thread); every function below takes q->lock internally unless it says not. */
#ifndef VPS_QUEUE_H
#define VPS_QUEUE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* What a record carries. */
typedef enum {
    VPS_REC_MESSAGE = 1,     /* a pmessage: channel then payload in data */
    VPS_REC_SUBSCRIBED,      /* listener: both patterns confirmed */
    VPS_REC_LISTENER_DOWN,   /* listener: connection lost or attempt failed; data = error text */
    VPS_REC_PIPE_CONNECTED,  /* publish connector: fd is a ready (authenticated) connection */
    VPS_REC_PIPE_FAILED,     /* publish connector: an attempt failed; data = error text */
} vps_rec_kind;

typedef struct vps_record {
    struct vps_record *next;
    uint32_t kind;        /* vps_rec_kind */
    uint32_t chan_len;    /* MESSAGE: channel bytes at data[0..chan_len) */
    size_t payload_len;   /* MESSAGE: payload bytes follow the channel; others: text length */
    int fd;               /* PIPE_CONNECTED */
    uint64_t generation;  /* PIPE_*: which connector attempt posted it */
    char data[];          /* channel + payload, or a NUL-terminated text */
} vps_record;

/* A chain of records built privately by one producer, pushed in one step. */
typedef struct vps_chain {
    vps_record *head, *tail;
    size_t messages, bytes;
} vps_chain;

typedef struct vps_queue {
    pthread_mutex_t lock;
    pthread_cond_t room;      /* signalled when the consumer takes records (guarded by lock) */
    vps_record *head, *tail;  /* guarded by lock */
    size_t messages, bytes;   /* queued MESSAGE records and their bytes; guarded by lock */
    size_t max_messages, max_bytes; /* immutable */
    int wake_fd;              /* eventfd (or the read end of a pipe); watched by the loop */
    int wake_wfd;             /* where producers write (same as wake_fd for an eventfd) */
    uint64_t waits;           /* times a producer found the queue full; guarded by lock */
} vps_queue;

/* Returns a new queue or NULL (errno set). Loop thread. */
vps_queue *vps_queue_new(size_t max_messages, size_t max_bytes);
/* Frees the queue and every record in it. Loop thread, after all producers have stopped. */
void vps_queue_free(vps_queue *q);

/* Free a queue inherited through fork(): records and fds, but not the mutex and condition
 * variable, which may still count waiters of a thread that exists only in the parent (destroying
 * them could wait forever). Child's loop thread. */
void vps_queue_abandon(vps_queue *q);

/* New record of `kind` with room for `len` data bytes (+1 for a NUL); NULL on ENOMEM.
 * Any thread; no lock. */
vps_record *vps_record_new(uint32_t kind, size_t len);
/* A record holding a text (error message). Any thread; no lock. */
vps_record *vps_record_text(uint32_t kind, const char *text, uint64_t generation);
/* Frees a record. Any thread. */
void vps_record_free(vps_record *r);

/* Append r to a private chain; no lock. */
void vps_chain_add(vps_chain *c, vps_record *r);
/* Move a whole chain to the queue (order kept) and wake the loop if the queue was empty.
 * Any producer thread; takes q->lock. */
void vps_queue_push_chain(vps_queue *q, vps_chain *c);
/* Push one record. Any producer thread; takes q->lock. */
void vps_queue_push(vps_queue *q, vps_record *r);

/* Block until the queue has room for more messages or `cancel` becomes nonzero (read
 * without the lock, set by the stopper who then calls vps_queue_kick). Returns 1 when there
 * is room, 0 otherwise. Producer thread; takes q->lock. */
int vps_queue_wait_room(vps_queue *q, volatile int *cancel);
/* Wake producers waiting for room (after setting their cancel flag). Any thread. */
void vps_queue_kick(vps_queue *q);

/* Take every queued record, oldest first; NULL when empty. Clears the wake-up fd first
 * so a push that races with the take always leaves the fd readable. Loop thread;
 * takes q->lock. */
vps_record *vps_queue_take_all(vps_queue *q);
/* Number of queued MESSAGE records. Any thread; takes q->lock. */
size_t vps_queue_depth(vps_queue *q);
/* How many times the producer found the queue full and waited. Any thread; takes q->lock. */
uint64_t vps_queue_full_waits(vps_queue *q);

#endif
