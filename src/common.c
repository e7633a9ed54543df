/* common.c: clock, error text and backoff helpers shared by the engine.
 * Threading: pure functions; callable from any thread. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

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
