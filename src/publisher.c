/* publisher.c: the UploadProgressPublisher type: methods, awaitables, the drain callback that
 * turns queued records into str objects, and the hooks that drive the publish pipeline.
 * Threading: every function here runs on the loop thread with the GIL held; the engine threads
 * never call into this file. */
#include "module.h"

#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "call.h"
#include "common.h"
#include "listener.h"
#include "pipeline.h"
#include "queue.h"

typedef struct {
    PyObject_HEAD
    /* configuration, immutable after construction */
    vps_endpoint ep;
    PyObject *url_shown;          /* str, password redacted */
    double start_timeout, send_timeout, ping_interval, ping_timeout, backoff_min, backoff_max;
    double publish_timeout;
    Py_ssize_t max_message_bytes;
    Py_ssize_t outbox_max_messages, outbox_max_bytes, queue_max_messages, queue_max_bytes;
    unsigned long fork_generation; /* vps_fork_generation when constructed */

    /* Python collaborators */
    PyObject *dispatcher;         /* vuemantics_pubsub._dispatch.Dispatcher */
    PyObject *dispatch;           /* its bound .dispatch */
    PyObject *logger;
    PyObject *get_running_loop;
    PyTypeObject *call_type;      /* the awaitable type the methods return */
    PyObject *loop;               /* the loop we are bound to, or NULL */
    PyObject *create_future;      /* loop.create_future, or NULL */

    /* engine */
    vps_queue *queue;
    int queue_watched;            /* queue->wake_fd registered with loop.add_reader */
    vps_listener *listener;       /* non-NULL between start() and stop() */
    vps_pipeline *pipe;
    int pipe_fd, pipe_read, pipe_write; /* what the loop watches for the pipeline */

    /* lifecycle */
    int running;                  /* start() called and stop() not yet */
    int subscribed;               /* the listener's PSUBSCRIBE is confirmed */
    int stopping;                 /* stop() waits for the pipeline to flush */
    PyObject *start_waiters;      /* list of futures resolved once subscribed (or timed out) */
    PyObject *start_timer;        /* TimerHandle or NULL */
    PyObject *flush_waiters;      /* list of futures resolved when nothing is pending */
    PyObject *stop_waiters;       /* list of futures resolved when stop() finished */
    PyObject *stop_timer;         /* TimerHandle or NULL */
    PyObject *hold_timer;         /* caps how long publishes wait for our own subscription */
    int hold_expired;             /* that cap passed; cleared when subscribed again */
    PyObject *ack_timer;          /* releases callers Redis has not answered in time */
    int ack_late;                 /* the last release was logged (cleared by an ack in time) */
    double overflow_logged_at;    /* vps_now() of the last overflow warning */
    uint64_t overflow_logged_total; /* outbox drops already reported */

    /* counters and state for stats() */
    uint64_t received, skipped, listener_failures;
    int publish_outage;           /* the publishing connection is down (reported once) */
    int listener_outage;          /* the listener is down (reported once) */
    char last_error[VPS_ERR_LEN];
    PyObject *weakreflist;
} Publisher;

volatile unsigned long vps_fork_generation = 0;

/* ---- small helpers ------------------------------------------------------------------ */

/* Log through the package logger at `level` ("debug", "info", "warning", "error"); keeps any
 * pending exception. Never fails. */
static void log_text(Publisher *self, const char *level, const char *fmt, ...)
{
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg != NULL && self->logger != NULL) {
        PyObject *r = PyObject_CallMethod(self->logger, level, "sO", "%s", msg);
        Py_XDECREF(r);
    }
    Py_XDECREF(msg);
    if (PyErr_Occurred())
        PyErr_WriteUnraisable(self->logger);
    PyErr_Restore(exc_type, exc_value, exc_tb);
}

/* Log the pending exception with a context line and clear it. */
static void log_exception(Publisher *self, const char *context)
{
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyErr_NormalizeException(&exc_type, &exc_value, &exc_tb);
    log_text(self, "error", "%s: %S", context, exc_value ? exc_value : Py_None);
    Py_XDECREF(exc_type);
    Py_XDECREF(exc_value);
    Py_XDECREF(exc_tb);
}

static void set_last_error(Publisher *self, const char *text)
{
    snprintf(self->last_error, sizeof self->last_error, "%s", text);
}

/* Resolve fut with None unless it is already done (cancelled by its awaiter). */
static void resolve_future(PyObject *fut)
{
    PyObject *r = PyObject_CallMethod(fut, "set_result", "O", Py_None);
    if (r == NULL)
        PyErr_Clear(); /* InvalidStateError: the caller cancelled; nothing to tell */
    Py_XDECREF(r);
}

/* Resolve and empty a list of futures. */
static void resolve_all(PyObject *list)
{
    if (list == NULL)
        return;
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n == 0)
        return;
    PyObject *copy = PyList_GetSlice(list, 0, n);
    if (PyList_SetSlice(list, 0, n, NULL) < 0)
        PyErr_Clear();
    if (copy == NULL) {
        PyErr_Clear();
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(copy); i++)
        resolve_future(PyList_GET_ITEM(copy, i));
    Py_DECREF(copy);
}

static void cancel_timer(PyObject **timer)
{
    if (*timer == NULL)
        return;
    PyObject *r = PyObject_CallMethod(*timer, "cancel", NULL);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_CLEAR(*timer);
}

/* A new future on the bound loop (new reference) or NULL with an exception. */
static PyObject *new_future(Publisher *self)
{
    return PyObject_CallNoArgs(self->create_future);
}

/* A new future already resolved with None. */
static PyObject *done_future(Publisher *self)
{
    PyObject *fut = new_future(self);
    if (fut != NULL)
        resolve_future(fut);
    return fut;
}

/* Bound method-like callable for one of our METH_NOARGS callbacks (new reference). It holds a
 * strong reference to self, so a registered callback keeps the publisher alive. */
static PyObject *callback(Publisher *self, PyMethodDef *def)
{
    return PyCFunction_NewEx(def, (PyObject *)self, NULL);
}

