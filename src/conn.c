/* conn.c: connect + handshake to Redis with deadlines and a cancel fd; RESP formatting.
 * Threading: stateless; blocking helpers run on engine threads only, never the loop thread. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Keepalive: first probe after 10 s idle, then every 5 s, dead after 3 misses; data left
 * unacknowledged for 20 s also kills the connection (TCP_USER_TIMEOUT). */
#define KEEPIDLE_S 10
#define KEEPINTVL_S 5
#define KEEPCNT 3
#define USER_TIMEOUT_MS 20000

int vps_conn_wait(int fd, short events, int cancel_fd, double deadline)
{
    for (;;) {
        struct pollfd p[2] = {{fd, events, 0}, {cancel_fd, POLLIN, 0}};
        int timeout_ms = -1;
        if (deadline >= 0) {
            double left = deadline - vps_now();
            if (left <= 0)
                return 0;
            timeout_ms = (int)(left * 1000) + 1;
        }
        int n = poll(p, cancel_fd >= 0 ? 2 : 1, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return VPS_ERROR;
        }
        if (cancel_fd >= 0 && (p[1].revents & POLLIN))
            return VPS_CANCELLED;
        if (p[0].revents)
            return 1;
        if (n == 0 && deadline >= 0 && vps_now() >= deadline)
            return 0;
    }
}

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static void tune_tcp(int fd)
{
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
#ifdef TCP_KEEPIDLE
    int idle = KEEPIDLE_S, intvl = KEEPINTVL_S, cnt = KEEPCNT;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
#ifdef TCP_USER_TIMEOUT
    unsigned int ut = USER_TIMEOUT_MS;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
#endif
}

/* Start a non-blocking connect to one address and wait for it. fd >= 0, VPS_ERROR, VPS_CANCELLED. */
static int connect_addr(const struct sockaddr *sa, socklen_t salen, int family, int cancel_fd,
                        double deadline, vps_err *err, const char *what)
{
    int rc = VPS_ERROR;
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) {
        vps_err_set(err, "socket(): %s", strerror(errno));
        return VPS_ERROR; /* nothing acquired yet */
    }
    set_nonblocking(fd);
    if (connect(fd, sa, salen) == 0) {
        rc = fd;
        goto done;
    }
    if (errno != EINPROGRESS && errno != EAGAIN) {
        vps_err_set(err, "connect to %s: %s", what, strerror(errno));
        goto done;
    }
    int w = vps_conn_wait(fd, POLLOUT, cancel_fd, deadline);
    if (w == VPS_CANCELLED) {
        rc = VPS_CANCELLED;
        goto done;
    }
    if (w == 0) {
        vps_err_set(err, "connect to %s: timed out", what);
        goto done;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr != 0) {
        vps_err_set(err, "connect to %s: %s", what, strerror(soerr));
        goto done;
    }
    rc = fd;
done:
    if (rc != fd)
        close(fd);
    return rc;
}

#ifdef __GLIBC__
/* A lookup handed to glibc's resolver thread; freed only once glibc is done with it. */
typedef struct lookup {
    struct gaicb cb;
    struct addrinfo hints;
    char port[16];
    char host[];
} lookup;
#endif

/* Resolve host:port into *res (free with freeaddrinfo). IP literals never touch DNS. A name
 * is looked up asynchronously where glibc can (getaddrinfo_a), so that stop() (cancel_fd) and
 * the connect deadline interrupt a slow resolver instead of waiting for its timeout.
 * 0, VPS_ERROR (err set) or VPS_CANCELLED. Engine threads only. */
static int resolve(const char *host, const char *port, int cancel_fd, double deadline,
                   struct addrinfo **res, vps_err *err)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, port, &hints, res) == 0)
        return 0;
    hints.ai_flags = 0;
