/*
 * C implementation of gal_friday.kraken.book.BookSide (the hot path of the local L2 book).
 *
 * Same contract as the pure-Python BookSide it replaces (tests run both and compare):
 * levels sorted best first, prices and quantities as integers scaled by the pair's precision,
 * each level's Kraken checksum text ("<price><qty>" with leading zeros stripped) kept beside it
 * and the encoded top-ten text cached until a change reaches the top ten.
 *
 * apply(levels, price_precision, qty_precision) parses the wire numbers itself (raw JSON text
 * as str, or int) for the common "digits[.digits]" form and hands anything else (exponents,
 * junk) to the Python parser, so both implementations accept and refuse exactly the same input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define TOP 10
#define TEXT_MAX 48
#define MAX_SCALED INT64_MAX

typedef struct {
    int64_t key;    /* price for asks, -price for bids: ascending order = best first */
    int64_t price;
    int64_t qty;
    uint8_t text_len;
    char text[TEXT_MAX];
} Level;

typedef struct {
    PyObject_HEAD
    int sign;
    Py_ssize_t len;
    Py_ssize_t cap;
    Level *levels;
    PyObject *encoded; /* cached bytes of the top-ten texts, or NULL */
    PyObject *top;     /* cached tuple of the best top_n levels, or NULL */
    Py_ssize_t top_n;
} BookSideObject;

static PyObject *slow_parser = NULL;   /* gal_friday.kraken.numbers.to_scaled */
static PyObject *number_error = NULL;  /* gal_friday.kraken.numbers.WireNumberError */
static PyObject *str_price = NULL;
static PyObject *str_qty = NULL;

static const int64_t POW10[19] = {
    1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL, 100000000LL,
    1000000000LL, 10000000000LL, 100000000000LL, 1000000000000LL, 10000000000000LL,
    100000000000000LL, 1000000000000000LL, 10000000000000000LL, 100000000000000000LL,
    1000000000000000000LL};

static int load_python_helpers(void) {
    if (slow_parser != NULL) return 0;
    PyObject *mod = PyImport_ImportModule("gal_friday.kraken.numbers");
    if (mod == NULL) return -1;
    slow_parser = PyObject_GetAttrString(mod, "to_scaled");
    number_error = PyObject_GetAttrString(mod, "WireNumberError");
    Py_DECREF(mod);
    return (slow_parser && number_error) ? 0 : -1;
}

/* Python's careful parser for anything the fast path does not handle; -1 with error set. */
static int parse_slow(PyObject *raw, int precision, int64_t *out) {
    if (load_python_helpers() < 0) return -1;
    PyObject *res = PyObject_CallFunction(slow_parser, "Oi", raw, precision);
    if (res == NULL) return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(res, &overflow);
    Py_DECREF(res);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        PyErr_SetString(number_error, "amount too large");
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* Parse "digits[.digits]" scaled by 10**precision; returns 1 if handled, 0 to defer, -1 error. */
static int parse_fast(const char *s, Py_ssize_t n, int precision, int64_t *out) {
    uint64_t v = 0;
    Py_ssize_t i = 0;
    int digits = 0, frac = 0, seen_dot = 0;
    if (n == 0 || n > 40) return 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (seen_dot) {
                if (frac >= precision) {
                    if (c != '0') return 0; /* more decimals than precision: Python decides */
                    continue;
                }
                frac++;
            }
            if (digits >= 18) return 0; /* may not fit: Python decides */
            v = v * 10 + (uint64_t)(c - '0');
            if (v) digits++;
        } else if (c == '.' && !seen_dot && i > 0) {
            seen_dot = 1;
        } else {
            return 0;
        }
    }
    if (seen_dot && s[n - 1] == '.') return 0;
    int pad = precision - frac;
    if (pad < 0 || pad > 18) return 0;
    if (digits + pad > 18) return 0;
    *out = (int64_t)(v * (uint64_t)POW10[pad]);
    return 1;
}

static int parse_number(PyObject *raw, int precision, int64_t *out) {
    if (PyUnicode_CheckExact(raw)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(raw, &n);
        if (s == NULL) return -1;
        int r = parse_fast(s, n, precision, out);
        if (r != 0) return r < 0 ? -1 : 0;
    } else if (PyLong_CheckExact(raw) && precision <= 18) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(raw, &overflow);
        if (!overflow && v >= 0 && v <= MAX_SCALED / POW10[precision]) {
            *out = (int64_t)v * POW10[precision];
            return 0;
        }
    }
    return parse_slow(raw, precision, out);
}

static void invalidate(BookSideObject *self) { Py_CLEAR(self->encoded); }