/* loop.<method>(*args) ignoring the result; 0/-1 with an exception. */
static int loop_call(Publisher *self, const char *method, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *args = Py_VaBuildValue(fmt, ap);
    va_end(ap);
    if (args == NULL)
        return -1;
    PyObject *fn = PyObject_GetAttrString(self->loop, method);
    PyObject *r = fn ? PyObject_Call(fn, args, NULL) : NULL;
    Py_XDECREF(fn);
    Py_DECREF(args);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* ---- callbacks the loop calls ---------------------------------------------------------- */

static PyObject *Publisher_on_wake(Publisher *self, PyObject *unused);
static PyObject *Publisher_on_pipe_readable(Publisher *self, PyObject *unused);
static PyObject *Publisher_on_pipe_writable(Publisher *self, PyObject *unused);
static PyObject *Publisher_on_flush(Publisher *self, PyObject *unused);
static PyObject *Publisher_on_start_timeout(Publisher *self, PyObject *unused);
static PyObject *Publisher_on_stop_timeout(Publisher *self, PyObject *unused);
static PyObject *Publisher_on_hold_timeout(Publisher *self, PyObject *unused);
static PyObject *Publisher_on_ack_timeout(Publisher *self, PyObject *unused);

static PyMethodDef on_wake_def = {"_on_wake", (PyCFunction)Publisher_on_wake, METH_NOARGS, NULL};
static PyMethodDef on_pipe_readable_def = {"_on_pipe_readable",
                                           (PyCFunction)Publisher_on_pipe_readable, METH_NOARGS, NULL};
static PyMethodDef on_pipe_writable_def = {"_on_pipe_writable",
                                           (PyCFunction)Publisher_on_pipe_writable, METH_NOARGS, NULL};
static PyMethodDef on_flush_def = {"_on_flush", (PyCFunction)Publisher_on_flush, METH_NOARGS, NULL};
static PyMethodDef on_start_timeout_def = {"_on_start_timeout",
                                           (PyCFunction)Publisher_on_start_timeout, METH_NOARGS, NULL};
static PyMethodDef on_stop_timeout_def = {"_on_stop_timeout",
                                          (PyCFunction)Publisher_on_stop_timeout, METH_NOARGS, NULL};
static PyMethodDef on_hold_timeout_def = {"_on_hold_timeout",
                                          (PyCFunction)Publisher_on_hold_timeout, METH_NOARGS, NULL};
static PyMethodDef on_ack_timeout_def = {"_on_ack_timeout",
                                         (PyCFunction)Publisher_on_ack_timeout, METH_NOARGS, NULL};

/* loop.call_later(delay, <def bound to self>) into *timer (replacing nothing: *timer must be
 * NULL). Errors are logged. */
static void arm_timer(Publisher *self, PyObject **timer, double delay, PyMethodDef *def)
{
    if (self->loop == NULL || *timer != NULL)
        return;
    PyObject *cb = callback(self, def);
    PyObject *fn = cb ? PyObject_GetAttrString(self->loop, "call_later") : NULL;
    *timer = fn ? PyObject_CallFunction(fn, "dO", delay, cb) : NULL;
    Py_XDECREF(fn);
    Py_XDECREF(cb);
    if (*timer == NULL)
        log_exception(self, "cannot arm a timer");
}

/* Register/unregister fd callbacks; errors are logged (the loop may be closed). */
static void watch_fd(Publisher *self, const char *add, const char *remove, int fd, int on,
                     PyMethodDef *def)
{
    if (self->loop == NULL)
        return;
    if (on) {
        PyObject *cb = callback(self, def);
        if (cb == NULL || loop_call(self, add, "(iO)", fd, cb) < 0)
            log_exception(self, "cannot watch a Redis socket");
        Py_XDECREF(cb);
    } else if (loop_call(self, remove, "(i)", fd) < 0) {
        PyErr_Clear(); /* the loop is closed: nothing is watched any more */
    }
}

static void watch_queue(Publisher *self, int on)
{
    if (self->queue_watched == on)
        return;
    self->queue_watched = on;
    watch_fd(self, "add_reader", "remove_reader", self->queue->wake_fd, on, &on_wake_def);
}

/* While our own listener is not subscribed (after start() or a lost connection), publishes are
 * held back, at most start_timeout: an outbox sent before this instance re-subscribed would
 * reach nobody here. */
static void update_hold(Publisher *self)
{
    int hold = self->listener != NULL && !self->subscribed && !self->hold_expired;
    /* the cap counts only while Redis takes our publishes: the listener's next attempt comes
     * within backoff_max, and its connect + PSUBSCRIBE within connect_timeout; it runs only
     * while something waits to be published */
    if (hold && self->pipe->fd >= 0 && vps_pipeline_pending(self->pipe) > 0)
        arm_timer(self, &self->hold_timer, self->backoff_max + self->ep.connect_timeout,
                  &on_hold_timeout_def);
    else
        cancel_timer(&self->hold_timer);
    vps_pipeline_set_hold(self->pipe, hold);
}

/* ---- pipeline hooks ------------------------------------------------------------------ */

static void hook_watch(void *host, int fd, int readable, int writable)
{
    Publisher *self = host;
    if (self->pipe_fd != fd) {
        self->pipe_fd = fd;
        self->pipe_read = self->pipe_write = 0;
    }
    if (readable != self->pipe_read) {
        self->pipe_read = readable;
        watch_fd(self, "add_reader", "remove_reader", fd, readable, &on_pipe_readable_def);
    }
    if (writable != self->pipe_write) {
        self->pipe_write = writable;
        watch_fd(self, "add_writer", "remove_writer", fd, writable, &on_pipe_writable_def);
    }
    if (!readable && !writable)
        self->pipe_fd = -1;
}

static void hook_schedule_flush(void *host)
{
    Publisher *self = host;
    PyObject *cb = callback(self, &on_flush_def);
    if (cb == NULL || loop_call(self, "call_soon", "(O)", cb) < 0) {
        log_exception(self, "cannot schedule a write to Redis");
        self->pipe->flush_scheduled = 0;
    }
    Py_XDECREF(cb);
}

static void check_flush_waiters(Publisher *self);

static void hook_done(void *host, void *token, int status, const char *detail)
{
    Publisher *self = host;
    PyObject *fut = token;
    if (status == VPS_PUB_REDIS_ERROR) {
        log_text(self, "error", "Failed to publish to Redis: %s", detail ? detail : "error");
        set_last_error(self, detail ? detail : "publish failed");
    } else if (status == VPS_PUB_OK) {
        self->ack_late = 0;
    }
    resolve_future(fut);
    Py_DECREF(fut);
}

static void hook_notice(void *host, int what, const char *text)
{
    Publisher *self = host;
    switch (what) {
    case VPS_NOTE_CONNECTED:
        if (self->publish_outage) {
            log_text(self, "warning",
                     "Publishing connection to Redis is back; sending %zd queued messages%s",
                     (Py_ssize_t)self->pipe->out_count,
                     self->listener != NULL && !self->subscribed
                         ? " once this instance's listener has re-subscribed" : "");
            self->publish_outage = 0;
        } else {
            log_text(self, "debug", "Publishing connection to Redis established");
        }
        /* Redis is back: the listener need not finish its backoff */
        if (self->listener != NULL && !self->subscribed)
            vps_listener_nudge(self->listener);
        update_hold(self);
        break;
    case VPS_NOTE_LOST:
    case VPS_NOTE_CONNECT_FAILED:
        set_last_error(self, text);
        update_hold(self);
        if (!self->publish_outage) {
            self->publish_outage = 1;
            log_text(self, "warning",
                     "Redis unreachable for publishing (%s); publishes are queued in the outbox "
                     "(up to %zd messages / %zd bytes) and sent when it is back",
                     text, self->outbox_max_messages, self->outbox_max_bytes);
        }
        break;
    case VPS_NOTE_OVERFLOW: {
        /* at most one line per 5 s, however many messages are dropped */
        double now = vps_now();
        if (self->overflow_logged_at == 0 || now - self->overflow_logged_at >= 5.0) {
            log_text(self, "warning",
                     "Publish outbox full (%zd messages / %zd bytes): dropped the %llu oldest "
                     "queued messages (newer progress supersedes them; %llu dropped in total)",
                     self->outbox_max_messages, self->outbox_max_bytes,
                     (unsigned long long)(self->pipe->dropped - self->overflow_logged_total),
                     (unsigned long long)self->pipe->dropped);
            self->overflow_logged_at = now;
            self->overflow_logged_total = self->pipe->dropped;
        }
        (void)text;
        break;
    }
    }
}

static void drop_token(void *token)
{
    Py_DECREF((PyObject *)token);
}

/* ---- loop binding, fork check ------------------------------------------------------------ */

/* Refuse use in a forked child. 0/-1 with RuntimeError. */
static int check_process(Publisher *self)
{
    if (self->fork_generation != vps_fork_generation) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this UploadProgressPublisher was created before os.fork(); its threads "
                        "and connections belong to the parent. Create a new publisher in the child");
        return -1;
    }
    return 0;
}

