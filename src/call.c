/* call.c: the coroutine-like awaitable returned by start, stop, publish_progress, publish_to_user, flush.
 * Threading: loop thread, GIL held. */
#include "call.h"

enum { CALL_NEW, CALL_WAITING, CALL_DONE };

typedef struct {
    PyObject_HEAD
    PyObject *publisher;
    PyObject *a, *b;     /* the operation's arguments until it runs */
    PyObject *fut;       /* while waiting: the future handed to the task */
    vps_call_fn fn;
    const char *name;
    int state;
} Call;

PyObject *vps_call_new(PyTypeObject *type, PyObject *publisher, vps_call_fn fn, const char *name,
                       PyObject *a, PyObject *b)
{
    Call *self = PyObject_GC_New(Call, type);
    if (self == NULL)
        return NULL;
    self->publisher = Py_NewRef(publisher);
    self->a = Py_XNewRef(a);
    self->b = Py_XNewRef(b);
    self->fut = NULL;
    self->fn = fn;
    self->name = name;
    self->state = CALL_NEW;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* fut.done() as 1/0, or -1 with an exception. */
static int future_done(PyObject *fut)
{
    PyObject *r = PyObject_CallMethod(fut, "done", NULL);
    if (r == NULL)
        return -1;
    int done = PyObject_IsTrue(r);
    Py_DECREF(r);
    return done;
}

/* Cancel a future that is still pending (its waiter went away). */
static void cancel_pending(PyObject *fut)
{
    PyObject *r = PyObject_CallMethod(fut, "cancel", NULL);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
}

/* Finish without running further: a pending future is cancelled, the arguments dropped. */
static void abandon(Call *self)
{
    if (self->fut != NULL) {
        cancel_pending(self->fut);
        Py_CLEAR(self->fut);
    }
    Py_CLEAR(self->a);
    Py_CLEAR(self->b);
    self->state = CALL_DONE;
}

/* One step: run the operation (first call) or collect its result (after the task was woken).
 * PYGEN_NEXT with the future to wait on, PYGEN_RETURN with the result, or PYGEN_ERROR. */
static PySendResult Call_am_send(Call *self, PyObject *Py_UNUSED(arg), PyObject **presult)
{
    PyObject *fut;
    if (self->state == CALL_NEW) {
        self->state = CALL_DONE;
        fut = self->fn(self->publisher, self->a, self->b);
        Py_CLEAR(self->a);
        Py_CLEAR(self->b);
    } else if (self->state == CALL_WAITING) {
        fut = self->fut;
        self->fut = NULL;
        self->state = CALL_DONE;
    } else {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    if (fut == NULL)
        return PYGEN_ERROR;
    int done = future_done(fut);
    if (done < 0)
        goto error;
    if (!done) {
        /* hand the future to the task exactly as `await fut` would */
        if (PyObject_SetAttrString(fut, "_asyncio_future_blocking", Py_True) < 0)
            goto error;
        self->fut = fut;
        self->state = CALL_WAITING;
        *presult = Py_NewRef(fut);
        return PYGEN_NEXT;
    }
    PyObject *result = PyObject_CallMethod(fut, "result", NULL);
    Py_DECREF(fut);
    if (result == NULL)
        return PYGEN_ERROR;
    *presult = result;
    return PYGEN_RETURN;
error:
    Py_DECREF(fut);
    return PYGEN_ERROR;
}

/* Raise StopIteration carrying `result` (consumed). */
static void set_stop_iteration(PyObject *result)
{
    if (result == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
    } else {
        PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, result);
        if (exc != NULL) {
            PyErr_SetObject(PyExc_StopIteration, exc);
            Py_DECREF(exc);
        }
    }
    Py_DECREF(result);
}

static PyObject *Call_iternext(Call *self)
{
    PyObject *result;
    PySendResult r = Call_am_send(self, Py_None, &result);
    if (r == PYGEN_NEXT)
        return result;
    if (r == PYGEN_RETURN) {
        if (result == Py_None) {
            Py_DECREF(result);
            return NULL; /* StopIteration(None), without creating it */
        }
        set_stop_iteration(result);
    }
    return NULL;
}

PyDoc_STRVAR(send_doc, "send($self, value, /)\n--\n\nResume the awaitable (coroutine protocol).");

static PyObject *Call_send(Call *self, PyObject *value)
{
    PyObject *result;
    PySendResult r = Call_am_send(self, value, &result);
    if (r == PYGEN_NEXT)
        return result;
    if (r == PYGEN_RETURN)
        set_stop_iteration(result);
    return NULL;
}

PyDoc_STRVAR(throw_doc, "throw($self, typ, val=None, tb=None, /)\n--\n\n"
"Raise an exception at the await point (coroutine protocol); the awaitable is finished.");

static PyObject *Call_throw(Call *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;
    abandon(self);
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val == Py_None ? NULL : val);
    } else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must be classes or instances deriving from BaseException");
    }
    return NULL;
}

PyDoc_STRVAR(close_doc, "close($self, /)\n--\n\nFinish the awaitable without running it further.");

static PyObject *Call_close(Call *self, PyObject *Py_UNUSED(unused))
{
    abandon(self);
    Py_RETURN_NONE;
}

static PyObject *Call_await(Call *self)
{
    return Py_NewRef(self);
}

static PyObject *Call_repr(Call *self)
{
    static const char *states[] = {"not started", "waiting", "done"};
    return PyUnicode_FromFormat("<UploadProgressPublisher.%s() awaitable, %s>", self->name,
                                states[self->state]);
}

static int Call_traverse(Call *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->publisher);
    Py_VISIT(self->a);
    Py_VISIT(self->b);
    Py_VISIT(self->fut);
    return 0;
}

static int Call_clear(Call *self)
{
    Py_CLEAR(self->publisher);
    Py_CLEAR(self->a);
    Py_CLEAR(self->b);
    Py_CLEAR(self->fut);
    return 0;
}

static void Call_dealloc(Call *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->state == CALL_NEW && self->publisher != NULL) {
        /* the same warning a forgotten coroutine of the original would give */
        PyObject *exc_type, *exc_value, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                             "coroutine 'UploadProgressPublisher.%s' was never awaited",
                             self->name) < 0)
            PyErr_WriteUnraisable((PyObject *)self);
        PyErr_Restore(exc_type, exc_value, exc_tb);
    }
    Call_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef Call_methods[] = {
    {"send", (PyCFunction)Call_send, METH_O, send_doc},
    {"throw", (PyCFunction)(void (*)(void))Call_throw, METH_FASTCALL, throw_doc},
    {"close", (PyCFunction)Call_close, METH_NOARGS, close_doc},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Call_slots[] = {
    {Py_am_await, Call_await},
    {Py_am_send, Call_am_send},
    {Py_tp_iter, Call_await},
    {Py_tp_iternext, Call_iternext},
    {Py_tp_methods, Call_methods},
    {Py_tp_repr, Call_repr},
    {Py_tp_traverse, Call_traverse},
    {Py_tp_clear, Call_clear},
    {Py_tp_dealloc, Call_dealloc},
    {Py_tp_doc, (void *)"Awaitable returned by UploadProgressPublisher's methods; runs when awaited."},
    {0, NULL},
};

PyType_Spec vps_call_spec = {
    .name = "vuemantics_pubsub._native.Awaitable",
    .basicsize = sizeof(Call),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Call_slots,
};