/* A change at position idx (or a truncation to idx levels) makes cached views stale. */
static void touched(BookSideObject *self, Py_ssize_t idx) {
    if (idx < TOP) Py_CLEAR(self->encoded);
    if (self->top != NULL && idx < self->top_n) Py_CLEAR(self->top);
}

static int ensure_capacity(BookSideObject *self, Py_ssize_t need) {
    if (need <= self->cap) return 0;
    Py_ssize_t cap = self->cap ? self->cap * 2 : 32;
    while (cap < need) cap *= 2;
    Level *grown = PyMem_Realloc(self->levels, (size_t)cap * sizeof(Level));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->levels = grown;
    self->cap = cap;
    return 0;
}

static Py_ssize_t lower_bound(BookSideObject *self, int64_t key) {
    Py_ssize_t lo = 0, hi = self->len;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (self->levels[mid].key < key) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static void write_text(Level *lv) {
    int n = snprintf(lv->text, TEXT_MAX, "%lld%lld", (long long)lv->price, (long long)lv->qty);
    lv->text_len = (uint8_t)(n < TEXT_MAX ? n : TEXT_MAX - 1);
}

static int side_set(BookSideObject *self, int64_t price, int64_t qty) {
    if (price <= 0 || qty < 0) {
        if (load_python_helpers() < 0) return -1;
        PyErr_Format(number_error, "impossible level %lld x %lld", (long long)price,
                     (long long)qty);
        return -1;
    }
    int64_t key = self->sign > 0 ? price : -price;
    Py_ssize_t idx = lower_bound(self, key);
    int exists = idx < self->len && self->levels[idx].key == key;
    if (qty == 0) {
        if (!exists) return 0;
        memmove(&self->levels[idx], &self->levels[idx + 1],
                (size_t)(self->len - idx - 1) * sizeof(Level));
        self->len--;
    } else if (exists) {
        self->levels[idx].qty = qty;
        write_text(&self->levels[idx]);
    } else {
        if (ensure_capacity(self, self->len + 1) < 0) return -1;
        memmove(&self->levels[idx + 1], &self->levels[idx],
                (size_t)(self->len - idx) * sizeof(Level));
        Level *lv = &self->levels[idx];
        lv->key = key;
        lv->price = price;
        lv->qty = qty;
        write_text(lv);
        self->len++;
    }
    touched(self, idx);
    return 0;
}

static PyObject *BookSide_set(BookSideObject *self, PyObject *args) {
    long long price, qty;
    if (!PyArg_ParseTuple(args, "LL", &price, &qty)) return NULL;
    if (side_set(self, price, qty) < 0) return NULL;
    Py_RETURN_NONE;
}

/* apply(levels, price_precision, qty_precision): levels is an iterable of {"price", "qty"}. */
static PyObject *BookSide_apply(BookSideObject *self, PyObject *args) {
    PyObject *levels;
    int pp, qp;
    if (!PyArg_ParseTuple(args, "Oii", &levels, &pp, &qp)) return NULL;
    if (pp < 0 || pp > 18 || qp < 0 || qp > 18) {
        PyErr_SetString(PyExc_ValueError, "precision out of range");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(levels, "levels must be a list");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *level = items[i];
        PyObject *rp, *rq;
        int64_t price, qty;
        if (PyDict_CheckExact(level)) {
            rp = PyDict_GetItemWithError(level, str_price);
            rq = rp ? PyDict_GetItemWithError(level, str_qty) : NULL;
            if (rp == NULL || rq == NULL) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "price/qty");
                goto fail;
            }
            Py_INCREF(rp);
            Py_INCREF(rq);
        } else {
            rp = PyObject_GetItem(level, str_price);
            if (rp == NULL) goto fail;
            rq = PyObject_GetItem(level, str_qty);
            if (rq == NULL) { Py_DECREF(rp); goto fail; }
        }
        int bad = parse_number(rp, pp, &price) < 0 || parse_number(rq, qp, &qty) < 0;
        Py_DECREF(rp);
        Py_DECREF(rq);
        if (bad || side_set(self, price, qty) < 0) goto fail;
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyObject *BookSide_truncate(BookSideObject *self, PyObject *arg) {
    Py_ssize_t depth = PyLong_AsSsize_t(arg);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    if (depth < 0) depth = 0;
    if (self->len > depth) {
        self->len = depth;
        touched(self, depth);
    }
    Py_RETURN_NONE;
}

static PyObject *BookSide_clear(BookSideObject *self, PyObject *Py_UNUSED(ignored)) {
    self->len = 0;
    invalidate(self);
    Py_CLEAR(self->top);
    Py_RETURN_NONE;
}

static PyObject *BookSide_encoded_top(BookSideObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->encoded == NULL) {
        char buf[TOP * TEXT_MAX];
        size_t pos = 0;
        Py_ssize_t n = self->len < TOP ? self->len : TOP;
        for (Py_ssize_t i = 0; i < n; i++) {
            memcpy(buf + pos, self->levels[i].text, self->levels[i].text_len);
            pos += self->levels[i].text_len;
        }
        self->encoded = PyBytes_FromStringAndSize(buf, (Py_ssize_t)pos);
        if (self->encoded == NULL) return NULL;
    }
    Py_INCREF(self->encoded);
    return self->encoded;
}

