/* queue.c: the bounded record queue between engine threads and the loop, and its wake-up fd.
 * Threading: producers on engine threads, consumer on the loop thread; q->lock guards the list. */
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

/* Open the wake-up fd pair: an eventfd where there is one, else a pipe. 0/-1. */
static int wake_open(vps_queue *q)
{
#ifdef __linux__
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd >= 0) {
        q->wake_fd = q->wake_wfd = fd;
        return 0;
    }
#endif
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    q->wake_fd = fds[0];
    q->wake_wfd = fds[1];
    return 0;
}

/* Make the wake-up fd readable. Never blocks: a full eventfd/pipe is already readable. */
static void wake_signal(vps_queue *q)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(q->wake_wfd, &one, q->wake_wfd == q->wake_fd ? sizeof one : 1);
    } while (n < 0 && errno == EINTR);
}

/* Make the wake-up fd unreadable again. */
static void wake_clear(vps_queue *q)
{
    char buf[64];
    ssize_t n;
    if (q->wake_wfd == q->wake_fd) {
        do {
            n = read(q->wake_fd, buf, sizeof(uint64_t));
        } while (n < 0 && errno == EINTR);
        return;
    }
    do {
        n = read(q->wake_fd, buf, sizeof buf);
    } while (n > 0 || (n < 0 && errno == EINTR));
}

vps_queue *vps_queue_new(size_t max_messages, size_t max_bytes)
{
    vps_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->max_messages = max_messages;
    q->max_bytes = max_bytes;
    if (wake_open(q) < 0) {
        free(q);
        return NULL;
    }
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&q->room, &attr);
    pthread_condattr_destroy(&attr);
    return q;
}

/* Free the records (closing the fd of an unclaimed PIPE_CONNECTED) and the wake-up fds. */
static void release_contents(vps_queue *q)
{
    vps_record *r = q->head;
    while (r != NULL) {
        vps_record *next = r->next;
        if (r->kind == VPS_REC_PIPE_CONNECTED && r->fd >= 0)
            close(r->fd);
        vps_record_free(r);
        r = next;
    }
    q->head = q->tail = NULL;
    if (q->wake_wfd != q->wake_fd)
        close(q->wake_wfd);
    close(q->wake_fd);
}

void vps_queue_free(vps_queue *q)
{
    if (q == NULL)
        return;
    release_contents(q);
    pthread_cond_destroy(&q->room);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

void vps_queue_abandon(vps_queue *q)
{
    if (q == NULL)
        return;
    release_contents(q);
    free(q); /* the mutex and condition variable go with the memory, never destroyed */
}

vps_record *vps_record_new(uint32_t kind, size_t len)
{
    vps_record *r = malloc(sizeof *r + len + 1);
    if (r == NULL)
        return NULL;
    r->next = NULL;
    r->kind = kind;
    r->chan_len = 0;
    r->payload_len = len;
    r->fd = -1;
    r->generation = 0;
    r->data[len] = '\0';
    return r;
}

vps_record *vps_record_text(uint32_t kind, const char *text, uint64_t generation)
{
    size_t len = strlen(text);
    vps_record *r = vps_record_new(kind, len);
    if (r == NULL)
        return NULL;
    memcpy(r->data, text, len);
    r->generation = generation;
    return r;
}

void vps_record_free(vps_record *r)
{
    free(r);
}

void vps_chain_add(vps_chain *c, vps_record *r)
{
    r->next = NULL;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    if (r->kind == VPS_REC_MESSAGE) {
        c->messages++;
        c->bytes += r->chan_len + r->payload_len;
    }
}

void vps_queue_push_chain(vps_queue *q, vps_chain *c)
{
    if (c->head == NULL)
        return;
    pthread_mutex_lock(&q->lock);
    int was_empty = q->head == NULL;
    if (q->tail)
        q->tail->next = c->head;
    else
        q->head = c->head;
    q->tail = c->tail;
    q->messages += c->messages;
    q->bytes += c->bytes;
    pthread_mutex_unlock(&q->lock);
    if (was_empty)
        wake_signal(q);
    c->head = c->tail = NULL;
    c->messages = c->bytes = 0;
}

void vps_queue_push(vps_queue *q, vps_record *r)
{
    vps_chain c = {0};
    vps_chain_add(&c, r);
    vps_queue_push_chain(q, &c);
}

int vps_queue_wait_room(vps_queue *q, volatile int *cancel)
{
    int room, counted = 0;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        room = q->messages < q->max_messages && q->bytes < q->max_bytes;
        if (room || *cancel)
            break;
        if (!counted) /* one per time the queue was found full */
            q->waits++;
        counted = 1;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1; /* re-check the cancel flag at least once a second */
        pthread_cond_timedwait(&q->room, &q->lock, &ts);
    }
    pthread_mutex_unlock(&q->lock);
    return room;
}

void vps_queue_kick(vps_queue *q)
{
    pthread_mutex_lock(&q->lock);
    pthread_cond_broadcast(&q->room);
    pthread_mutex_unlock(&q->lock);
}

vps_record *vps_queue_take_all(vps_queue *q)
{
    wake_clear(q);
    pthread_mutex_lock(&q->lock);
    vps_record *all = q->head;
    int had_full = q->messages >= q->max_messages || q->bytes >= q->max_bytes;
    q->head = q->tail = NULL;
    q->messages = q->bytes = 0;
    if (had_full)
        pthread_cond_broadcast(&q->room);
    pthread_mutex_unlock(&q->lock);
    return all;
}

uint64_t vps_queue_full_waits(vps_queue *q)
{
    pthread_mutex_lock(&q->lock);
    uint64_t n = q->waits;
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t vps_queue_depth(vps_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->messages;
    pthread_mutex_unlock(&q->lock);
    return n;
}