/* Forget everything registered with a loop that has been closed. */
static void unbind_loop(Publisher *self)
{
    self->queue_watched = 0;
    if (self->pipe != NULL) {
        self->pipe_fd = -1;
        self->pipe_read = self->pipe_write = 0;
        vps_pipeline_close(self->pipe);
    }
    Py_CLEAR(self->start_timer);
    Py_CLEAR(self->stop_timer);
    Py_CLEAR(self->hold_timer);
    Py_CLEAR(self->ack_timer);
    if (self->start_waiters)
        PyList_SetSlice(self->start_waiters, 0, PyList_GET_SIZE(self->start_waiters), NULL);
    if (self->flush_waiters)
        PyList_SetSlice(self->flush_waiters, 0, PyList_GET_SIZE(self->flush_waiters), NULL);
    if (self->stop_waiters)
        PyList_SetSlice(self->stop_waiters, 0, PyList_GET_SIZE(self->stop_waiters), NULL);
    Py_CLEAR(self->create_future);
    Py_CLEAR(self->loop);
}

/* Make sure we are in the right process and bound to the running loop. 0/-1 with an
 * exception (RuntimeError when no loop runs or another loop owns this publisher). */
static int bind_loop(Publisher *self)
{
    if (check_process(self) < 0)
        return -1;
    PyObject *loop = PyObject_CallNoArgs(self->get_running_loop);
    if (loop == NULL)
        return -1;
    if (self->loop == loop) {
        Py_DECREF(loop);
        return 0;
    }
    if (self->loop != NULL) {
        PyObject *closed = PyObject_CallMethod(self->loop, "is_closed", NULL);
        int is_closed = closed ? PyObject_IsTrue(closed) : -1;
        Py_XDECREF(closed);
        if (is_closed <= 0) {
            Py_DECREF(loop);
            if (is_closed == 0)
                PyErr_SetString(PyExc_RuntimeError,
                                "this UploadProgressPublisher is bound to another event loop (the "
                                "first one it was used in); use one publisher per event loop");
            return -1;
        }
        unbind_loop(self);
    }
    PyObject *create_future = PyObject_GetAttrString(loop, "create_future");
    if (create_future == NULL) {
        Py_DECREF(loop);
        return -1;
    }
    self->loop = loop;
    self->create_future = create_future;
    if (self->listener != NULL) /* still running from the closed loop: deliver here now */
        watch_queue(self, 1);
    return 0;
}

/* ---- draining the queue ---------------------------------------------------------------- */

/* Hand a batch to the dispatcher (never raises; errors are logged). */
static void dispatch_batch(Publisher *self, PyObject **batch)
{
    if (*batch == NULL)
        return;
    if (PyList_GET_SIZE(*batch) > 0) {
        PyObject *r = PyObject_CallOneArg(self->dispatch, *batch);
        if (r == NULL)
            log_exception(self, "Error dispatching messages");
        Py_XDECREF(r);
    }
    Py_CLEAR(*batch);
}

/* Decode one message record into the batch, or count it as skipped. */
static void take_message(Publisher *self, vps_record *r, PyObject **batch)
{
    self->received++;
    PyObject *chan = PyUnicode_DecodeUTF8(r->data, r->chan_len, "strict");
    PyObject *payload = chan ? PyUnicode_DecodeUTF8(r->data + r->chan_len,
                                                    (Py_ssize_t)r->payload_len, "strict")
                             : NULL;
    if (payload == NULL) {
        PyErr_Clear();
        self->skipped++;
        log_text(self, "warning",
                 "Skipping a %zd-byte message on channel %R: it is not valid UTF-8",
                 (Py_ssize_t)r->payload_len,
                 chan ? chan : Py_None);
        Py_XDECREF(chan);
        return;
    }
    PyObject *pair = PyTuple_Pack(2, chan, payload);
    Py_DECREF(chan);
    Py_DECREF(payload);
    if (pair == NULL || (*batch == NULL && (*batch = PyList_New(0)) == NULL) ||
        PyList_Append(*batch, pair) < 0) {
        log_exception(self, "Cannot queue a message for dispatch");
    }
    Py_XDECREF(pair);
}

static PyObject *Publisher_on_hold_timeout(Publisher *self, PyObject *Py_UNUSED(unused))
{
    Py_CLEAR(self->hold_timer);
    if (self->listener != NULL && !self->subscribed) {
        self->hold_expired = 1;
        log_text(self, "warning",
                 "Redis listener still not subscribed; publishing anyway (this instance's "
                 "WebSockets miss what is published until it is)");
    }
    update_hold(self);
    Py_RETURN_NONE;
}

static PyObject *Publisher_on_ack_timeout(Publisher *self, PyObject *Py_UNUSED(unused))
{
    Py_CLEAR(self->ack_timer);
    double oldest;
    size_t released = vps_pipeline_expire(self->pipe, vps_now() - self->publish_timeout, &oldest);
    if (released > 0 && !self->ack_late) {
        self->ack_late = 1;
        char secs[32];
        snprintf(secs, sizeof secs, "%g", self->publish_timeout);
        log_text(self, "warning",
                 "Redis has not acknowledged %zd publishes within %s s; their callers no longer "
                 "wait (the messages stay queued and are sent when Redis answers)",
                 (Py_ssize_t)released, secs);
    }
    if (oldest > 0) {
        double delay = oldest + self->publish_timeout - vps_now();
        arm_timer(self, &self->ack_timer, delay > 0.001 ? delay : 0.001, &on_ack_timeout_def);
    }
    check_flush_waiters(self);
    Py_RETURN_NONE;
}