static PyObject *level_tuple(Level *lv) {
    return Py_BuildValue("(LL)", (long long)lv->price, (long long)lv->qty);
}

static PyObject *BookSide_top(BookSideObject *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) n = 0;
    if (self->top != NULL && self->top_n == n) {
        Py_INCREF(self->top);
        return self->top;
    }
    Py_ssize_t k = n > self->len ? self->len : n;
    PyObject *out = PyTuple_New(k);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *t = level_tuple(&self->levels[i]);
        if (t == NULL) { Py_DECREF(out); return NULL; }
        PyTuple_SET_ITEM(out, i, t);
    }
    /* Cache it: valid until a change lands within the first n positions (a side shorter than
       n changes its view with any insertion, which lands at an index below n). */
    Py_XSETREF(self->top, out);
    self->top_n = n;
    Py_INCREF(out);
    return out;
}

static PyObject *BookSide_get_levels(BookSideObject *self, void *Py_UNUSED(closure)) {
    PyObject *out = PyList_New(self->len);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->len; i++) {
        PyObject *t = level_tuple(&self->levels[i]);
        if (t == NULL) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static PyObject *BookSide_get_texts(BookSideObject *self, void *Py_UNUSED(closure)) {
    PyObject *out = PyList_New(self->len);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->len; i++) {
        PyObject *t = PyUnicode_FromStringAndSize(self->levels[i].text, self->levels[i].text_len);
        if (t == NULL) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static Py_ssize_t BookSide_len(BookSideObject *self) { return self->len; }

static int BookSide_init(BookSideObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"descending", NULL};
    int descending = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$p", kwlist, &descending)) return -1;
    self->sign = descending ? -1 : 1;
    self->len = 0;
    invalidate(self);
    Py_CLEAR(self->top);
    return 0;
}

static void BookSide_dealloc(BookSideObject *self) {
    Py_CLEAR(self->encoded);
    Py_CLEAR(self->top);
    PyMem_Free(self->levels);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef BookSide_methods[] = {
    {"set", (PyCFunction)BookSide_set, METH_VARARGS, "Insert, replace or delete one level."},
    {"apply", (PyCFunction)BookSide_apply, METH_VARARGS, "Apply wire levels in order."},
    {"truncate", (PyCFunction)BookSide_truncate, METH_O, "Keep only the best `depth` levels."},
    {"clear", (PyCFunction)BookSide_clear, METH_NOARGS, "Remove every level."},
    {"encoded_top", (PyCFunction)BookSide_encoded_top, METH_NOARGS,
     "Top-ten checksum text, ASCII-encoded."},
    {"top", (PyCFunction)BookSide_top, METH_O, "Best n levels as (price, qty) tuples."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef BookSide_getset[] = {
    {"levels", (getter)BookSide_get_levels, NULL, "All levels, best first.", NULL},
    {"texts", (getter)BookSide_get_texts, NULL, "Checksum text per level.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PySequenceMethods BookSide_as_sequence = {.sq_length = (lenfunc)BookSide_len};

static PyTypeObject BookSideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gal_friday.kraken._cbook.BookSide",
    .tp_doc = "One side of a Kraken L2 book (C implementation).",
    .tp_basicsize = sizeof(BookSideObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)BookSide_init,
    .tp_dealloc = (destructor)BookSide_dealloc,
    .tp_methods = BookSide_methods,
    .tp_getset = BookSide_getset,
    .tp_as_sequence = &BookSide_as_sequence,
};

static struct PyModuleDef cbook_module = {
    PyModuleDef_HEAD_INIT, "_cbook", "C hot path of the Kraken L2 book.", -1, NULL};

PyMODINIT_FUNC PyInit__cbook(void) {
    if (PyType_Ready(&BookSideType) < 0) return NULL;
    str_price = PyUnicode_InternFromString("price");
    str_qty = PyUnicode_InternFromString("qty");
    if (str_price == NULL || str_qty == NULL) return NULL;
    PyObject *m = PyModule_Create(&cbook_module);
    if (m == NULL) return NULL;
    Py_INCREF(&BookSideType);
    if (PyModule_AddObject(m, "BookSide", (PyObject *)&BookSideType) < 0) {
        Py_DECREF(&BookSideType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
