/*
 * The graph input of one image in one pass: bilinear resize, normalization and the CHW layout.
 *
 * resize_normalize(image, height, width, r0, r1, wy, c0, c1, wx, mean, std, out, canvas) -> None
 *
 *   image   uint8   [height, width, 3]  RGB pixels (C order)
 *   r0, r1  int64   [h]                 per output row: its upper and lower source row
 *   wy      float32 [h]                 the lower row's weight (F.interpolate's bilinear,
 *                                       align_corners=False: vitbench.service.preprocess._source_index)
 *   c0, c1  int64   [w]                 the same per output column
 *   wx      float32 [w]
 *   mean    float32 [3], std float32 [3]
 *   out     float32 [3, canvas, canvas] written at [:, :h, :w]; the rest is left as it is (zeros:
 *                                       the bottom/right padding)
 *
 * Each value is, in float32 and in this order (vitbench.service.preprocess.resize_bilinear, then the
 * normalization of vitbench.service.preprocess.preprocess):
 *     a0 = T[c0] * (1 - wy) + B[c0] * wy;   a1 = T[c1] * (1 - wy) + B[c1] * wy
 *     v  = ((a0 * (1 - wx) + a1 * wx) - mean) / std
 * with T and B the source rows r0 and r1. Built with -ffp-contract=off (no fused multiply-add), so
 * every operation rounds as numpy's does and the result has the same bits.
 */
#include "_arrays.h"

static PyObject *resize_normalize(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objects[10];
    Py_ssize_t height, width, canvas;
    if (!PyArg_ParseTuple(args, "OnnOOOOOOOOOn:resize_normalize", &objects[0], &height, &width, &objects[1],
                          &objects[2], &objects[3], &objects[4], &objects[5], &objects[6], &objects[7],
                          &objects[8], &objects[9], &canvas))
        return NULL;
    static const char *names[10] = {"image", "r0", "r1", "wy", "c0", "c1", "wx", "mean", "std", "out"};
    static const char kinds[10] = {'u', 'i', 'i', 'f', 'i', 'i', 'f', 'f', 'f', 'f'};
    static const Py_ssize_t sizes[10] = {1, 8, 8, 4, 8, 8, 4, 4, 4, 4};
    Py_buffer views[10];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 10; got++)
        if (get_array(objects[got], &views[got], kinds[got], sizes[got], names[got], got == 9) < 0) goto done;
    Py_ssize_t h = views[1].len / 8, w = views[4].len / 8;
    if (height < 1 || width < 1 || canvas < 1 || views[0].len != height * width * 3) {
        PyErr_Format(PyExc_ValueError, "image must be [height, width, 3] with height, width >= 1, got %zd bytes "
                     "for %zdx%zd", views[0].len, width, height);
        goto done;
    }
    if (h < 1 || w < 1 || h > canvas || w > canvas || views[2].len != h * 8 || views[3].len != h * 4 ||
        views[5].len != w * 8 || views[6].len != w * 4) {
        PyErr_Format(PyExc_ValueError, "r0, r1, wy need one item per output row and c0, c1, wx one per output "
                     "column, at most %zd each", canvas);
        goto done;
    }
    if (views[7].len != 3 * 4 || views[8].len != 3 * 4 || views[9].len != 3 * canvas * canvas * 4) {
        PyErr_Format(PyExc_ValueError, "mean and std must have 3 items and out be [3, %zd, %zd]", canvas, canvas);
        goto done;
    }
    if (check_indices(&views[1], height, "r0") < 0 || check_indices(&views[2], height, "r1") < 0 ||
        check_indices(&views[4], width, "c0") < 0 || check_indices(&views[5], width, "c1") < 0)
        goto done;

    const uint8_t *image = views[0].buf;
    const int64_t *r0 = views[1].buf, *r1 = views[2].buf, *c0 = views[4].buf, *c1 = views[5].buf;
    const float *wy = views[3].buf, *wx = views[6].buf, *mean = views[7].buf, *std = views[8].buf;
    float *out = views[9].buf;
    Py_ssize_t row_bytes = width * 3, plane = canvas * canvas;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t y = 0; y < h; y++) {
        const uint8_t *top = image + r0[y] * row_bytes, *bottom = image + r1[y] * row_bytes;
        const float lower = wy[y], upper = 1.0f - lower;
        float *dst = out + y * canvas;
        for (Py_ssize_t x = 0; x < w; x++) {
            const float right = wx[x], left = 1.0f - right;
            const Py_ssize_t a = c0[x] * 3, b = c1[x] * 3;
            for (int ch = 0; ch < 3; ch++) {
                const float a0 = (float)top[a + ch] * upper + (float)bottom[a + ch] * lower;
                const float a1 = (float)top[b + ch] * upper + (float)bottom[b + ch] * lower;
                const float v = a0 * left + a1 * right;
                dst[ch * plane + x] = (v - mean[ch]) / std[ch];
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    while (got > 0) PyBuffer_Release(&views[--got]);
    return result;
}

static PyMethodDef methods[] = {
    {"resize_normalize", resize_normalize, METH_VARARGS,
     "resize_normalize(image, height, width, r0, r1, wy, c0, c1, wx, mean, std, out, canvas) -> None: "
     "the resized, normalized image into out[:, :h, :w] (see vitbench.service.preprocess.preprocess)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_resize", .m_doc = "The graph input of an image in one pass, in C.",
    .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__resize(void) { return PyModule_Create(&module); }
