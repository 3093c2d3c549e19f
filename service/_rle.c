/*
 * COCO RLE of pasted instance masks, computed from 28x28 mask probabilities without pasting them.
 *
 * encode(padded, p, meta, ya, wy, xa, wx, tol, height, width) -> list[str]
 *
 *   padded  float32 [L, p, p]  the masks framed by zeros (C order)
 *   meta    int64   [L, 4]     per mask: x0, y0 (image pixel of the visible crop's top-left), rows, cols
 *   ya      int64   [sum rows] per visible crop row: its upper source row in `padded` (the lower one is
 *   wy      float32 [sum rows] yb = min(ya + 1, p - 1)) and the lower one's weight (F.interpolate's
 *                              bilinear, align_corners=False, as vitbench.service.preprocess._source_weights);
 *                              non-decreasing along each crop's rows
 *   xa      int64   [sum cols] the same per visible crop column (xb = min(xa + 1, p - 1))
 *   wx      float32 [sum cols]
 *   tol     float              band around 0.5 where pixels are decided by the exact float32 value
 *
 * Returns per mask the compressed COCO RLE string of the height x width image, the same bytes as
 * pycocotools' encode of the full pasted mask (value > 0.5) and its rleToString.
 *
 * A pixel's value is, in float32 and in this order (vitbench.service.preprocess.resize_bilinear):
 *     a0 = P[ya, xa] * (1 - wy) + P[yb, xa] * wy;   a1 = P[ya, xb] * (1 - wy) + P[yb, xb] * wy
 *     v  = a0 * (1 - wx) + a1 * wx
 * which in exact arithmetic lies between the column's knots K[ya] and K[yb], K[i] = P[i, xa] * (1 - wx)
 * + P[i, xb] * wx (bilinear interpolation is separable). The float32 value is within a few unit
 * roundoffs of max(1, |P|) of that interval, far inside `tol`. So the rows of a column that share a
 * source row ya are decided together when both knots are beyond 0.5 +- tol, and one by one with the
 * exact float32 operations otherwise: work grows with the crop's columns and its runs, not its pixels.
 * The module is built with -ffp-contract=off so that no multiply-add is fused: the float32 operations
 * round as numpy's do.
 */
#include "_arrays.h"

#include <stdlib.h>

typedef struct {
    int64_t *data;
    Py_ssize_t size, capacity;
} Runs; /* run starts and ends (exclusive), alternating, as column-major image offsets */

static int runs_push(Runs *runs, int64_t value) {
    if (runs->size == runs->capacity) {
        Py_ssize_t capacity = runs->capacity ? 2 * runs->capacity : 64;
        int64_t *grown = realloc(runs->data, (size_t)capacity * sizeof(int64_t));
        if (grown == NULL) return -1;
        runs->data = grown;
        runs->capacity = capacity;
    }
    runs->data[runs->size++] = value;
    return 0;
}

/* The mask turns on at `offset`: a new run, or the previous one continued when it ended there
 * (a crop as tall as the image: runs touch across columns). */
static int run_start(Runs *runs, int64_t offset) {
    if (runs->size && runs->data[runs->size - 1] == offset) {
        runs->size--;
        return 0;
    }
    return runs_push(runs, offset);
}

/* The mask turns off at `offset`: the current run ends, or is dropped when it began there (rows of
 * source rows that no crop row reads). */
static int run_end(Runs *runs, int64_t offset) {
    if (runs->data[runs->size - 1] == offset) {
        runs->size--;
        return 0;
    }
    return runs_push(runs, offset);
}

/* pycocotools' rleToString on the counts of `runs` over `total` pixels; `out` holds 8 chars a count. */
static Py_ssize_t compress(const Runs *runs, int64_t total, char *out) {
    Py_ssize_t n = 0, m = runs->size + 1;
    int64_t prev2 = 0, prev1 = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t count;
        if (i == 0) count = runs->size ? runs->data[0] : total;
        else if (i < runs->size) count = runs->data[i] - runs->data[i - 1];
        else count = total - runs->data[i - 1]; /* the background after the last run */
        if (i == runs->size && i > 0 && count == 0) break; /* the image ends inside the last run */
        long long x = count;
        if (i > 2) x -= prev2;
        prev2 = prev1;
        prev1 = count;
        int more = 1;
        while (more) {
            char c = (char)(x & 0x1f);
            x >>= 5;
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            out[n++] = (char)(c + 48);
        }
    }
    return n;
}

