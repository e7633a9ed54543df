/* common.c: clock, error text and backoff helpers shared by the engine.
 * Threading: pure functions; callable from any thread. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

double vps_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void vps_err_set(vps_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof err->text, fmt, ap);
    va_end(ap);
}

int vps_signal_open(vps_signal *s)
{
    int fds[2];
    s->rfd = s->wfd = -1;
    if (pipe(fds) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    s->rfd = fds[0];
    s->wfd = fds[1];
    return 0;
}

void vps_signal_raise(vps_signal *s)
{
    char one = 1;
    ssize_t n;
    do {
        n = write(s->wfd, &one, 1);
    } while (n < 0 && errno == EINTR);
}

void vps_signal_clear(vps_signal *s)
{
    char buf[64];
    ssize_t n;
    do {
        n = read(s->rfd, buf, sizeof buf);
    } while (n > 0 || (n < 0 && errno == EINTR));
}

void vps_signal_close(vps_signal *s)
{
    if (s->rfd >= 0)
        close(s->rfd);
    if (s->wfd >= 0)
        close(s->wfd);
    s->rfd = s->wfd = -1;
}

int vps_pause(double seconds, vps_signal *cancel, vps_signal *nudge)
{
    double deadline = vps_now() + seconds;
    for (;;) {
        struct pollfd p[2] = {{cancel->rfd, POLLIN, 0}, {nudge ? nudge->rfd : -1, POLLIN, 0}};
        double left = deadline - vps_now();
        if (left <= 0)
            return 0;
        int n = poll(p, 2, (int)(left * 1000) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return 0;
        if (p[0].revents & POLLIN)
            return VPS_CANCELLED;
        if (nudge && (p[1].revents & POLLIN)) {
            vps_signal_clear(nudge);
            return 0;
        }
    }
}

/* xorshift64*: good enough for jitter, no shared state */
static uint64_t next_random(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

double vps_backoff_delay(unsigned attempt, double min, double max, uint64_t *seed)
{
    double delay = min;
    for (unsigned i = 0; i < attempt && delay < max; i++)
        delay *= 2;
    if (delay > max)
        delay = max;
    double unit = (double)(next_random(seed) >> 11) / (double)(1ull << 53);
    return delay / 2 + unit * delay / 2;
}