static void on_subscribed(Publisher *self)
{
    self->subscribed = 1;
    if (self->listener_outage) {
        log_text(self, "warning", "Redis listener reconnected and re-subscribed");
        self->listener_outage = 0;
    } else {
        log_text(self, "info", "Redis listener started (patterns: upload:*, user:*)");
    }
    self->hold_expired = 0;
    update_hold(self);
    vps_pipeline_nudge(self->pipe); /* Redis is back: the publisher need not finish its backoff */
    cancel_timer(&self->start_timer);
    resolve_all(self->start_waiters);
}

static void on_listener_down(Publisher *self, const char *why)
{
    self->subscribed = 0;
    self->listener_failures++;
    set_last_error(self, why);
    update_hold(self);
    if (!self->listener_outage) {
        self->listener_outage = 1;
        log_text(self, "warning", "Redis listener disconnected (%s); reconnecting", why);
    } else {
        log_text(self, "debug", "Redis listener reconnect failed (%s)", why);
    }
}

/* Process every queued record in arrival order. Loop thread. */
static void drain_queue(Publisher *self)
{
    vps_record *r = vps_queue_take_all(self->queue);
    PyObject *batch = NULL;
    while (r != NULL) {
        vps_record *next = r->next;
        switch (r->kind) {
        case VPS_REC_MESSAGE:
            take_message(self, r, &batch);
            vps_record_free(r);
            break;
        case VPS_REC_SUBSCRIBED:
            dispatch_batch(self, &batch);
            if (self->listener != NULL)
                on_subscribed(self);
            vps_record_free(r);
            break;
        case VPS_REC_LISTENER_DOWN:
            dispatch_batch(self, &batch);
            if (self->listener != NULL)
                on_listener_down(self, r->data);
            vps_record_free(r);
            break;
        default: /* PIPE_*: the pipeline takes the record */
            vps_pipeline_on_record(self->pipe, r);
            break;
        }
        r = next;
    }
    dispatch_batch(self, &batch);
    check_flush_waiters(self);
}

static PyObject *Publisher_on_wake(Publisher *self, PyObject *Py_UNUSED(unused))
{
    if (self->fork_generation == vps_fork_generation)
        drain_queue(self);
    else /* a forked child running the parent's loop: the queue is not ours, stop watching */
        watch_queue(self, 0);
    Py_RETURN_NONE;
}

/* ---- pipeline driving ---------------------------------------------------------------- */

static void finish_stop(Publisher *self);

static void check_flush_waiters(Publisher *self)
{
    if (vps_pipeline_pending(self->pipe) != 0)
        return;
    resolve_all(self->flush_waiters);
    if (self->stopping)
        finish_stop(self);
}

static PyObject *Publisher_on_pipe_readable(Publisher *self, PyObject *Py_UNUSED(unused))
{
    vps_pipeline_on_readable(self->pipe);
    check_flush_waiters(self);
    Py_RETURN_NONE;
}

static PyObject *Publisher_on_pipe_writable(Publisher *self, PyObject *Py_UNUSED(unused))
{
    vps_pipeline_flush(self->pipe);
    Py_RETURN_NONE;
}

static PyObject *Publisher_on_flush(Publisher *self, PyObject *Py_UNUSED(unused))
{
    if (self->pipe->flush_scheduled)
        vps_pipeline_flush(self->pipe);
    Py_RETURN_NONE;
}

/* ---- construction ---------------------------------------------------------------------- */

static char *dup_or_null(PyObject *o, int *failed)
{
    if (o == Py_None)
        return NULL;
    const char *s = PyUnicode_AsUTF8(o);
    char *copy = s ? strdup(s) : NULL;
    if (copy == NULL)
        *failed = 1;
    return copy;
}

/* Check a timeout-like argument. 0/-1 with ValueError. */
static int check_seconds(const char *name, double v)
{
    if (!isfinite(v) || v <= 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a positive number of seconds", name);
        return -1;
    }
    return 0;
}

static int check_count(const char *name, Py_ssize_t v)
{
    if (v <= 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a positive integer", name);
        return -1;
    }
    return 0;
}

/* Import `module` and return its attribute `name` (new reference). */
static PyObject *import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

/* Parse the URL through vuemantics_pubsub._config into self->ep. 0/-1. */
static int configure_endpoint(Publisher *self, PyObject *redis_url)
{
    int rc = -1, failed = 0;
    PyObject *resolve = import_attr("vuemantics_pubsub._config", "resolve_url");
    PyObject *parse = import_attr("vuemantics_pubsub._config", "parse_url");
    PyObject *redact = import_attr("vuemantics_pubsub._config", "redact");
    PyObject *url = NULL, *parts = NULL;
    if (resolve == NULL || parse == NULL || redact == NULL)
        goto done;
    url = PyObject_CallOneArg(resolve, redis_url);
    if (url == NULL)
        goto done;
    parts = PyObject_CallOneArg(parse, url);
    if (parts == NULL)
        goto done;
    self->url_shown = PyObject_CallOneArg(redact, url);
    if (self->url_shown == NULL)
        goto done;
    PyObject *host, *unix_path, *user, *password;
    int port, db;
    if (!PyArg_ParseTuple(parts, "OiOOOi", &host, &port, &unix_path, &user, &password, &db))
        goto done;
    self->ep.host = dup_or_null(host, &failed);
    self->ep.port = port;
    self->ep.unix_path = dup_or_null(unix_path, &failed);
    self->ep.username = dup_or_null(user, &failed);
    self->ep.password = dup_or_null(password, &failed);
    if (failed) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(resolve);
    Py_XDECREF(parse);
    Py_XDECREF(redact);
    Py_XDECREF(url);
    Py_XDECREF(parts);
    return rc;
}