typedef struct {
    const float *padded;
    Py_ssize_t p;
    const int64_t *ya, *xa;
    const float *wy, *wx;
    float tol;
    int64_t height;
} Source;

/* Flips the mask's state to `now` at `offset` if it differs from `*on`; -1 when out of memory. */
static int emit(Runs *runs, int *on, int now, int64_t offset) {
    if (now == *on) return 0;
    *on = now;
    return now ? run_start(runs, offset) : run_end(runs, offset);
}

/* The rows first .. stop - 1 of one column that read source rows a and b = a + 1 (or a, clamped): knots
 * ka, kb (see the top of this file), the four source pixels, and the column's weights. */
static int mixed_rows(Runs *runs, int *on, int64_t top, const float *wy, Py_ssize_t first, Py_ssize_t stop,
                      float ka, float kb, const float corner[4], float one_wx, float wx, float low, float high) {
    Py_ssize_t exact = first, exact_stop = stop; /* rows decided one by one */
    if (ka != kb) {
        /* The linear value L(w) = ka·(1 - w) + kb·w is monotone in w, which grows with the row: the rows
         * before the band [low, high] are on when L falls, the rows after it when L rises. From the row
         * where L crosses 0.5 (estimated: w steps evenly), widen the window of exact rows until the row
         * before it and the row at its end are outside the band, on either side. */
        const int rising = ka < kb;
        const float t = (0.5f - ka) / (kb - ka), step = stop - first > 1 ? wy[first + 1] - wy[first] : 1.0f;
        float guess = step > 0.0f ? (t - wy[first]) / step : 0.0f;
        guess = guess < 0.0f ? 0.0f : guess > (float)(stop - first) ? (float)(stop - first) : guess;
        exact = exact_stop = first + (Py_ssize_t)guess;
        if (rising) {
            while (exact > first && ka * (1.0f - wy[exact - 1]) + kb * wy[exact - 1] >= low) exact--;
            while (exact_stop < stop && ka * (1.0f - wy[exact_stop]) + kb * wy[exact_stop] < high) exact_stop++;
        } else {
            while (exact > first && ka * (1.0f - wy[exact - 1]) + kb * wy[exact - 1] <= high) exact--;
            while (exact_stop < stop && ka * (1.0f - wy[exact_stop]) + kb * wy[exact_stop] > low) exact_stop++;
        }
        if (exact > first && emit(runs, on, !rising, top + first)) return -1;
    }
    for (Py_ssize_t r = exact; r < exact_stop; r++) { /* resize_bilinear's float32 operations */
        const float w = wy[r], one_w = 1.0f - w;
        const float a0 = corner[0] * one_w + corner[1] * w; /* source column xa: rows a, b */
        const float a1 = corner[2] * one_w + corner[3] * w; /* source column xb */
        if (emit(runs, on, a0 * one_wx + a1 * wx > 0.5f, top + r)) return -1;
    }
    if (exact_stop < stop && emit(runs, on, ka < kb, top + exact_stop)) return -1;
    return 0;
}

/* The runs of one mask (meta: x0, y0, rows, cols; its rows from `row0`, columns from `col0`). `columns`
 * [p, p] and `seg_first` [p + 1] are work space: the mask transposed, and per source row i the first
 * crop row that reads it as its upper source row (rows seg_first[i] .. seg_first[i + 1] - 1 read i and
 * i + 1). `knots` and `side` [p] are per column: side 0 below 0.5 - tol, 1 within, 2 above 0.5 + tol. */
