/* conn.h: opening an authenticated Redis connection with bounded, cancellable waits;
 * RESP command formatting. Threading: no shared state; any engine thread (blocking calls
 * are never made on the loop thread). No Python.h. */
#ifndef VPS_CONN_H
#define VPS_CONN_H

#include "common.h"
#include "compat.h"

/* Open a connection to ep: resolve, connect, set TCP_NODELAY and keepalive, then AUTH (when
 * a password is set) and CLIENT SETNAME `name`, all within ep->connect_timeout and
 * interrupted when cancel_fd becomes readable. Returns a non-blocking fd >= 0, VPS_ERROR with
 * err set (never containing the password), or VPS_CANCELLED. Engine threads only. */
int vps_conn_open(const vps_endpoint *ep, const char *name, int cancel_fd, vps_err *err);

/* Wait until fd has `events` (POLLIN/POLLOUT), cancel_fd is readable, or `deadline`
 * (vps_now() seconds; < 0 for none) passes. Returns 1 ready, 0 timed out, VPS_CANCELLED,
 * or VPS_ERROR (errno set). Any thread. */
int vps_conn_wait(int fd, short events, int cancel_fd, double deadline);

/* Write all of buf to the non-blocking fd before `deadline`. 0, VPS_ERROR (err set) or
 * VPS_CANCELLED. Engine threads only. */
int vps_conn_write_all(int fd, const char *buf, size_t len, int cancel_fd, double deadline,
                       vps_err *err);

/* Read until `reader` yields one reply (stored in *out, free with vps_reply_free) before
 * `deadline`. 0, VPS_ERROR (err set) or VPS_CANCELLED. Engine threads only. */
int vps_conn_read_reply(int fd, redisReader *reader, redisReply **out, int cancel_fd,
                        double deadline, vps_err *err);

/* A RESP array of bulk strings in one malloc'd buffer (*out_len bytes), or NULL on ENOMEM.
 * Any thread. */
char *vps_cmd_format(int argc, const char *const *argv, const size_t *lens, size_t *out_len);

/* Copy `text` into err, replacing any occurrence of `secret` with "***". Any thread. */
void vps_err_redacted(vps_err *err, const char *prefix, const char *text, const char *secret);

/* Close fd so that the peer sees a reset (no lingering unsent data). Any thread. */
void vps_conn_abort(int fd);

#endif
