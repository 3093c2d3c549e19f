/*
 * Checked access to numpy arrays through the buffer protocol, shared by the service's C extensions.
 */
#ifndef VITBENCH_ARRAYS_H
#define VITBENCH_ARRAYS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* A C-contiguous buffer of `itemsize`-byte items of `kind`: 'f' float, 'i' signed integer, 'u' uint8.
 * `writable`: the buffer must accept writes. On failure: a TypeError naming `name`, -1. */
static int get_array(PyObject *object, Py_buffer *view, char kind, Py_ssize_t itemsize, const char *name,
                     int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) return -1;
    const char *format = view->format ? view->format : "B";
    if (*format == '<' || *format == '=' || *format == '@') format++;
    int ok = view->itemsize == itemsize;
    if (kind == 'f') ok = ok && *format == 'f';
    else if (kind == 'u') ok = ok && *format == 'B';
    else ok = ok && (*format == 'l' || *format == 'q');
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous %s array, got format '%s'", name,
                     kind == 'f' ? "float32" : kind == 'u' ? "uint8" : "int64",
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Every int64 in `view` lies in 0..limit-1; else a ValueError naming `name` and the index, -1. */
static int check_indices(const Py_buffer *view, Py_ssize_t limit, const char *name) {
    const int64_t *v = view->buf;
    for (Py_ssize_t i = 0; i < view->len / 8; i++) {
        if (v[i] < 0 || v[i] >= limit) {
            PyErr_Format(PyExc_ValueError, "%s[%zd] = %lld is outside 0..%zd", name, i, (long long)v[i],
                         limit - 1);
            return -1;
        }
    }
    return 0;
}

#endif