static int mask_runs(const Source *s, const int64_t *meta, Py_ssize_t mask, Py_ssize_t row0, Py_ssize_t col0,
                     float *columns, Py_ssize_t *seg_first, float *knots, unsigned char *side, Runs *runs) {
    const Py_ssize_t p = s->p, rows = (Py_ssize_t)meta[2], cols = (Py_ssize_t)meta[3];
    const float *P = s->padded + (size_t)mask * (size_t)(p * p);
    const int64_t *ya = s->ya + row0;
    const float *wy = s->wy + row0;
    const float high = 0.5f + s->tol, low = 0.5f - s->tol;
    for (Py_ssize_t i = 0; i < p; i++)
        for (Py_ssize_t x = 0; x < p; x++) columns[x * p + i] = P[i * p + x];
    for (Py_ssize_t i = 0, r = 0; i <= p; i++) { /* ya is non-decreasing along the rows */
        while (r < rows && ya[r] < i) r++;
        seg_first[i] = r;
    }
    for (Py_ssize_t c = 0; c < cols; c++) {
        const int64_t xa = s->xa[col0 + c], xb = xa + 1 < p ? xa + 1 : xa;
        const float *A = columns + xa * p, *B = columns + xb * p;
        const float wx = s->wx[col0 + c], one_wx = 1.0f - wx;
        const int64_t top = (meta[0] + c) * s->height + meta[1];
        for (Py_ssize_t i = 0; i < p; i++) knots[i] = A[i] * one_wx + B[i] * wx;
        for (Py_ssize_t i = 0; i < p; i++) side[i] = (unsigned char)((knots[i] > high) + (knots[i] >= low));
        int on = 0;
        for (Py_ssize_t i = 0; i < p;) {
            const Py_ssize_t b = i + 1 < p ? i + 1 : i;
            if (side[i] == side[b] && side[i] != 1) { /* rows of i and b all on one side, and those after */
                const unsigned char same = side[i];
                if (emit(runs, &on, same == 2, top + seg_first[i])) return -1;
                for (i++; i + 1 < p && side[i] == same && side[i + 1] == same;) i++;
                continue;
            }
            if (seg_first[i] < seg_first[i + 1]) {
                const float corner[4] = {A[i], A[b], B[i], B[b]};
                if (mixed_rows(runs, &on, top, wy, seg_first[i], seg_first[i + 1], knots[i], knots[b], corner,
                               one_wx, wx, low, high))
                    return -1;
            }
            i++;
        }
        if (emit(runs, &on, 0, top + rows)) return -1;
    }
    return 0;
}

