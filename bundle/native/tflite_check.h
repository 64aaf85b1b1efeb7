/* tflite_check.h: the runner's check of a .tflite flatbuffer before LiteRT loads it (included by runner.c,
 * after its fail()). One translation unit: every function here is static. */
#ifndef EDGEBENCH_TFLITE_CHECK_H
#define EDGEBENCH_TFLITE_CHECK_H

/* LiteRT's C API loads a .tflite without verifying its flatbuffer (and libLiteRt.so exports no verifier): given
 * the first half of a valid model it followed offsets past the end of the file and grew to 10-22 GB before it
 * refused it. So the runner walks the flatbuffer first, with bounds checks: every table (and its vtable), vector
 * and string LiteRT loads (tensorflow/compiler/mlir/lite/schema/schema.fbs: Model, OperatorCode, Buffer,
 * SubGraph, Tensor, QuantizationParameters, Operator, Metadata, SignatureDef, TensorMap; union and sparsity
 * tables to their header only) must lie inside the file, and every index between them must be in range. Sizes
 * are 64-bit, bytes are read one at a time (no unaligned loads) and the walk is bounded. */
#define FB_MAX_STEPS (1u << 24) /* tables and indices visited (real models: thousands): bounds a crafted file */

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

/* An int32 vector of tensor (or buffer) indices: each in [0, limit), or -1 (an optional operand left out). */
static void indices(Fb *v, const FbTable *t, unsigned slot, uint64_t limit, const char *what, const char *kind) {
  uint32_t n;
  uint64_t at = vec(v, t, slot, 4, 0, what, &n), x;
  for (uint32_t i = 0; i < n; i++, step(v))
    if ((x = le(v, at + 4 * (uint64_t)i, 4)) != 0xFFFFFFFFu) in_range(v, x, limit, what, kind);
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
    vec(&v, &g, 4, 1, 1, w, NULL);
    uint64_t tensors = vec(&v, &g, 0, 4, 0, w, &n_tensors);
    for (uint32_t i = 0; i < n_tensors; i++) {
      t = nth(&v, tensors, i, WHAT("subgraph %u tensor %u", s, i));
      vec(&v, &t, 0, 4, 0, w, NULL); /* shape, shape_signature, name */
      vec(&v, &t, 7, 4, 0, w, NULL);
      vec(&v, &t, 3, 1, 1, w, NULL);
      in_range(&v, num(&v, &t, 2, 4, w), n_bufs, w, "buffer");
      if (sub(&v, &t, 4, w, &u)) /* quantization: min, max, scale, zero_point */
        for (unsigned f = 0; f < 4; f++) vec(&v, &u, f, f == 3 ? 8 : 4, 0, w, NULL);
      sub(&v, &t, 6, w, &u); /* sparsity */
    }
    indices(&v, &g, 1, n_tensors, WHAT("subgraph %u's input list", s), "tensor");
    indices(&v, &g, 2, n_tensors, WHAT("subgraph %u's output list", s), "tensor");
    uint64_t ops = vec(&v, &g, 3, 4, 0, WHAT("subgraph %u's operator list", s), &k);
    for (uint32_t i = 0; i < k; i++) {
      t = nth(&v, ops, i, WHAT("subgraph %u operator %u", s, i));
      in_range(&v, num(&v, &t, 0, 4, w), n_codes, w, "operator code");
      indices(&v, &t, 1, n_tensors, w, "tensor"); /* inputs, outputs, intermediates */
      indices(&v, &t, 2, n_tensors, w, "tensor");
      indices(&v, &t, 8, n_tensors, w, "tensor");
      vec(&v, &t, 5, 1, 0, w, NULL); /* custom options, mutating variable inputs */
      vec(&v, &t, 7, 1, 0, w, NULL);
      sub(&v, &t, 4, w, &u); /* builtin options, builtin options 2 (unions) */
      sub(&v, &t, 12, w, &u);
      if ((x = num(&v, &t, 9, 8, w)) > 1) need(&v, x, num(&v, &t, 10, 8, w), w); /* large custom options */
    }
  }
  uint64_t meta = vec(&v, &m, 6, 4, 0, "the metadata list", &k);
  for (uint32_t i = 0; i < k; i++) {
    t = nth(&v, meta, i, WHAT("metadata %u", i));
    vec(&v, &t, 0, 1, 1, w, NULL);
    in_range(&v, num(&v, &t, 1, 4, w), n_bufs, w, "buffer");
  }
  indices(&v, &m, 5, n_bufs, "the metadata buffer list", "buffer");
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