static PyObject *Publisher_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"redis_url", "manager", "start_timeout", "connect_timeout",
                             "publish_timeout", "send_timeout", "ping_interval", "ping_timeout",
                             "backoff_min",
                             "backoff_max", "max_message_bytes", "outbox_max_messages",
                             "outbox_max_bytes", "queue_max_messages", "queue_max_bytes", NULL};
    PyObject *redis_url = Py_None, *manager = Py_None;
    double start_timeout = 2.0, connect_timeout = 2.0, publish_timeout = 2.0, send_timeout = 5.0,
           ping_interval = 5.0, ping_timeout = 2.0, backoff_min = 0.05, backoff_max = 0.8;
    Py_ssize_t max_message_bytes = -1, outbox_max_messages = 100000,
               outbox_max_bytes = 64 * 1024 * 1024, queue_max_messages = 100000,
               queue_max_bytes = 64 * 1024 * 1024;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$Oddddddddnnnnn:UploadProgressPublisher",
                                     kwlist, &redis_url, &manager, &start_timeout,
                                     &connect_timeout, &publish_timeout, &send_timeout, &ping_interval,
                                     &ping_timeout, &backoff_min, &backoff_max,
                                     &max_message_bytes, &outbox_max_messages, &outbox_max_bytes,
                                     &queue_max_messages, &queue_max_bytes))
        return NULL;
    if (max_message_bytes == -1) /* not given: 16 MiB, or less if the outbox is smaller */
        max_message_bytes = outbox_max_bytes < 16 * 1024 * 1024 ? outbox_max_bytes
                                                                 : 16 * 1024 * 1024;
    if (check_seconds("start_timeout", start_timeout) < 0 ||
        check_seconds("connect_timeout", connect_timeout) < 0 ||
        check_seconds("publish_timeout", publish_timeout) < 0 ||
        check_seconds("send_timeout", send_timeout) < 0 ||
        check_seconds("ping_interval", ping_interval) < 0 ||
        check_seconds("ping_timeout", ping_timeout) < 0 ||
        check_seconds("backoff_min", backoff_min) < 0 ||
        check_seconds("backoff_max", backoff_max) < 0 ||
        check_count("max_message_bytes", max_message_bytes) < 0 ||
        check_count("outbox_max_messages", outbox_max_messages) < 0 ||
        check_count("outbox_max_bytes", outbox_max_bytes) < 0 ||
        check_count("queue_max_messages", queue_max_messages) < 0 ||
        check_count("queue_max_bytes", queue_max_bytes) < 0)
        return NULL;
    if (backoff_max < backoff_min) {
        PyErr_SetString(PyExc_ValueError, "backoff_max must be >= backoff_min");
        return NULL;
    }
    if (max_message_bytes > outbox_max_bytes) {
        PyErr_SetString(PyExc_ValueError,
                        "max_message_bytes must not exceed outbox_max_bytes (a message the outbox "
                        "cannot hold would be dropped as soon as Redis is unreachable)");
        return NULL;
    }
    vps_module_state *st = PyType_GetModuleState(type);
    if (st == NULL)
        return NULL;

    Publisher *self = (Publisher *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->pipe_fd = -1;
    self->fork_generation = vps_fork_generation;
    self->start_timeout = start_timeout;
    self->send_timeout = send_timeout;
    self->publish_timeout = publish_timeout;
    self->ping_interval = ping_interval;
    self->ping_timeout = ping_timeout;
    self->backoff_min = backoff_min;
    self->backoff_max = backoff_max;
    self->ep.connect_timeout = connect_timeout;
    self->max_message_bytes = max_message_bytes;
    self->outbox_max_messages = outbox_max_messages;
    self->outbox_max_bytes = outbox_max_bytes;
    self->queue_max_messages = queue_max_messages;
    self->queue_max_bytes = queue_max_bytes;
    self->logger = Py_NewRef(st->logger);
    self->get_running_loop = Py_NewRef(st->get_running_loop);
    self->call_type = (PyTypeObject *)Py_NewRef(st->call_type);
    if (configure_endpoint(self, redis_url) < 0)
        goto fail;
    PyObject *factory = import_attr("vuemantics_pubsub._dispatch", "make_dispatcher");
    if (factory == NULL)
        goto fail;
    self->dispatcher = PyObject_CallFunction(factory, "Od", manager, send_timeout);
    Py_DECREF(factory);
    if (self->dispatcher == NULL)
        goto fail;
    self->dispatch = PyObject_GetAttrString(self->dispatcher, "dispatch");
    self->start_waiters = PyList_New(0);
    self->flush_waiters = PyList_New(0);
    self->stop_waiters = PyList_New(0);
    if (self->dispatch == NULL || self->start_waiters == NULL || self->flush_waiters == NULL ||
        self->stop_waiters == NULL)
        goto fail;
    self->queue = vps_queue_new((size_t)queue_max_messages, (size_t)queue_max_bytes);
    if (self->queue == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    vps_pipeline_hooks hooks = {self, hook_watch, hook_schedule_flush, hook_done, hook_notice};
    vps_err err;
    self->pipe = vps_pipeline_new(&self->ep, self->queue, &hooks, (size_t)outbox_max_messages,
                                  (size_t)outbox_max_bytes, backoff_min, backoff_max, &err);
    if (self->pipe == NULL) {
        PyErr_SetString(PyExc_OSError, err.text);
        goto fail;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* ---- lifecycle methods -------------------------------------------------------------------- */

PyDoc_STRVAR(start_doc, "start($self, /)\n--\n\n"
"Start the Redis listener. Returns an awaitable that completes once PSUBSCRIBE upload:* user:*\n"
"is confirmed, or after start_timeout with a warning logged if Redis is unreachable (the\n"
"listener keeps retrying in the background). Idempotent.");

/* start()'s operation: a future resolved once subscribed (or after start_timeout). */
static PyObject *run_start(PyObject *publisher, PyObject *Py_UNUSED(a), PyObject *Py_UNUSED(b))
{
    Publisher *self = (Publisher *)publisher;
    if (bind_loop(self) < 0)
        return NULL;
    if (self->running && self->subscribed)
        return done_future(self);
    PyObject *fut = new_future(self);
    if (fut == NULL)
        return NULL;
    if (PyList_Append(self->start_waiters, fut) < 0)
        goto fail;
    if (self->running) { /* a start is in progress: wait with it, bounded as the first was */
        arm_timer(self, &self->start_timer, self->start_timeout, &on_start_timeout_def);
        return fut;
    }
    if (self->stopping) /* a stop is flushing: finish it first */
        finish_stop(self);
    watch_queue(self, 1);
    vps_listener_opts opts = {self->ping_interval, self->ping_timeout, self->backoff_min,
                              self->backoff_max};
    vps_err err;
    self->listener = vps_listener_start(&self->ep, &opts, self->queue, &err);
    if (self->listener == NULL) {
        PyList_SetSlice(self->start_waiters, 0, PyList_GET_SIZE(self->start_waiters), NULL);
        PyErr_Format(PyExc_RuntimeError, "cannot start the Redis listener: %s", err.text);
        goto fail;
    }
    self->running = 1;
    self->subscribed = 0;
    self->listener_outage = 0;
    self->hold_expired = 0;
    update_hold(self);
    vps_pipeline_connect(self->pipe); /* warm the publishing connection too */
    arm_timer(self, &self->start_timer, self->start_timeout, &on_start_timeout_def);
    log_text(self, "info", "UploadProgressPublisher started");
    return fut;
fail:
    Py_DECREF(fut);
    return NULL;
}

static PyObject *Publisher_on_start_timeout(Publisher *self, PyObject *Py_UNUSED(unused))
{
    Py_CLEAR(self->start_timer);
    if (PyList_GET_SIZE(self->start_waiters) > 0) {
        char secs[32];
        snprintf(secs, sizeof secs, "%g", self->start_timeout);
        log_text(self, "warning",
                 "Redis listener not subscribed after %s s (%s); start() returns and the listener "
                 "keeps retrying in the background",
                 secs, self->last_error[0] ? self->last_error : "no answer yet");
        resolve_all(self->start_waiters);
    }
    Py_RETURN_NONE;
}

/* Stop the listener thread and deliver what it had queued. */
static void stop_listener(Publisher *self)
{
    if (self->listener == NULL)
        return;
    vps_listener *l = self->listener;
    Py_BEGIN_ALLOW_THREADS
    vps_listener_stop(l);
    Py_END_ALLOW_THREADS
    drain_queue(self); /* messages received before stop still go out */
    self->listener = NULL;
    vps_listener_free(l);
    self->running = 0;
    self->subscribed = 0;
    update_hold(self);
}

/* Last step of stop(): close the publishing connection, release every waiter. */
static void finish_stop(Publisher *self)
{
    self->stopping = 0;
    cancel_timer(&self->stop_timer);
    cancel_timer(&self->start_timer);
    cancel_timer(&self->hold_timer);
    cancel_timer(&self->ack_timer);
    size_t left = vps_pipeline_pending(self->pipe);
    vps_pipeline_close(self->pipe);
    if (left > 0)
        log_text(self, "warning",
                 "%zd published messages were not acknowledged by Redis before stop(); they stay "
                 "in the outbox and are sent if this publisher publishes again",
                 (Py_ssize_t)left);
    watch_queue(self, 0);
    PyObject *r = PyObject_CallMethod(self->dispatcher, "close", NULL);
    if (r == NULL)
        log_exception(self, "Error closing the dispatcher");
    Py_XDECREF(r);
    resolve_all(self->start_waiters);
    resolve_all(self->flush_waiters);
    log_text(self, "info", "UploadProgressPublisher stopped");
    resolve_all(self->stop_waiters);
}

static PyObject *Publisher_on_stop_timeout(Publisher *self, PyObject *Py_UNUSED(unused))
{
    Py_CLEAR(self->stop_timer);
    if (self->stopping)
        finish_stop(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stop_doc, "stop($self, /)\n--\n\n"
"Stop the listener, flush unacknowledged publishes (for at most 1 s), close the connections.\n"
"Returns an awaitable; idempotent; never raises for Redis problems.");

/* stop()'s operation: a future resolved once stopped and flushed (at most 1 s). */
static PyObject *run_stop(PyObject *publisher, PyObject *Py_UNUSED(a), PyObject *Py_UNUSED(b))
{
    Publisher *self = (Publisher *)publisher;
    if (bind_loop(self) < 0)
        return NULL;
    PyObject *fut = new_future(self);
    if (fut == NULL)
        return NULL;
    if (PyList_Append(self->stop_waiters, fut) < 0) {
        Py_DECREF(fut);
        return NULL;
    }
    if (self->stopping)
        return fut;
    stop_listener(self);
    if (vps_pipeline_pending(self->pipe) > 0) {
        /* give unacknowledged and queued publishes up to 1 s to reach Redis */
        self->stopping = 1;
        vps_pipeline_connect(self->pipe);
        arm_timer(self, &self->stop_timer, 1.0, &on_stop_timeout_def);
        if (self->stop_timer == NULL)
            finish_stop(self);
        return fut;
    }
    finish_stop(self);
    return fut;
}

/* ---- publishing ------------------------------------------------------------------------- */

/* The payload bytes of `message` into *buf and *len; *owner keeps them alive (new reference).
 * 0/-1 with TypeError (or whatever model_dump_json raised). */
static int message_bytes(PyObject *message, PyObject **owner, const char **buf, Py_ssize_t *len)
{
    PyObject *text;
    if (PyUnicode_Check(message) || PyBytes_Check(message)) {
        text = Py_NewRef(message);
    } else {
        PyObject *dump = PyObject_GetAttrString(message, "model_dump_json");
        if (dump == NULL) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "message must be a pydantic model (with model_dump_json()), str or bytes, "
                         "not %.100s",
                         Py_TYPE(message)->tp_name);
            return -1;
        }
        text = PyObject_CallNoArgs(dump);
        Py_DECREF(dump);
        if (text == NULL)
            return -1;
        if (!PyUnicode_Check(text) && !PyBytes_Check(text)) {
            PyErr_Format(PyExc_TypeError, "model_dump_json() returned %.100s, not str",
                         Py_TYPE(text)->tp_name);
            Py_DECREF(text);
            return -1;
        }
    }
    if (PyUnicode_Check(text)) {
        *buf = PyUnicode_AsUTF8AndSize(text, len);
        if (*buf == NULL) {
            Py_DECREF(text);
            return -1;
        }
    } else {
        *buf = PyBytes_AS_STRING(text);
        *len = PyBytes_GET_SIZE(text);
    }
    *owner = text;
    return 0;
}

/* PUBLISH `prefix{id}` message; returns a future (new reference) or NULL. */
static PyObject *publish(Publisher *self, const char *prefix, size_t prefix_len, PyObject *id_obj,
                         PyObject *message)
{
    if (bind_loop(self) < 0)
        return NULL;
    PyObject *id_text = NULL, *owner = NULL, *fut = NULL;
    char stackbuf[256], *chan = stackbuf;
    const char *payload, *id;
    Py_ssize_t payload_len, id_len;
    id_text = PyUnicode_CheckExact(id_obj) ? Py_NewRef(id_obj) : PyObject_Format(id_obj, NULL);
    if (id_text == NULL)
        goto done;
    if (!PyUnicode_Check(id_text)) {
        PyErr_SetString(PyExc_TypeError, "format() of the id did not return str");
        goto done;
    }
    id = PyUnicode_AsUTF8AndSize(id_text, &id_len);
    if (id == NULL || message_bytes(message, &owner, &payload, &payload_len) < 0)
        goto done;
    if (payload_len > self->max_message_bytes) {
        PyErr_Format(PyExc_ValueError,
                     "message is %zd bytes, more than max_message_bytes=%zd (Redis would also cut "
                     "off subscribers whose output buffer passes its pubsub limit)",
                     payload_len, self->max_message_bytes);
        goto done;
    }
    size_t chan_len = prefix_len + (size_t)id_len;
    if (chan_len > sizeof stackbuf && (chan = PyMem_Malloc(chan_len)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(chan, prefix, prefix_len);
    memcpy(chan + prefix_len, id, (size_t)id_len);
    if (!self->queue_watched)
        watch_queue(self, 1); /* connector results arrive through the queue */
    fut = new_future(self);
    if (fut == NULL)
        goto done;
    Py_INCREF(fut); /* the pipeline's token */
    int rc = vps_pipeline_publish(self->pipe, chan, chan_len, payload, (size_t)payload_len, fut);
    if (rc == -1) {
        Py_DECREF(fut);
        Py_CLEAR(fut);
        PyErr_NoMemory();
    } else if (rc == VPS_PUB_QUEUED) {
        Py_DECREF(fut); /* not kept: Redis is unreachable, the message waits in the outbox */
        resolve_future(fut);
    } else {
        if (self->ack_timer == NULL) /* bound the wait even if Redis stops answering */
            arm_timer(self, &self->ack_timer, self->publish_timeout, &on_ack_timeout_def);
        if (self->pipe->hold && self->hold_timer == NULL)
            update_hold(self); /* the first publish held back starts the cap */
    }
done:
    if (chan != stackbuf)
        PyMem_Free(chan);
    Py_XDECREF(id_text);
    Py_XDECREF(owner);
    return fut;
}

PyDoc_STRVAR(publish_progress_doc, "publish_progress($self, upload_id, message, /)\n--\n\n"
"PUBLISH message on upload:{upload_id}. message is a pydantic model (its model_dump_json()),\n"
"str or bytes. Returns an awaitable that completes once Redis acknowledged it (or once it is\n"
"queued while Redis is unreachable). Redis errors are logged, never raised.");

static PyObject *run_flush(PyObject *publisher, PyObject *a, PyObject *b);

static PyObject *run_publish_progress(PyObject *publisher, PyObject *id, PyObject *message)
{
    return publish((Publisher *)publisher, "upload:", 7, id, message);
}

static PyObject *run_publish_to_user(PyObject *publisher, PyObject *id, PyObject *message)
{
    return publish((Publisher *)publisher, "user:", 5, id, message);
}

/* The awaitable for a two-argument method; TypeError (at call time, as for a function)
 * unless exactly two positional arguments. */
static PyObject *publish_call(Publisher *self, PyObject *const *args, Py_ssize_t nargs,
                              vps_call_fn fn, const char *name)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly 2 arguments (%zd given)", name, nargs);
        return NULL;
    }
    return vps_call_new(self->call_type, (PyObject *)self, fn, name, args[0], args[1]);
}

static PyObject *Publisher_publish_progress(Publisher *self, PyObject *const *args,
                                            Py_ssize_t nargs)
{
    return publish_call(self, args, nargs, run_publish_progress, "publish_progress");
}

PyDoc_STRVAR(publish_to_user_doc, "publish_to_user($self, user_id, message, /)\n--\n\n"
"PUBLISH message on user:{user_id}; otherwise as publish_progress().");

static PyObject *Publisher_publish_to_user(Publisher *self, PyObject *const *args,
                                           Py_ssize_t nargs)
{
    return publish_call(self, args, nargs, run_publish_to_user, "publish_to_user");
}

static PyObject *Publisher_start(Publisher *self, PyObject *Py_UNUSED(unused))
{
    return vps_call_new(self->call_type, (PyObject *)self, run_start, "start", NULL, NULL);
}

static PyObject *Publisher_stop(Publisher *self, PyObject *Py_UNUSED(unused))
{
    return vps_call_new(self->call_type, (PyObject *)self, run_stop, "stop", NULL, NULL);
}

static PyObject *Publisher_flush(Publisher *self, PyObject *Py_UNUSED(unused))
{
    return vps_call_new(self->call_type, (PyObject *)self, run_flush, "flush", NULL, NULL);
}

PyDoc_STRVAR(flush_doc, "flush($self, /)\n--\n\n"
"Returns an awaitable that completes when every publish made so far has been acknowledged by\n"
"Redis. While Redis is unreachable it waits; wrap it in asyncio.wait_for() to bound that.");

/* flush()'s operation: a future resolved when nothing is pending. */
static PyObject *run_flush(PyObject *publisher, PyObject *Py_UNUSED(a), PyObject *Py_UNUSED(b))
{
    Publisher *self = (Publisher *)publisher;
    if (bind_loop(self) < 0)
        return NULL;
    if (vps_pipeline_pending(self->pipe) == 0)
        return done_future(self);
    PyObject *fut = new_future(self);
    if (fut != NULL && PyList_Append(self->flush_waiters, fut) < 0)
        Py_CLEAR(fut);
    if (fut != NULL)
        vps_pipeline_connect(self->pipe);
    return fut;
}

/* ---- introspection -------------------------------------------------------------------- */

static int put_u64(PyObject *d, const char *key, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    int rc = o ? PyDict_SetItemString(d, key, o) : -1;
    Py_XDECREF(o);
    return rc;
}

PyDoc_STRVAR(stats_doc, "stats($self, /)\n--\n\n"
"A dict of counters and state: received, delivered, skipped (not UTF-8), ignored (other\n"
"channels), send_failed, send_timeouts, published, publish_failed, publish_queued,\n"
"outbox_depth, outbox_bytes, outbox_dropped, in_flight, queue_depth, queue_full_waits,\n"
"listener_reconnects,\n"
"publisher_reconnects, connected, publisher_connected, running, last_error.");

static PyObject *Publisher_stats(Publisher *self, PyObject *Py_UNUSED(unused))
{
    PyObject *d = PyObject_CallMethod(self->dispatcher, "counters", NULL);
    if (d == NULL)
        return NULL;
    vps_pipeline *p = self->pipe;
    int forked = self->fork_generation != vps_fork_generation;
    if (put_u64(d, "received", self->received) < 0 || put_u64(d, "skipped", self->skipped) < 0 ||
        put_u64(d, "published", p->ok) < 0 || put_u64(d, "publish_failed", p->failed) < 0 ||
        put_u64(d, "publish_queued", p->queued) < 0 ||
        put_u64(d, "outbox_depth", p->out_count) < 0 ||
        put_u64(d, "outbox_bytes", p->out_bytes) < 0 ||
        put_u64(d, "outbox_dropped", p->dropped) < 0 ||
        put_u64(d, "in_flight", p->sent_count) < 0 ||
        put_u64(d, "queue_depth", forked ? 0 : vps_queue_depth(self->queue)) < 0 ||
        put_u64(d, "queue_full_waits", forked ? 0 : vps_queue_full_waits(self->queue)) < 0 ||
        put_u64(d, "listener_reconnects", self->listener_failures) < 0 ||
        put_u64(d, "publisher_reconnects", p->reconnects) < 0 ||
        PyDict_SetItemString(d, "connected", self->subscribed ? Py_True : Py_False) < 0 ||
        PyDict_SetItemString(d, "publisher_connected", p->fd >= 0 ? Py_True : Py_False) < 0 ||
        PyDict_SetItemString(d, "running", self->running ? Py_True : Py_False) < 0)
        goto fail;
    PyObject *err = self->last_error[0] ? PyUnicode_DecodeUTF8(self->last_error,
                                                               (Py_ssize_t)strlen(self->last_error),
                                                               "replace")
                                        : Py_NewRef(Py_None);
    if (err == NULL || PyDict_SetItemString(d, "last_error", err) < 0) {
        Py_XDECREF(err);
        goto fail;
    }
    Py_DECREF(err);
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *Publisher_get_connected(Publisher *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->subscribed);
}

static PyObject *Publisher_get_running(Publisher *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->running);
}

static PyObject *Publisher_get_redis_url(Publisher *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->url_shown ? self->url_shown : Py_None);
}