static PyObject *encode(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objects[6];
    Py_ssize_t p;
    float tol;
    long long height, width;
    if (!PyArg_ParseTuple(args, "OnOOOOOfLL:encode", &objects[0], &p, &objects[1], &objects[2], &objects[3],
                          &objects[4], &objects[5], &tol, &height, &width))
        return NULL;
    static const char *names[6] = {"padded", "meta", "ya", "wy", "xa", "wx"};
    static const char kinds[6] = {'f', 'i', 'i', 'f', 'i', 'f'};
    Py_buffer views[6];
    int got = 0;
    PyObject *result = NULL;
    char **strings = NULL;
    Py_ssize_t *lengths = NULL, n_mask = 0;
    for (; got < 6; got++)
        if (get_array(objects[got], &views[got], kinds[got], kinds[got] == 'f' ? 4 : 8, names[got], 0) < 0) goto done;
    if (p < 1 || height < 1 || width < 1 || !(tol >= 0.0f && tol < 0.25f)) {
        PyErr_SetString(PyExc_ValueError, "p, height and width must be >= 1 and tol in [0, 0.25)");
        goto done;
    }
    const int64_t *meta = views[1].buf;
    n_mask = views[1].len / (4 * 8);
    Py_ssize_t n_rows = 0, n_cols = 0;
    if (views[1].len != n_mask * 4 * 8 || views[0].len != n_mask * p * p * 4) {
        PyErr_SetString(PyExc_ValueError, "meta must be [L, 4] and padded [L, p, p]");
        goto done;
    }
    for (Py_ssize_t j = 0; j < n_mask; j++) {
        const int64_t *m = meta + 4 * j;
        if (m[0] < 0 || m[1] < 0 || m[2] < 1 || m[3] < 1 || m[0] + m[3] > width || m[1] + m[2] > height) {
            PyErr_Format(PyExc_ValueError, "mask %zd: crop x0=%lld y0=%lld rows=%lld cols=%lld is not inside the "
                         "%lldx%lld image", j, (long long)m[0], (long long)m[1], (long long)m[2],
                         (long long)m[3], width, height);
            goto done;
        }
        n_rows += (Py_ssize_t)m[2];
        n_cols += (Py_ssize_t)m[3];
    }
    if (views[2].len != n_rows * 8 || views[3].len != n_rows * 4 || views[4].len != n_cols * 8 ||
        views[5].len != n_cols * 4) {
        PyErr_Format(PyExc_ValueError, "ya, wy need %zd items and xa, wx %zd (the crops' rows and columns)",
                     n_rows, n_cols);
        goto done;
    }
    if (check_indices(&views[2], p, "ya") < 0 || check_indices(&views[4], p, "xa") < 0) goto done;
    const int64_t *ya = views[2].buf;
    for (Py_ssize_t j = 0, r0 = 0; j < n_mask; r0 += (Py_ssize_t)meta[4 * j + 2], j++)
        for (Py_ssize_t r = r0 + 1; r < r0 + (Py_ssize_t)meta[4 * j + 2]; r++)
            if (ya[r] < ya[r - 1]) {
                PyErr_Format(PyExc_ValueError, "ya decreases at row %zd of mask %zd", r - r0, j);
                goto done;
            }

    Source source = {views[0].buf, p, views[2].buf, views[4].buf, views[3].buf, views[5].buf, tol, height};
    strings = calloc((size_t)n_mask + 1, sizeof(char *));
    lengths = calloc((size_t)n_mask + 1, sizeof(Py_ssize_t));
    float *knots = malloc((size_t)p * (p + 1) * sizeof(float)); /* [p] knots, then [p, p] columns */
    Py_ssize_t *seg_first = malloc(((size_t)p + 1) * sizeof(Py_ssize_t));
    unsigned char *side = malloc((size_t)p);
    Runs runs = {NULL, 0, 0};
    int failed = strings == NULL || lengths == NULL || knots == NULL || seg_first == NULL || side == NULL;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t row0 = 0, col0 = 0;
    for (Py_ssize_t j = 0; j < n_mask && !failed; j++) {
        runs.size = 0;
        failed = mask_runs(&source, meta + 4 * j, j, row0, col0, knots + p, seg_first, knots, side, &runs) < 0;
        row0 += (Py_ssize_t)meta[4 * j + 2];
        col0 += (Py_ssize_t)meta[4 * j + 3];
        if (!failed) failed = (strings[j] = malloc(8 * ((size_t)runs.size + 1))) == NULL;
        if (!failed) lengths[j] = compress(&runs, (int64_t)height * width, strings[j]);
    }
    Py_END_ALLOW_THREADS
    free(runs.data);
    free(knots);
    free(seg_first);
    free(side);
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyList_New(n_mask);
    for (Py_ssize_t j = 0; result != NULL && j < n_mask; j++) {
        PyObject *text = PyUnicode_DecodeASCII(strings[j], lengths[j], NULL);
        if (text == NULL) Py_CLEAR(result);
        else PyList_SET_ITEM(result, j, text);
    }
done:
    if (strings != NULL)
        for (Py_ssize_t j = 0; j < n_mask; j++) free(strings[j]);
    free(strings);
    free(lengths);
    while (got > 0) PyBuffer_Release(&views[--got]);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS,
     "encode(padded, p, meta, ya, wy, xa, wx, tol, height, width) -> list[str]: compressed COCO "
     "RLE of each pasted mask (see vitbench.service.masks.encode_rle_many)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_rle", .m_doc = "COCO RLE of pasted masks, in C.", .m_size = -1,
    .m_methods = methods};

PyMODINIT_FUNC PyInit__rle(void) { return PyModule_Create(&module); }
