/* common.h: shared engine types (endpoint, error buffer, clock); no Python.h.
 * Threading: plain data; each owner documents who may touch its copy. */
#ifndef VPS_COMMON_H
#define VPS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define VPS_ERR_LEN 256

/* A fixed-size error text: reporting an error never allocates. */
typedef struct vps_err {
    char text[VPS_ERR_LEN];
} vps_err;

/* Where Redis is and how to log in. Immutable after the publisher is constructed. */
typedef struct vps_endpoint {
    char *host;      /* NULL for a unix socket */
    int port;
    char *unix_path; /* NULL for TCP */
    char *username;  /* NULL: AUTH with the password only */
    char *password;  /* NULL: no AUTH */
    double connect_timeout; /* seconds, for TCP connect + handshake */
} vps_endpoint;

/* Result of an operation that can be interrupted by a cancel fd. */
enum { VPS_OK = 0, VPS_ERROR = -1, VPS_CANCELLED = -2 };

/* Monotonic time in seconds. Any thread. */
double vps_now(void);

/* Format into err (truncating). Any thread; never allocates. */
void vps_err_set(vps_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A self-pipe another thread can make readable: stop requests and "retry now" nudges. */
typedef struct vps_signal {
    int rfd, wfd;
} vps_signal;

/* Open a non-blocking, close-on-exec pipe. 0/-1 (errno set). Any thread. */
int vps_signal_open(vps_signal *s);
/* Make rfd readable; never blocks (a full pipe is already readable). Any thread. */
void vps_signal_raise(vps_signal *s);
/* Drain rfd. Any thread. */
void vps_signal_clear(vps_signal *s);
/* Close both ends (safe on a zeroed or closed signal). */
void vps_signal_close(vps_signal *s);

/* Sleep up to `seconds`, waking early when `nudge` is raised (it is cleared).
 * Returns VPS_CANCELLED when `cancel` is raised, else 0. Engine threads only. */
int vps_pause(double seconds, vps_signal *cancel, vps_signal *nudge);

/* Backoff before reconnect attempt `attempt` (0-based): exponential from min to max
 * with full jitter in [delay/2, delay]. Any thread; `seed` is the caller's PRNG state. */
double vps_backoff_delay(unsigned attempt, double min, double max, uint64_t *seed);

#endif
