/* module.h: the extension module's state and the Publisher type's spec.
 * Threading: loop thread (or import thread) with the GIL held. */
#ifndef VPS_MODULE_H
#define VPS_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyTypeObject *publisher_type;
    PyTypeObject *call_type;    /* the awaitable the methods return */
    PyObject *get_running_loop; /* asyncio.get_running_loop */
    PyObject *logger;           /* logging.getLogger("vuemantics_pubsub") */
} vps_module_state;

/* Process-wide count of fork()s seen in this process's ancestry: a publisher made before a
 * fork sees a different value in the child. Written only by the atfork child handler. */
extern volatile unsigned long vps_fork_generation;

/* The Publisher type's spec (publisher.c). */
extern PyType_Spec vps_publisher_spec;

/* The module definition (module.c), for PyType_GetModuleByDef. */
extern PyModuleDef vps_module_def;

#endif