static PyObject *Publisher_repr(Publisher *self)
{
    return PyUnicode_FromFormat("<UploadProgressPublisher %R %s%s>",
                                self->url_shown ? self->url_shown : Py_None,
                                self->running ? "running" : "stopped",
                                self->subscribed ? ", subscribed" : "");
}

/* ---- GC and deallocation -------------------------------------------------------------- */

static int Publisher_traverse(Publisher *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dispatcher);
    Py_VISIT(self->dispatch);
    Py_VISIT(self->loop);
    Py_VISIT(self->create_future);
    Py_VISIT(self->start_waiters);
    Py_VISIT(self->start_timer);
    Py_VISIT(self->flush_waiters);
    Py_VISIT(self->stop_waiters);
    Py_VISIT(self->stop_timer);
    Py_VISIT(self->hold_timer);
    Py_VISIT(self->ack_timer);
    if (self->pipe != NULL) {
        for (vps_cmd *c = self->pipe->sent_head; c != NULL; c = c->next)
            Py_VISIT((PyObject *)c->token);
        for (vps_cmd *c = self->pipe->out_head; c != NULL; c = c->next)
            Py_VISIT((PyObject *)c->token);
    }
    return 0;
}

static int Publisher_clear(Publisher *self)
{
    Py_CLEAR(self->dispatch);
    Py_CLEAR(self->dispatcher);
    Py_CLEAR(self->start_timer);
    Py_CLEAR(self->stop_timer);
    Py_CLEAR(self->hold_timer);
    Py_CLEAR(self->ack_timer);
    Py_CLEAR(self->start_waiters);
    Py_CLEAR(self->flush_waiters);
    Py_CLEAR(self->stop_waiters);
    Py_CLEAR(self->create_future);
    Py_CLEAR(self->loop);
    return 0;
}

