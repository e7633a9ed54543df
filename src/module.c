/* module.c: the _native module: multi-phase init, module state, the fork handler.
 * Threading: import time and GC on the thread holding the GIL; the atfork handler runs in the
 * forking thread of the child. */
#include "module.h"

#include <pthread.h>

#include "call.h"
#include "compat.h"

/* Child side of fork(): publishers made before it refuse to run. Async-signal-safe. */
static void on_fork_child(void)
{
    vps_fork_generation++;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

static int module_exec(PyObject *module)
{
    vps_module_state *st = PyModule_GetState(module);
    pthread_once(&atfork_once, install_atfork);
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL)
        return -1;
    st->get_running_loop = PyObject_GetAttrString(asyncio, "get_running_loop");
    Py_DECREF(asyncio);
    if (st->get_running_loop == NULL)
        return -1;
    PyObject *logging = PyImport_ImportModule("logging");
    if (logging == NULL)
        return -1;
    st->logger = PyObject_CallMethod(logging, "getLogger", "s", "vuemantics_pubsub");
    Py_DECREF(logging);
    if (st->logger == NULL)
        return -1;
    st->call_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &vps_call_spec, NULL);
    if (st->call_type == NULL || PyModule_AddType(module, st->call_type) < 0)
        return -1;
    st->publisher_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &vps_publisher_spec, NULL);
    if (st->publisher_type == NULL)
        return -1;
    if (PyModule_AddType(module, st->publisher_type) < 0)
        return -1;
    if (PyModule_AddStringConstant(module, "hiredis_version", VPS_HIREDIS_VERSION_STR) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    vps_module_state *st = PyModule_GetState(module);
    Py_VISIT(st->publisher_type);
    Py_VISIT(st->call_type);
    Py_VISIT(st->get_running_loop);
    Py_VISIT(st->logger);
    return 0;
}

static int module_clear(PyObject *module)
{
    vps_module_state *st = PyModule_GetState(module);
    Py_CLEAR(st->publisher_type);
    Py_CLEAR(st->call_type);
    Py_CLEAR(st->get_running_loop);
    Py_CLEAR(st->logger);
    return 0;
}

static void module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

PyModuleDef vps_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vuemantics_pubsub._native",
    .m_doc = "Native core of vuemantics-pubsub: hiredis listener thread, publish pipeline.",
    .m_size = sizeof(vps_module_state),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModuleDef_Init(&vps_module_def);
}
