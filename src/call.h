/* call.h: the awaitable that the publisher's methods return: a native coroutine-like object
 * (send/throw/close/__await__, so asyncio.create_task(), asyncio.run() and gather() accept it
 * as they accept the original's coroutines) that runs the operation when first awaited.
 * Threading: loop thread, GIL held. */
#ifndef VPS_CALL_H
#define VPS_CALL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The operation: returns a future of the running loop (new reference) or NULL with an
 * exception. Runs when the awaitable is first resumed, inside the caller's task. */
typedef PyObject *(*vps_call_fn)(PyObject *publisher, PyObject *a, PyObject *b);

extern PyType_Spec vps_call_spec;

/* A new awaitable of `type` (vps_call_spec's type) that will run fn(publisher, a, b); `name`
 * (static) names it in reprs and warnings. a and b may be NULL. New reference or NULL. */
PyObject *vps_call_new(PyTypeObject *type, PyObject *publisher, vps_call_fn fn, const char *name,
                       PyObject *a, PyObject *b);

#endif