static void Publisher_dealloc(Publisher *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    int forked = self->fork_generation != vps_fork_generation;
    if (self->listener != NULL) {
        if (forked) {
            vps_listener_abandon(self->listener);
        } else {
            vps_listener *l = self->listener;
            Py_BEGIN_ALLOW_THREADS
            vps_listener_stop(l);
            Py_END_ALLOW_THREADS
            vps_listener_free(l);
        }
        self->listener = NULL;
    }
    if (self->pipe != NULL) {
        if (forked)
            vps_pipeline_abandon(self->pipe, drop_token);
        else
            vps_pipeline_free(self->pipe, drop_token);
        self->pipe = NULL;
    }
    if (forked)
        vps_queue_abandon(self->queue);
    else
        vps_queue_free(self->queue);
    self->queue = NULL;
    Publisher_clear(self);
    Py_CLEAR(self->logger);
    Py_CLEAR(self->get_running_loop);
    Py_CLEAR(self->call_type);
    Py_CLEAR(self->url_shown);
    free(self->ep.host);
    free(self->ep.unix_path);
    free(self->ep.username);
    if (self->ep.password != NULL) {
        memset(self->ep.password, 0, strlen(self->ep.password));
        free(self->ep.password);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- type spec ---------------------------------------------------------------------- */

static PyMethodDef Publisher_methods[] = {
    {"start", (PyCFunction)Publisher_start, METH_NOARGS, start_doc},
    {"stop", (PyCFunction)Publisher_stop, METH_NOARGS, stop_doc},
    {"publish_progress", (PyCFunction)(void (*)(void))Publisher_publish_progress, METH_FASTCALL,
     publish_progress_doc},
    {"publish_to_user", (PyCFunction)(void (*)(void))Publisher_publish_to_user, METH_FASTCALL,
     publish_to_user_doc},
    {"flush", (PyCFunction)Publisher_flush, METH_NOARGS, flush_doc},
    {"stats", (PyCFunction)Publisher_stats, METH_NOARGS, stats_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Publisher_getset[] = {
    {"connected", (getter)Publisher_get_connected, NULL,
     "True while the listener's subscription is confirmed.", NULL},
    {"running", (getter)Publisher_get_running, NULL, "True between start() and stop().", NULL},
    {"redis_url", (getter)Publisher_get_redis_url, NULL,
     "The Redis URL in use, password replaced by ***.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Publisher_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(Publisher, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Publisher_doc,
"UploadProgressPublisher(redis_url=None, *, manager=None, start_timeout=2.0,\n"
"    connect_timeout=2.0, publish_timeout=2.0, send_timeout=5.0, ping_interval=5.0, ping_timeout=2.0,\n"
"    backoff_min=0.05, backoff_max=0.8, max_message_bytes=16 MiB,\n"
"    outbox_max_messages=100000, outbox_max_bytes=64 MiB,\n"
"    queue_max_messages=100000, queue_max_bytes=64 MiB)\n"
"--\n\n"
"Redis pub/sub -> WebSocket bridge for upload progress (drop-in for the backend's class).");

static PyType_Slot Publisher_slots[] = {
    {Py_tp_new, Publisher_new},
    {Py_tp_dealloc, Publisher_dealloc},
    {Py_tp_traverse, Publisher_traverse},
    {Py_tp_clear, Publisher_clear},
    {Py_tp_repr, Publisher_repr},
    {Py_tp_methods, Publisher_methods},
    {Py_tp_getset, Publisher_getset},
    {Py_tp_members, Publisher_members},
    {Py_tp_doc, (void *)Publisher_doc},
    {0, NULL},
};

PyType_Spec vps_publisher_spec = {
    .name = "vuemantics_pubsub._native.UploadProgressPublisher",
    .basicsize = sizeof(Publisher),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Publisher_slots,
};
