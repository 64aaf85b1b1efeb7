/* tflite_check.h: the runner's check of a .tflite flatbuffer before LiteRT loads it (included by runner.c,
 * after its fail()). One translation unit: every function here is static. */
#ifndef EDGEBENCH_TFLITE_CHECK_H
#define EDGEBENCH_TFLITE_CHECK_H

/* LiteRT's C API loads a .tflite without verifying its flatbuffer (and libLiteRt.so exports no verifier): given
 * the first half of a valid model it followed offsets past the end of the file and grew to 10-22 GB before it
 * refused it. So the runner walks the flatbuffer first, with bounds checks: every table (and its vtable), vector
 * and string LiteRT loads (tensorflow/compiler/mlir/lite/schema/schema.fbs: Model, OperatorCode, Buffer,
 * SubGraph, Tensor, QuantizationParameters and its CustomQuantization, VariantSubType, Operator, Metadata,
 * SignatureDef, TensorMap; union and sparsity tables to their header only) must lie inside the file, and every
 * index between them must be in range. Sizes are 64-bit, bytes are read one at a time (no unaligned loads) and
 * the walk is bounded.
 *
 * LiteRT also trusts the values: an operator input of -1 where the kernel needs a tensor, a NaN, zero or huge
 * scale, a zero-point list shorter than the scale list or a quantized dimension out of range crashed it
 * (SIGSEGV, SIGABRT), and one 4-byte shape edit made it allocate 1.6 GB. So each tensor's shape, type and
 * quantization are checked too (tensor_values), and -1 (an omitted optional input) only where an operator
 * has an optional input (optional_input). tflite_check.py (the Python tools) is a port of this file, held
 * to the same test cases (tests/test_untrusted_tflite.py). */
#define FB_MAX_STEPS (1u << 24) /* tables and indices visited (real models: thousands): bounds a crafted file */
/* A non-constant tensor's bytes (shape product x element size) and their sum over a subgraph. LiteRT plans
 * its arena from the declared shapes; edgebench's models are image classifiers for edge devices (a CIFAR-10
 * model's tensors total < 1 MiB, an ImageNet MobileNet or ResNet-50 at batch 1 ~10-100 MB), so 256 MiB is
 * room to spare while a forged shape stays far below the 1 GiB a device can give one process. */
#define MAX_TENSOR_BYTES (UINT64_C(1) << 28)
/* Quantization scales: finite, and within 2^-64..2^32 so that products and quotients of three scales (what
 * the kernels compute their multipliers from) stay finite and non-zero in float32. */
#define MIN_SCALE 0x1p-64
#define MAX_SCALE 0x1p32

typedef struct {
  const unsigned char *d;
  uint64_t n, steps;
  const char *path;
} Fb;

typedef struct {
  uint64_t at, vt;
  unsigned vsize;
} FbTable;