#ifdef __GLIBC__
    size_t hlen = strlen(host);
    lookup *q = calloc(1, sizeof *q + hlen + 1);
    if (q == NULL) {
        vps_err_set(err, "out of memory");
        return VPS_ERROR;
    }
    memcpy(q->host, host, hlen + 1);
    snprintf(q->port, sizeof q->port, "%s", port);
    q->hints = hints;
    q->cb.ar_name = q->host;
    q->cb.ar_service = q->port;
    q->cb.ar_request = &q->hints;
    struct gaicb *list[1] = {&q->cb};
    int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
    if (rc != 0) {
        free(q);
        vps_err_set(err, "cannot resolve %s: %s", host, gai_strerror(rc));
        return VPS_ERROR;
    }
    int outcome = 0;
    while ((rc = gai_error(&q->cb)) == EAI_INPROGRESS) {
        double left = deadline - vps_now();
        int w = vps_conn_wait(-1, 0, cancel_fd, vps_now() + (left < 0.05 ? left : 0.05));
        if (w == VPS_CANCELLED) {
            outcome = VPS_CANCELLED;
            break;
        }
        if (left <= 0) {
            vps_err_set(err, "cannot resolve %s: timed out", host);
            outcome = VPS_ERROR;
            break;
        }
    }
    if (outcome != 0) {
        int c = gai_cancel(&q->cb);
        if (c == EAI_ALLDONE && gai_error(&q->cb) == 0)
            freeaddrinfo(q->cb.ar_result);
        if (c == EAI_CANCELED || c == EAI_ALLDONE)
            free(q);
        /* else the resolver thread still owns q: it is left to it (a few hundred bytes) */
        return outcome;
    }
    if (rc != 0) {
        free(q);
        vps_err_set(err, "cannot resolve %s: %s", host, gai_strerror(rc));
        return VPS_ERROR;
    }
    *res = q->cb.ar_result;
    free(q);
    return 0;
#else
    (void)cancel_fd;
    (void)deadline;
    int gai = getaddrinfo(host, port, &hints, res);
    if (gai != 0) {
        vps_err_set(err, "cannot resolve %s: %s", host, gai_strerror(gai));
        return VPS_ERROR;
    }
    return 0;
#endif
}

/* Connect to the endpoint's address(es). fd >= 0, VPS_ERROR, VPS_CANCELLED. */
static int connect_endpoint(const vps_endpoint *ep, int cancel_fd, double deadline, vps_err *err)
{
    char what[300];
    if (ep->unix_path != NULL) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof sun);
        sun.sun_family = AF_UNIX;
        if (strlen(ep->unix_path) >= sizeof sun.sun_path) {
            vps_err_set(err, "unix socket path too long");
            return VPS_ERROR;
        }
        strcpy(sun.sun_path, ep->unix_path);
        snprintf(what, sizeof what, "%s", ep->unix_path);
        return connect_addr((struct sockaddr *)&sun, sizeof sun, AF_UNIX, cancel_fd, deadline, err,
                            what);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", ep->port);
    snprintf(what, sizeof what, "%s:%d", ep->host, ep->port);
    struct addrinfo *res = NULL;
    int fd = resolve(ep->host, port, cancel_fd, deadline, &res, err);
    if (fd != 0)
        return fd;
    fd = VPS_ERROR;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = connect_addr(ai->ai_addr, ai->ai_addrlen, ai->ai_family, cancel_fd, deadline, err,
                          what);
        if (fd >= 0 || fd == VPS_CANCELLED)
            break;
    }
    freeaddrinfo(res);
    if (fd >= 0)
        tune_tcp(fd);
    return fd;
}

int vps_conn_write_all(int fd, const char *buf, size_t len, int cancel_fd, double deadline,
                       vps_err *err)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = vps_conn_wait(fd, POLLOUT, cancel_fd, deadline);
            if (w == VPS_CANCELLED)
                return VPS_CANCELLED;
            if (w == 0) {
                vps_err_set(err, "write timed out");
                return VPS_ERROR;
            }
            continue;
        }
        vps_err_set(err, "write: %s", strerror(errno));
        return VPS_ERROR;
    }
    return 0;
}

int vps_conn_read_reply(int fd, redisReader *reader, redisReply **out, int cancel_fd,
                        double deadline, vps_err *err)
{
    char buf[4096];
    *out = NULL;
    for (;;) {
        void *reply = NULL;
        if (vps_reader_next(reader, &reply) != REDIS_OK) {
            vps_err_set(err, "protocol error: %s", reader->errstr);
            return VPS_ERROR;
        }
        if (reply != NULL) {
            *out = reply;
            return 0;
        }
        int w = vps_conn_wait(fd, POLLIN, cancel_fd, deadline);
        if (w == VPS_CANCELLED)
            return VPS_CANCELLED;
        if (w == 0) {
            vps_err_set(err, "no reply from Redis within the connect timeout");
            return VPS_ERROR;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0) {
            vps_err_set(err, "connection closed by Redis");
            return VPS_ERROR;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            vps_err_set(err, "read: %s", strerror(errno));
            return VPS_ERROR;
        }
        if (vps_reader_feed(reader, buf, (size_t)n) != REDIS_OK) {
            vps_err_set(err, "protocol error: %s", reader->errstr);
            return VPS_ERROR;
        }
    }
}

char *vps_cmd_format(int argc, const char *const *argv, const size_t *lens, size_t *out_len)
{
    size_t total = 16;
    for (int i = 0; i < argc; i++)
        total += lens[i] + 32;
    char *buf = malloc(total);
    if (buf == NULL)
        return NULL;
    size_t pos = (size_t)snprintf(buf, total, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        pos += (size_t)snprintf(buf + pos, total - pos, "$%zu\r\n", lens[i]);
        memcpy(buf + pos, argv[i], lens[i]);
        pos += lens[i];
        buf[pos++] = '\r';
        buf[pos++] = '\n';
    }
    *out_len = pos;
    return buf;
}

void vps_err_redacted(vps_err *err, const char *prefix, const char *text, const char *secret)
{
    size_t pos = (size_t)snprintf(err->text, sizeof err->text, "%s", prefix);
    size_t slen = secret ? strlen(secret) : 0;
    for (const char *p = text; *p && pos + 4 < sizeof err->text;) {
        if (slen > 0 && strncmp(p, secret, slen) == 0) {
            memcpy(err->text + pos, "***", 3);
            pos += 3;
            p += slen;
        } else {
            err->text[pos++] = *p++;
        }
    }
    err->text[pos < sizeof err->text ? pos : sizeof err->text - 1] = '\0';
}

void vps_conn_abort(int fd)
{
    if (fd < 0)
        return;
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* Send the handshake commands and check each reply. 0, VPS_ERROR, VPS_CANCELLED. */
static int handshake(int fd, const vps_endpoint *ep, const char *name, int cancel_fd,
                     double deadline, vps_err *err)
{
    int rc = VPS_ERROR;
    redisReader *reader = vps_reader_new();
    char *auth = NULL, *setname = NULL;
    size_t auth_len = 0, setname_len = 0;
    if (reader == NULL) {
        vps_err_set(err, "out of memory");
        goto done;
    }
    if (ep->password != NULL) {
        const char *argv[3] = {"AUTH", ep->username, ep->password};
        size_t lens[3] = {4, ep->username ? strlen(ep->username) : 0, strlen(ep->password)};
        if (ep->username == NULL) {
            argv[1] = ep->password;
            lens[1] = lens[2];
        }
        auth = vps_cmd_format(ep->username ? 3 : 2, argv, lens, &auth_len);
    }
    const char *sargv[3] = {"CLIENT", "SETNAME", name};
    size_t slens[3] = {6, 7, strlen(name)};
    setname = vps_cmd_format(3, sargv, slens, &setname_len);
    if (setname == NULL || (ep->password != NULL && auth == NULL)) {
        vps_err_set(err, "out of memory");
        goto done;
    }
    if (auth != NULL) {
        rc = vps_conn_write_all(fd, auth, auth_len, cancel_fd, deadline, err);
        if (rc != 0)
            goto done;
    }
    rc = vps_conn_write_all(fd, setname, setname_len, cancel_fd, deadline, err);
    if (rc != 0)
        goto done;
    for (int i = auth != NULL ? 0 : 1; i < 2; i++) {
        redisReply *reply = NULL;
        rc = vps_conn_read_reply(fd, reader, &reply, cancel_fd, deadline, err);
        if (rc != 0)
            goto done;
        if (reply->type == REDIS_REPLY_ERROR) {
            const char *prefix = i == 0 ? "authentication failed: " : "CLIENT SETNAME failed: ";
            if (strncmp(reply->str, "NOAUTH", 6) == 0)
                prefix = "Redis requires a password: ";
            vps_err_redacted(err, prefix, reply->str, ep->password);
            rc = VPS_ERROR;
            vps_reply_free(reply);
            goto done;
        }
        vps_reply_free(reply);
    }
    rc = 0;
done:
    free(auth);
    free(setname);
    if (reader != NULL)
        vps_reader_free(reader);
    return rc;
}

int vps_conn_open(const vps_endpoint *ep, const char *name, int cancel_fd, vps_err *err)
{
    double deadline = vps_now() + ep->connect_timeout;
    int fd = connect_endpoint(ep, cancel_fd, deadline, err);
    if (fd < 0)
        return fd;
    int rc = handshake(fd, ep, name, cancel_fd, deadline, err);
    if (rc != 0) {
        vps_conn_abort(fd);
        return rc;
    }
    return fd;
}