static void bad(const Fb *v, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void bad(const Fb *v, const char *fmt, ...) {
  char why[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  fail("%s is not a valid TFLite model: %s", v->path, why);
}

static void need(const Fb *v, uint64_t at, uint64_t len, const char *what) {
  if (at > v->n || len > v->n - at) bad(v, "%s runs past the end of the file (truncated?)", what);
}

static uint64_t le(const Fb *v, uint64_t at, unsigned bytes) { /* [at, at + bytes) checked by the caller */
  uint64_t x = 0;
  while (bytes--) x = x << 8 | v->d[at + bytes];
  return x;
}

static void step(Fb *v) {
  if (++v->steps > FB_MAX_STEPS) bad(v, "more than %u tables and indices", FB_MAX_STEPS);
}

static uint64_t follow(const Fb *v, uint64_t at, const char *what) { /* the uoffset stored at `at` */
  uint64_t to = at + le(v, at, 4);
  need(v, to, 4, what);
  return to;
}

static FbTable table(Fb *v, uint64_t at, const char *what) {
  step(v);
  need(v, at, 4, what);
  uint64_t raw = le(v, at, 4); /* soffset: the vtable is at at - soffset */
  int64_t vt = (int64_t)at - (int64_t)raw + (raw >> 31 ? INT64_C(1) << 32 : 0);
  if (vt < 0 || (uint64_t)vt + 2 > v->n) bad(v, "%s has its vtable outside the file (truncated?)", what);
  FbTable t = {at, (uint64_t)vt, (unsigned)le(v, (uint64_t)vt, 2)};
  if (t.vsize % 2) bad(v, "%s has a malformed vtable", what);
  need(v, t.vt, t.vsize, what);
  if (t.vsize >= 4) need(v, at, le(v, t.vt + 2, 2), what); /* its inline fields, those of unknown size too */
  return t;
}

/* Where field `slot` is (0: absent), checked to hold `size` bytes inside the file. */
static uint64_t field(const Fb *v, const FbTable *t, unsigned slot, unsigned size, const char *what) {
  unsigned off = 4 + 2 * slot, at = off + 2 <= t->vsize ? (unsigned)le(v, t->vt + off, 2) : 0;
  if (at) need(v, t->at + at, size, what);
  return at ? t->at + at : 0;
}

static uint64_t num(const Fb *v, const FbTable *t, unsigned slot, unsigned size, const char *what) {
  uint64_t at = field(v, t, slot, size, what);
  return at ? le(v, at, size) : 0;
}

/* Vector `slot` of `elem`-byte elements (string: `nul` 1), absent or inside the file: its first element. */
static uint64_t vec(Fb *v, const FbTable *t, unsigned slot, unsigned elem, int nul, const char *what,
                    uint32_t *count) {
  uint64_t at = field(v, t, slot, 4, what), n = 0;
  if (at) {
    at = follow(v, at, what);
    n = le(v, at, 4);
    need(v, at + 4, n * elem + (unsigned)nul, what);
  }
  if (count) *count = (uint32_t)n;
  return at ? at + 4 : 0;
}

static FbTable nth(Fb *v, uint64_t first, uint32_t i, const char *what) { /* element i of a table vector */
  return table(v, follow(v, first + 4 * (uint64_t)i, what), what);
}

static int sub(Fb *v, const FbTable *t, unsigned slot, const char *what, FbTable *out) { /* table field */
  uint64_t at = field(v, t, slot, 4, what);
  if (at) *out = table(v, follow(v, at, what), what);
  return at != 0;
}

static void in_range(const Fb *v, uint64_t x, uint64_t limit, const char *what, const char *kind) {
  if (x >= limit)
    bad(v, "%s names %s %llu; there are %llu", what, kind, (unsigned long long)x, (unsigned long long)limit);
}

/* Whether input `at` of an operator with builtin code `op` may be -1 (omitted): the bias of the convolutions
 * and fully connected, every input but the first of the recurrent ops (their kernels test each optional
 * tensor for absence). Any other -1 is a tensor a kernel dereferences unchecked. */
static int optional_input(int64_t op, uint32_t at) {
  switch (op) {
    case 3: case 4: case 9: case 132: return at == 2;    /* CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, CONV_3D */
    case 67: case 141: case 27: return at == 3;          /* TRANSPOSE_CONV, CONV_3D_TRANSPOSE, SVDF */
    case 16: case 44: case 52: case 46: return at >= 1;  /* LSTM, the sequence LSTMs, BIDIRECTIONAL_SEQUENCE_RNN */
    default: return 0;
  }
}

/* An int32 vector of tensor (or buffer) indices, each in [0, limit); -1 only where optional_input allows it for
 * builtin code `op` (-1: an index list that allows none). */
static void indices(Fb *v, const FbTable *t, unsigned slot, uint64_t limit, const char *what, const char *kind,
                    int64_t op) {
  uint32_t n;
  uint64_t at = vec(v, t, slot, 4, 0, what, &n), x;
  for (uint32_t i = 0; i < n; i++, step(v)) {
    if ((x = le(v, at + 4 * (uint64_t)i, 4)) != 0xFFFFFFFFu) in_range(v, x, limit, what, kind);
    else if (op < 0 || !optional_input(op, i))
      bad(v, "%s leaves out %s %u (-1), which is not optional", what, kind, i);
  }
}

/* Bytes per element of schema.fbs TensorType `type` (0: not fixed: strings, resources, variants, the packed
 * sub-byte types, types newer than this table). */
static unsigned element_bytes(uint64_t type) {
  static const unsigned char bytes[] = {4, 2, 4, 1, 8, 0, 1, 2, 8, 1, 8, 16, 8, 0, 0, 4, 2, 0, 2};
  return type < sizeof bytes ? bytes[type] : 0;
}

/* The zero points a tensor of `type` can hold: [lo, hi] for the integer types quantization uses. */
static int zero_point_range(uint64_t type, int64_t *lo, int64_t *hi) {
  switch (type) {
    case 3: *lo = 0, *hi = 255; return 1;           /* UINT8 */
    case 9: *lo = -128, *hi = 127; return 1;        /* INT8 */
    case 7: *lo = -32768, *hi = 32767; return 1;    /* INT16 */
    case 16: *lo = 0, *hi = 65535; return 1;        /* UINT16 */
    case 17: *lo = -8, *hi = 7; return 1;           /* INT4 */
    case 2: *lo = INT32_MIN, *hi = INT32_MAX; return 1; /* INT32 */
    default: return 0;
  }
}

static int64_t sint(uint64_t x, unsigned bytes) { /* two's complement of a `bytes`-byte little-endian field */
  return bytes < 8 && x >> (8 * bytes - 1) ? (int64_t)(x - (UINT64_C(1) << (8 * bytes))) : (int64_t)x;
}

/* Scales finite and in [MIN_SCALE, MAX_SCALE], one zero point per scale and in the type's range, one scale
 * per element of the quantized dimension (which the shape has). */
static void quantization(Fb *v, const FbTable *q, uint64_t type, uint64_t shape, uint32_t rank, const char *w) {
  uint32_t n_scales, n_zeros;
  uint64_t scales = vec(v, q, 2, 4, 0, w, &n_scales), zeros = vec(v, q, 3, 8, 0, w, &n_zeros);
  int64_t dim = sint(num(v, q, 6, 4, w), 4), lo, hi;
  FbTable u;
  if (sub(v, q, 5, w, &u)) vec(v, &u, 0, 1, 0, w, NULL); /* details: CustomQuantization's bytes */
  if (!n_scales) return;
  if (n_zeros != n_scales) bad(v, "%s has %u quantization scales and %u zero points", w, n_scales, n_zeros);
  if (dim < 0 || (rank && dim >= rank))
    bad(v, "%s is quantized along dimension %lld of %u", w, (long long)dim, rank);
  if (n_scales > 1 && (!rank || le(v, shape + 4 * (uint64_t)dim, 4) != n_scales))
    bad(v, "%s has %u quantization scales for dimension %lld of another size", w, n_scales, (long long)dim);
  int ranged = zero_point_range(type, &lo, &hi);
  for (uint32_t i = 0; i < n_scales; i++, step(v)) {
    uint32_t bits = (uint32_t)le(v, scales + 4 * (uint64_t)i, 4);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    if (!(scale >= MIN_SCALE && scale <= MAX_SCALE)) /* NaN fails both */
      bad(v, "%s has quantization scale %g (not in %g..%g)", w, (double)scale, MIN_SCALE, MAX_SCALE);
    int64_t zero = (int64_t)le(v, zeros + 8 * (uint64_t)i, 8);
    if (ranged && (zero < lo || zero > hi))
      bad(v, "%s has zero point %lld outside its type's %lld..%lld", w, (long long)zero, (long long)lo,
          (long long)hi);
  }
}

/* Bytes of buffer `b`'s constant data, in the flatbuffer or after it (0: none). */
static uint64_t buffer_bytes(Fb *v, uint64_t bufs, uint64_t b, const char *w) {
  uint32_t n;
  FbTable t = nth(v, bufs, (uint32_t)b, w);
  vec(v, &t, 0, 1, 0, w, &n);
  return n ? n : num(v, &t, 1, 8, w) > 1 ? num(v, &t, 2, 8, w) : 0;
}

/* A tensor's values: dimensions >= 0 (-1 only in shape_signature), constant data of exactly the shape's bytes,
 * quantization (above); the non-constant tensors' bytes are added to *activations. */
static void tensor_values(Fb *v, const FbTable *t, uint64_t bufs, const char *w, uint64_t *activations) {
  uint32_t rank, n_sig;
  uint64_t shape = vec(v, t, 0, 4, 0, w, &rank), sig = vec(v, t, 7, 4, 0, w, &n_sig);
  uint64_t type = num(v, t, 1, 1, w);
  uint64_t elements = 1, size = element_bytes(type), data = buffer_bytes(v, bufs, num(v, t, 2, 4, w), w);
  for (uint32_t i = 0; i < n_sig; i++, step(v))
    if (sint(le(v, sig + 4 * (uint64_t)i, 4), 4) < -1) bad(v, "%s has a dimension below -1 in its signature", w);
  for (uint32_t i = 0; i < rank; i++, step(v)) {
    int64_t d = sint(le(v, shape + 4 * (uint64_t)i, 4), 4);
    if (d < 0) bad(v, "%s has dimension %lld", w, (long long)d);
    elements = elements > MAX_TENSOR_BYTES ? elements : elements * (uint64_t)d; /* saturates above the limit */
  }
  if (data && size && elements * size != data)
    bad(v, "%s's shape needs %llu bytes but its buffer holds %llu", w, (unsigned long long)(elements * size),
        (unsigned long long)data);
  if (!data) *activations += elements * (size ? size : 1);
  if (*activations > MAX_TENSOR_BYTES)
    bad(v, "%s takes the tensors past %llu MiB (a forged shape?)", w,
        (unsigned long long)(MAX_TENSOR_BYTES >> 20));
  FbTable u;
  if (sub(v, t, 4, w, &u)) { /* quantization: min, max, then the values */
    vec(v, &u, 0, 4, 0, w, NULL);
    vec(v, &u, 1, 4, 0, w, NULL);
    quantization(v, &u, type, shape, rank, w);
  }
}

static void check_tensor(Fb *v, uint64_t tensors, uint32_t i, uint64_t bufs, uint32_t n_bufs, char *w,
                         uint64_t *activations) {
  FbTable t = nth(v, tensors, i, w), u;
  vec(v, &t, 3, 1, 1, w, NULL); /* name */
  in_range(v, num(v, &t, 2, 4, w), n_bufs, w, "buffer");
  sub(v, &t, 6, w, &u); /* sparsity */
  uint32_t n;
  uint64_t variants = vec(v, &t, 9, 4, 0, w, &n);
  for (uint32_t j = 0; j < n; j++) {
    u = nth(v, variants, j, w);
    vec(v, &u, 0, 4, 0, w, NULL);
  }
  tensor_values(v, &t, bufs, w, activations);
}

static void check_operator(Fb *v, const FbTable *t, uint64_t codes, uint32_t n_codes, uint32_t n_tensors,
                           const char *w) {
  uint64_t code = num(v, t, 0, 4, w), x;
  in_range(v, code, n_codes, w, "operator code");
  FbTable c = nth(v, codes, (uint32_t)code, w), u;
  /* the larger of deprecated_builtin_code and builtin_code, as TFLite's GetBuiltinCode */
  int64_t op = sint(num(v, &c, 0, 1, w), 1), builtin = sint(num(v, &c, 3, 4, w), 4);
  op = builtin > op ? builtin : op;
  indices(v, t, 1, n_tensors, w, "tensor", op); /* inputs, outputs, intermediates */
  indices(v, t, 2, n_tensors, w, "tensor", -1);
  indices(v, t, 8, n_tensors, w, "tensor", -1);
  vec(v, t, 5, 1, 0, w, NULL); /* custom options, mutating variable inputs */
  vec(v, t, 7, 1, 0, w, NULL);
  sub(v, t, 4, w, &u); /* builtin options, builtin options 2 (unions) */
  sub(v, t, 12, w, &u);
  if ((x = num(v, t, 9, 8, w)) > 1) need(v, x, num(v, t, 10, 8, w), w); /* large custom options */
}

static void check_subgraph(Fb *v, const FbTable *g, uint32_t s, uint64_t codes, uint32_t n_codes, uint64_t bufs,
                           uint32_t n_bufs) {
  char w[128];
  uint32_t n_tensors, k;
  uint64_t activations = 0;
#define WHAT(...) (snprintf(w, sizeof w, __VA_ARGS__), w)
  vec(v, g, 4, 1, 1, WHAT("subgraph %u", s), NULL);
  uint64_t tensors = vec(v, g, 0, 4, 0, w, &n_tensors);
  for (uint32_t i = 0; i < n_tensors; i++)
    check_tensor(v, tensors, i, bufs, n_bufs, WHAT("subgraph %u tensor %u", s, i), &activations);
  indices(v, g, 1, n_tensors, WHAT("subgraph %u's input list", s), "tensor", -1);
  indices(v, g, 2, n_tensors, WHAT("subgraph %u's output list", s), "tensor", -1);
  uint64_t ops = vec(v, g, 3, 4, 0, WHAT("subgraph %u's operator list", s), &k);
  for (uint32_t i = 0; i < k; i++) {
    FbTable t = nth(v, ops, i, WHAT("subgraph %u operator %u", s, i));
    check_operator(v, &t, codes, n_codes, n_tensors, w);
  }
#undef WHAT
}

static void verify_model(const char *path, const unsigned char *data, size_t size) {
  Fb v = {data, size, 0, path};
  char w[128];
  uint32_t n_codes, n_bufs, n_subs, n_tensors, n, k;
  uint64_t x;
  FbTable m, t, u;
#define WHAT(...) (snprintf(w, sizeof w, __VA_ARGS__), w)
  m = table(&v, follow(&v, 0, "the root table"), "the root table");
  vec(&v, &m, 3, 1, 1, "the description", NULL);
  uint64_t codes = vec(&v, &m, 1, 4, 0, "the operator code list", &n_codes);
  for (uint32_t i = 0; i < n_codes; i++) {
    t = nth(&v, codes, i, WHAT("operator code %u", i));
    vec(&v, &t, 1, 1, 1, w, NULL);
  }
  uint64_t bufs = vec(&v, &m, 4, 4, 0, "the buffer list", &n_bufs);
  for (uint32_t i = 0; i < n_bufs; i++) {
    t = nth(&v, bufs, i, WHAT("buffer %u", i));
    vec(&v, &t, 0, 1, 0, WHAT("buffer %u's data", i), NULL);
    if ((x = num(&v, &t, 1, 8, w)) > 1) need(&v, x, num(&v, &t, 2, 8, w), w); /* data after the flatbuffer */
  }
  uint64_t subs = vec(&v, &m, 2, 4, 0, "the subgraph list", &n_subs);
  for (uint32_t s = 0; s < n_subs; s++) {
    FbTable g = nth(&v, subs, s, WHAT("subgraph %u", s));
    check_subgraph(&v, &g, s, codes, n_codes, bufs, n_bufs);
  }
  uint64_t meta = vec(&v, &m, 6, 4, 0, "the metadata list", &k);
  for (uint32_t i = 0; i < k; i++) {
    t = nth(&v, meta, i, WHAT("metadata %u", i));
    vec(&v, &t, 0, 1, 1, w, NULL);
    in_range(&v, num(&v, &t, 1, 4, w), n_bufs, w, "buffer");
  }
  indices(&v, &m, 5, n_bufs, "the metadata buffer list", "buffer", -1);
  uint64_t sigs = vec(&v, &m, 7, 4, 0, "the signature list", &k);
  for (uint32_t i = 0; i < k; i++) {
    FbTable d = nth(&v, sigs, i, WHAT("signature %u", i));
    vec(&v, &d, 2, 1, 1, w, NULL);
    in_range(&v, x = num(&v, &d, 4, 4, w), n_subs, w, "subgraph");
    t = nth(&v, subs, (uint32_t)x, w);
    vec(&v, &t, 0, 4, 0, w, &n_tensors);
    for (unsigned io = 0; io < 2; io++) {
      uint64_t maps = vec(&v, &d, io, 4, 0, w, &n);
      for (uint32_t j = 0; j < n; j++) {
        u = nth(&v, maps, j, w);
        vec(&v, &u, 0, 1, 1, w, NULL);
        in_range(&v, num(&v, &u, 1, 4, w), n_tensors, w, "tensor");
      }
    }
  }
#undef WHAT
}

#endif
