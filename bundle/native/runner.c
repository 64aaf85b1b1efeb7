/* runner: classify image files with a .tflite model through the LiteRT C API (libLiteRt.so), no Python.
 *
 *   ./runner IMAGE... [--top-k K] [--json] [--threads N] [--model PATH] [--labels PATH]
 *            [--scale S --mean a,b,c --std a,b,c]
 *   ./runner --bench N [--warmup W] [--time-cap S] [IMAGE]
 *                                   p50/p90/p99 of LiteRtRunCompiledModel over N calls (fewer past S seconds)
 *
 * An image is a binary PPM (P6) or PGM (P5) with maxval 255, or a raw file of H*W*C uint8 RGB bytes; its
 * size must be the model input's (taken from the model, nothing is resized). The output is infer.py's:
 * "IMAGE: class 97.3%, class 1.2%, ..." or, with --json, the same JSON. Float inputs get
 * x = (pixel * scale - mean[c]) / std[c] (default identity); quantized integer inputs get the model's
 * own (scale, zero point). --bench --json also reports the load (model file to compiled model), the first
 * call, the process's peak RSS (VmHWM) and every timed call, so that the C path is measured as bench measures
 * infer.py (edgebench_runtime/native_bench.py turns it into its own row). Bad input (missing or corrupt model, wrong-size image) is one "error:" line
 * on stderr and exit code 2. Build: see Makefile; declarations of the C API: litert_min.h.
 *
 * At start the runner checks the CPU flags its model needs (RUNNER_CPU_REQUIRES, compiled in from
 * model.json's cpu.requires) against this CPU's (/proc/cpuinfo): a missing one is an "error:" line and
 * exit code 2, or one "warning:" line with --allow-cpu-mismatch. Test hook: EDGEBENCH_FAKE_CPU_FLAGS
 * ("[arch:]flag,flag,..."), read in host_cpu() only, replaces this CPU's flags (and arch), as in infer.py.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "litert_min.h"

#ifndef RUNNER_DEFAULT_MODEL
#define RUNNER_DEFAULT_MODEL "model.tflite"
#endif
#ifndef RUNNER_DEFAULT_THREADS
#define RUNNER_DEFAULT_THREADS 0 /* 0: LiteRT's default */
#endif
#ifndef RUNNER_CPU_REQUIRES
#define RUNNER_CPU_REQUIRES "" /* "arch:flag|flag;...": each rule holds when any one of its flags is present */
#endif
#if defined(__x86_64__)
#define RUNNER_ARCH "x86_64"
#elif defined(__aarch64__)
#define RUNNER_ARCH "arm64"
#else
#define RUNNER_ARCH "other"
#endif
#ifndef RUNNER_MODEL_SHA256
#define RUNNER_MODEL_SHA256 "" /* model.json's model.sha256: the default model must be that file */
#endif
#define MAX_CLASSES 4096
#define MAX_CHANNELS 4
#define MAX_THREADS 1024
#define MAX_RUNS 50000000           /* --bench and --warmup: the two timings arrays stay under 1 GB */
#define MIN_TIMED 10                /* calls --time-cap always lets run, as bench's timed_samples */
#define P99_MIN_SAMPLES 1000        /* bench's rule: a p99 from fewer samples is noise, --json says null */
#define MAX_LABELS_BYTES (1u << 20) /* a labels file is class names: thousands fit in 1 MiB */
#define MAX_IMAGE_BYTES (64u << 20) /* an image at the model's input size: 4096x4096x4 fits */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  fputs("error: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(2);
}

/* A corrupt model that verify_model lets through can still crash inside LiteRT (the verifier checks bounds
 * and indices, not every value): the handler turns that into the same one-line error and exit code 2. It only
 * write()s the line prepared before the risky call and _exit()s, both async-signal-safe. */
static char crash_line[1024] = "error: LiteRT crashed\n";
static volatile int crash_fd = 2;

static void on_crash(int sig) {
  (void)sig;
  ssize_t ignored = write(crash_fd, crash_line, strlen(crash_line));
  (void)ignored;
  _exit(2);
}

static void guard(const char *what, const char *path) {
  snprintf(crash_line, sizeof crash_line, "error: %s %s: LiteRT crashed (corrupt or truncated model file?)\n",
           what, path);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_crash;
  int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
}

/* ------------------------------------------------------------------ options */

typedef struct {
  const char *model, *labels;
  const char **images;
  int n_images, top_k, json, threads, bench, warmup, allow_cpu, model_given;
  double time_cap; /* seconds of timed calls in --bench; 0: no cap */
  float scale, mean[MAX_CHANNELS], std[MAX_CHANNELS];
} Args;

/* An int in [lo, hi]: a long outside it is refused, not wrapped. */
static int parse_int(const char *opt, const char *s, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi)
    fail("%s must be an integer from %ld to %ld (got '%s')", opt, lo, hi, s);
  return (int)v;
}

static float parse_float(const char *opt, const char *s) {
  char *end;
  float v = strtof(s, &end);
  if (*end || end == s || !isfinite(v)) fail("%s must be a number (got '%s')", opt, s);
  return v;
}

/* "a,b,c" -> out[0..2]; one value applies to every channel. */
static void parse_floats(const char *opt, const char *s, float *out) {
  char buf[256], *save = NULL;
  int n = 0;
  if (strlen(s) >= sizeof buf) fail("%s is too long", opt);
  strcpy(buf, s);
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (n == MAX_CHANNELS) fail("%s takes at most %d values", opt, MAX_CHANNELS);
    out[n++] = parse_float(opt, tok);
  }
  if (n == 0) fail("%s needs a value", opt);
  for (int i = n; i < MAX_CHANNELS; i++) out[i] = out[n == 1 ? 0 : i < n ? i : n - 1];
}

/* A default file lives beside the executable, wherever it is started from. */
static char *beside_exe(const char *name) {
  static char dirs[2][4096];
  static int next;
  char *buf = dirs[next++ % 2];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof dirs[0] - 1);
  if (n <= 0) return (char *)name;
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (!slash || (size_t)(slash - buf) + 2 + strlen(name) > sizeof dirs[0]) return (char *)name;
  strcpy(slash + 1, name);
  return buf;
}

static void usage(void) {
  printf(
      "usage: runner IMAGE... [--top-k K] [--json] [--threads N] [--model PATH] [--labels PATH]\n"
      "              [--scale S] [--mean a,b,c] [--std a,b,c] [--allow-cpu-mismatch]\n"
      "       runner --bench N [--warmup W] [--time-cap S] [IMAGE] [--json]\n"
      "IMAGE: binary PPM (P6) / PGM (P5), maxval 255, or raw HxWxC uint8 bytes, at the model's input size.\n"
      "defaults: --model %s and --labels labels.txt beside this program, --top-k 3, --threads %d (0: LiteRT's\n"
      "default), --warmup 10, no --time-cap. Exit codes: 0 ok, 2 bad input (one 'error:' line).\n",
      RUNNER_DEFAULT_MODEL, RUNNER_DEFAULT_THREADS);
}

static Args parse_args(int argc, char **argv) {
  Args a = {.model = NULL, .labels = NULL, .top_k = 3, .threads = RUNNER_DEFAULT_THREADS, .warmup = 10,
            .scale = 1.0f};
  for (int c = 0; c < MAX_CHANNELS; c++) a.mean[c] = 0.0f, a.std[c] = 1.0f;
  a.images = calloc((size_t)argc, sizeof *a.images);
  if (!a.images) fail("out of memory");
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i];
    int has_value = i + 1 < argc;
#define VALUE() (has_value ? argv[++i] : (fail("%s needs a value", o), ""))
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
      usage();
      exit(0);
    } else if (!strcmp(o, "--json")) {
      a.json = 1;
    } else if (!strcmp(o, "--allow-cpu-mismatch")) {
      a.allow_cpu = 1;
    } else if (!strcmp(o, "--model")) {
      a.model = VALUE();
    } else if (!strcmp(o, "--labels")) {
      a.labels = VALUE();
    } else if (!strcmp(o, "--top-k")) {
      a.top_k = parse_int(o, VALUE(), 1, MAX_CLASSES);
    } else if (!strcmp(o, "--threads")) {
      a.threads = parse_int(o, VALUE(), 1, MAX_THREADS);
    } else if (!strcmp(o, "--bench")) {
      a.bench = parse_int(o, VALUE(), 1, MAX_RUNS);
    } else if (!strcmp(o, "--warmup")) {
      a.warmup = parse_int(o, VALUE(), 0, MAX_RUNS);
    } else if (!strcmp(o, "--time-cap")) {
      a.time_cap = parse_float(o, VALUE());
      if (a.time_cap <= 0) fail("--time-cap must be above 0 (got '%s')", argv[i]);
    } else if (!strcmp(o, "--scale")) {
      a.scale = parse_float(o, VALUE());
    } else if (!strcmp(o, "--mean")) {
      parse_floats(o, VALUE(), a.mean);
    } else if (!strcmp(o, "--std")) {
      parse_floats(o, VALUE(), a.std);
    } else if (o[0] == '-' && o[1] == '-') {
      fail("unknown option %s (see --help)", o);
    } else {
      a.images[a.n_images++] = o;
    }
#undef VALUE
  }
  for (int c = 0; c < MAX_CHANNELS; c++)
    if (a.std[c] == 0.0f) fail("--std values must not be 0");
  if (!a.bench && a.n_images == 0) fail("give image files or --bench N (see --help)");
  if (a.bench && a.n_images > 1) fail("--bench times one image (got %d)", a.n_images);
  a.model_given = a.model != NULL;
  if (!a.model) a.model = beside_exe(RUNNER_DEFAULT_MODEL);
  if (!a.labels) a.labels = beside_exe("labels.txt");
  return a;
}

/* ------------------------------------------------------------------ the CPU */

/* This CPU's arch and flags (" flag flag ... ", spaces around each for whole-word search): the fake of
 * EDGEBENCH_FAKE_CPU_FLAGS where set, else /proc/cpuinfo's first "flags" (x86) / "Features" (ARM) line. */
static void host_cpu(char *arch, size_t arch_n, char *flags, size_t flags_n) {
  snprintf(arch, arch_n, "%s", RUNNER_ARCH);
  snprintf(flags, flags_n, " ");
  const char *fake = getenv("EDGEBENCH_FAKE_CPU_FLAGS");
  char *line = NULL;
  size_t cap = 0;
  const char *list = NULL;
  if (fake) {
    const char *colon = strrchr(fake, ':');
    if (colon && colon > fake) snprintf(arch, arch_n, "%.*s", (int)(colon - fake), fake);
    list = colon ? colon + 1 : fake;
  } else {
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && getline(&line, &cap, f) > 0) {
      if (strncmp(line, "flags", 5) && strncmp(line, "Features", 8)) continue;
      char *colon = strchr(line, ':');
      if (colon) list = colon + 1;
      break;
    }
    if (f) fclose(f);
  }
  for (const char *p = list; p && *p;) {
    size_t n = strcspn(p, ", \t\n");
    if (n && strlen(flags) + n + 2 < flags_n) {
      strncat(flags, p, n);
      strcat(flags, " ");
    }
    p += n + (p[n] != '\0');
  }
  for (char *c = flags; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
  free(line);
}

/* Refuse (exit 2) or, with --allow-cpu-mismatch, warn where this CPU fails a rule of RUNNER_CPU_REQUIRES. */
static void check_cpu(int allow) {
  char arch[64], flags[8192], missing[1024] = "", rules[1024];
  host_cpu(arch, sizeof arch, flags, sizeof flags);
  snprintf(rules, sizeof rules, "%s", RUNNER_CPU_REQUIRES);
  char *save = NULL;
  for (char *rule = strtok_r(rules, ";", &save); rule; rule = strtok_r(NULL, ";", &save)) {
    char *colon = strchr(rule, ':');
    if (!colon) continue;
    *colon = '\0';
    if (strcmp(rule, arch)) continue; /* a rule applies on its own arch only */
    int met = 0;
    char alt[1024], *save2 = NULL, word[160];
    snprintf(alt, sizeof alt, "%s", colon + 1);
    for (char *f = strtok_r(alt, "|", &save2); f && !met; f = strtok_r(NULL, "|", &save2)) {
      snprintf(word, sizeof word, " %s ", f);
      met = strstr(flags, word) != NULL;
    }
    if (met) continue;
    size_t used = strlen(missing);
    if (used) snprintf(missing + used, sizeof missing - used, "; ");
    for (char *c = colon + 1; *c; c++) { /* "a|b" -> "a or b", as infer.py says it */
      used = strlen(missing);
      snprintf(missing + used, sizeof missing - used, *c == '|' ? " or " : "%c", *c);
    }
  }
  if (!missing[0]) return;
  if (!allow)
    fail("this %s CPU lacks %s, which the model needs (model.json cpu.requires; --allow-cpu-mismatch runs it "
         "anyway)", arch, missing);
  fprintf(stderr, "warning: this %s CPU lacks %s, which the model needs; going on (--allow-cpu-mismatch)\n",
          arch, missing);
}

/* ------------------------------------------------------------------ files */

/* A file into one buffer. A regular one of at most `limit` bytes (0: no limit) is read at its size (a model
 * can be 100 MB); anything else (a FIFO, /dev/zero) only where `limit` is set and only up to it, so that no
 * input is read without end. */
static unsigned char *read_file(const char *path, size_t *size, const char *what, size_t limit) {
  FILE *f = fopen(path, "rb");
  if (!f) fail("%s not found or unreadable: %s (%s)", what, path, strerror(errno));
  struct stat st;
  int regular = !fstat(fileno(f), &st) && S_ISREG(st.st_mode);
  if (!regular && !limit) fail("%s %s is not a regular file (a device, FIFO or folder)", what, path);
  if (regular && limit && (uint64_t)st.st_size > limit)
    fail("%s %s has %lld bytes; at most %zu are read", what, path, (long long)st.st_size, limit);
  size_t n = 0, cap = regular ? (size_t)st.st_size + 1 : 1 << 16;
  unsigned char *data = malloc(cap);
  if (!data) fail("out of memory reading %s", path);
  for (;;) {
    if (limit && n > limit) fail("%s %s has more than %zu bytes", what, path, limit);
    if (n == cap) {
      cap *= 2;
      unsigned char *grown = realloc(data, cap);
      if (!grown) fail("out of memory reading %s", path);
      data = grown;
    }
    size_t got = fread(data + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) fail("cannot read %s: %s", path, strerror(errno));
  *size = n;
  return data;
}

static int read_labels(const char *path, char ***names) {
  size_t size;
  char *text = (char *)read_file(path, &size, "labels file", MAX_LABELS_BYTES);
  char *grown = realloc(text, size + 1);
  if (!grown) fail("out of memory");
  text = grown;
  text[size] = '\0';
  char **out = calloc(MAX_CLASSES, sizeof *out);
  int n = 0;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') line[len - 1] = '\0';
    if (!*line) continue;
    if (n == MAX_CLASSES) fail("%s has more than %d classes", path, MAX_CLASSES);
    out[n++] = line;
  }
  if (n == 0) fail("%s lists no classes", path);
  *names = out;
  return n;
}

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && !strcasecmp(s + n - m, suffix);
}

/* Next PNM header integer, skipping whitespace and # comments. */
static long pnm_int(const unsigned char *d, size_t size, size_t *pos, const char *path) {
  for (;;) {
    while (*pos < size && (d[*pos] == ' ' || d[*pos] == '\t' || d[*pos] == '\n' || d[*pos] == '\r')) (*pos)++;
    if (*pos < size && d[*pos] == '#') {
      while (*pos < size && d[*pos] != '\n') (*pos)++;
      continue;
    }
    break;
  }
  long v = 0;
  size_t start = *pos;
  while (*pos < size && d[*pos] >= '0' && d[*pos] <= '9' && v < 1000000) v = v * 10 + (d[(*pos)++] - '0');
  if (*pos == start) fail("%s is not a valid PPM/PGM file (bad header)", path);
  return v;
}

/* The image's pixels as H*W*C uint8, checked against the model's input size. */
static unsigned char *read_image(const char *path, int h, int w, int c) {
  size_t size, want = (size_t)h * w * c;
  unsigned char *d = read_file(path, &size, "image", MAX_IMAGE_BYTES);
  if (has_suffix(path, ".ppm") || has_suffix(path, ".pgm") || has_suffix(path, ".pnm")) {
    if (size < 2 || d[0] != 'P' || (d[1] != '6' && d[1] != '5'))
      fail("%s is not a binary PPM (P6) or PGM (P5) file", path);
    int channels = d[1] == '6' ? 3 : 1;
    size_t pos = 2;
    long iw = pnm_int(d, size, &pos, path), ih = pnm_int(d, size, &pos, path);
    long maxval = pnm_int(d, size, &pos, path);
    pos++; /* the single whitespace byte before the pixels */
    if (maxval != 255) fail("%s has maxval %ld; only 8-bit (255) images are read", path, maxval);
    if (iw != w || ih != h || channels != c)
      fail("%s is %ldx%ldx%d (HxWxC); the model takes %dx%dx%d: resize it first", path, ih, iw, channels, h,
           w, c);
    if (size < pos || size - pos != want)
      fail("%s holds %zu pixel bytes; %ldx%ldx%d needs %zu (truncated?)", path, size < pos ? 0 : size - pos,
           ih, iw, channels, want);
    memmove(d, d + pos, want);
    return d;
  }
  if (size >= 8 && !memcmp(d, "\x89PNG", 4))
    fail("%s is a PNG file; this runner reads PPM (P6) or raw HxWxC uint8 (convert it first)", path);
  if (size >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
    fail("%s is a JPEG file; this runner reads PPM (P6) or raw HxWxC uint8 (convert it first)", path);
  if (size != want)
    fail("%s has %zu bytes; a raw image for this model is %dx%dx%d uint8 = %zu bytes", path, size, h, w, c,
         want);
  return d;
}

/* ------------------------------------------------------------------ checking the model file */

#include "tflite_check.h" /* verify_model: bounds and indices of the flatbuffer, before LiteRT reads it */

/* SHA-256 (FIPS 180-4) of the model's bytes, for the bundle's own model: model.json's digest. */
static void sha256_hex(const unsigned char *d, size_t n, char hex[65]) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
      0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
      0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
      0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
      0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
      0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
      0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
#define ROR(x, r) ((x) >> (r) | (x) << (32 - (r)))
  for (uint64_t block = 0, blocks = ((uint64_t)n + 8) / 64 + 1; block < blocks; block++) {
    unsigned char chunk[64];
    uint32_t w[64], v[8];
    for (unsigned i = 0; i < 64; i++) { /* the message, 0x80, zeros, its length in bits (big-endian) */
      uint64_t at = block * 64 + i, end = blocks * 64, bits = (uint64_t)n * 8;
      chunk[i] = at < n ? d[at] : at == n ? 0x80 : at + 8 >= end ? (unsigned char)(bits >> (8 * (end - 1 - at))) : 0;
    }
    for (unsigned i = 0; i < 64; i++) {
      const unsigned char *c = chunk + 4 * (i % 16);
      w[i] = i < 16 ? (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3]
                    : (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ w[i - 2] >> 10) + w[i - 7] +
                          (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ w[i - 15] >> 3) + w[i - 16];
    }
    memcpy(v, h, sizeof v);
    for (unsigned i = 0; i < 64; i++) {
      uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]), maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
      uint32_t t1 = v[7] + (ROR(v[4], 6) ^ ROR(v[4], 11) ^ ROR(v[4], 25)) + ch + k[i] + w[i];
      uint32_t t2 = (ROR(v[0], 2) ^ ROR(v[0], 13) ^ ROR(v[0], 22)) + maj;
      memmove(v + 1, v, 7 * sizeof *v);
      v[4] += t1, v[0] = t1 + t2;
    }
    for (unsigned i = 0; i < 8; i++) h[i] += v[i];
  }
#undef ROR
  for (unsigned i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", (unsigned)h[i]);
}

static void check_sha256(const char *path, const unsigned char *d, size_t n, const char *expected) {
  char actual[65];
  sha256_hex(d, n, actual);
  if (strcasecmp(actual, expected))
    fail("model file %s is not the one in model.json: sha256 %.16s... != %.16s... (tampered or corrupted)", path,
         actual, expected);
}

/* ------------------------------------------------------------------ the model */

typedef struct {
  unsigned char *bytes; /* the model file, verified; LiteRT's model refers to it: freed after the model */
  LiteRtEnvironment env;
  LiteRtModel model;
  LiteRtCompiledModel compiled;
  LiteRtTensorBuffer in, out;
  LiteRtRankedTensorType in_type, out_type;
  LiteRtQuantizationPerTensor in_q, out_q;
  int in_quantized, out_quantized, h, w, c;
  int ran; /* the first run (where LiteRT prepares its kernels) is done */
  double load_ms; /* open_model: reading, checking, loading and compiling the model */
  size_t out_count;
} Model;

static const char *status_name(LiteRtStatus s) {
  switch ((int)s) {
    case kLiteRtStatusErrorInvalidArgument: return "invalid argument";
    case kLiteRtStatusErrorMemoryAllocationFailure: return "out of memory";
    case kLiteRtStatusErrorRuntimeFailure: return "runtime failure";
    case kLiteRtStatusErrorUnsupported: return "unsupported";
    case kLiteRtStatusErrorNotFound: return "not found";
    case kLiteRtStatusErrorFileIO: return "file I/O error";
    case kLiteRtStatusErrorInvalidFlatbuffer: return "not a valid TFLite flatbuffer";
    case kLiteRtStatusErrorCompilation: return "compilation failed";
    default: return "error";
  }
}

#define CHECK(call, what)                                                                        \
  do {                                                                                           \
    LiteRtStatus st_ = (call);                                                                   \
    if (st_ != kLiteRtStatusOk) fail("%s: LiteRT status %d (%s)", what, (int)st_, status_name(st_)); \
  } while (0)

static size_t element_size(LiteRtElementType t) {
  switch (t) {
    case kLiteRtElementTypeFloat32: return 4;
    case kLiteRtElementTypeUInt8:
    case kLiteRtElementTypeInt8: return 1;
    default: return 0;
  }
}

static void free_payload(void *p) { free(p); }

/* LiteRT logs to stderr while it loads a model; the runner keeps stderr to its own one-line errors. */
static int quiet_stderr(void) {
  fflush(stderr);
  int saved = dup(2), null = open("/dev/null", O_WRONLY);
  if (saved >= 0 && null >= 0) dup2(null, 2);
  if (null >= 0) close(null);
  if (saved >= 0) crash_fd = saved;
  return saved;
}

static void restore_stderr(int saved) {
  if (saved < 0) return;
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  crash_fd = 2;
}

static void tensor_info(LiteRtTensor t, LiteRtRankedTensorType *type, LiteRtQuantizationPerTensor *q,
                        int *quantized, const char *what) {
  LiteRtQuantizationTypeId qt = kLiteRtQuantizationNone;
  CHECK(LiteRtGetRankedTensorType(t, type), what);
  CHECK(LiteRtGetQuantizationTypeId(t, &qt), what);
  *quantized = qt == kLiteRtQuantizationPerTensor;
  if (*quantized) CHECK(LiteRtGetPerTensorQuantization(t, q), what);
  if (!element_size(type->element_type))
    fail("%s has element type %d; this runner handles float32, uint8 and int8", what, (int)type->element_type);
}

/* `expected_sha256`: the digest the model must have (the bundle's own model), or NULL (--model). */
static void open_model(Model *m, const char *path, int threads, int n_classes, const char *expected_sha256) {
  size_t size;
  m->bytes = read_file(path, &size, "model file", 0);
  if (expected_sha256) check_sha256(path, m->bytes, size, expected_sha256);
  if (size < 8 || memcmp(m->bytes + 4, "TFL3", 4))
    fail("%s is not a TFLite model (no TFL3 flatbuffer identifier)", path);
  verify_model(path, m->bytes, size);

  guard("cannot load model", path); /* the verifier is the first line of defence, this the second */
  int saved = quiet_stderr();
  LiteRtStatus st = LiteRtCreateEnvironment(0, NULL, &m->env);
  if (st == kLiteRtStatusOk) st = LiteRtCreateModelFromBuffer(m->env, m->bytes, size, &m->model);
  restore_stderr(saved);
  if (st != kLiteRtStatusOk)
    fail("cannot load model %s: LiteRT status %d (%s)", path, (int)st, status_name(st));

  LiteRtParamIndex n_sig = 0, n_in = 0, n_out = 0;
  LiteRtSignature sig;
  LiteRtTensor tin, tout;
  CHECK(LiteRtGetNumModelSignatures(m->model, &n_sig), "reading the model's signatures");
  if (n_sig < 1) fail("%s has no signature to run", path);
  CHECK(LiteRtGetModelSignature(m->model, 0, &sig), "reading the model's signature");
  CHECK(LiteRtGetNumSignatureInputs(sig, &n_in), "reading the model's inputs");
  CHECK(LiteRtGetNumSignatureOutputs(sig, &n_out), "reading the model's outputs");
  if (n_in != 1 || n_out != 1)
    fail("%s has %zu inputs and %zu outputs; this runner takes one image in, one score vector out", path, n_in,
         n_out);
  CHECK(LiteRtGetSignatureInputTensorByIndex(sig, 0, &tin), "reading the input tensor");
  CHECK(LiteRtGetSignatureOutputTensorByIndex(sig, 0, &tout), "reading the output tensor");
  tensor_info(tin, &m->in_type, &m->in_q, &m->in_quantized, "the model input");
  tensor_info(tout, &m->out_type, &m->out_q, &m->out_quantized, "the model output");

  /* A dynamic batch (-1, as the converter writes for Keras models) runs with batch 1. */
  LiteRtLayout *li = &m->in_type.layout, *lo = &m->out_type.layout;
  if (li->rank == 4 && li->dimensions[0] == -1) li->dimensions[0] = 1;
  if (lo->rank >= 1 && lo->dimensions[0] == -1) lo->dimensions[0] = 1;
  if (li->rank != 4 || li->dimensions[0] != 1 || li->dimensions[1] < 1 || li->dimensions[2] < 1 ||
      li->dimensions[3] < 1 || li->dimensions[3] > MAX_CHANNELS)
    fail("%s: the input is not one NHWC image (rank %u, shape %d,%d,%d,%d)", path, (unsigned)li->rank,
         li->dimensions[0], li->dimensions[1], li->dimensions[2], li->dimensions[3]);
  m->h = li->dimensions[1], m->w = li->dimensions[2], m->c = li->dimensions[3];
  m->out_count = 1;
  for (unsigned i = 0; i < lo->rank; i++) m->out_count *= lo->dimensions[i] > 0 ? (size_t)lo->dimensions[i] : 0;
  if (m->out_count != (size_t)n_classes)
    fail("the model outputs %zu scores but the labels file lists %d classes", m->out_count, n_classes);

  LiteRtOptions options;
  CHECK(LiteRtCreateOptions(&options), "creating options");
  CHECK(LiteRtSetOptionsHardwareAccelerators(options, kLiteRtHwAcceleratorCpu), "selecting the CPU");
  if (threads > 0) {
    char *toml = malloc(32);
    LiteRtOpaqueOptions cpu;
    if (!toml) fail("out of memory");
    snprintf(toml, 32, "num_threads = %d\n", threads);
    CHECK(LiteRtCreateOpaqueOptions("xnnpack", toml, free_payload, &cpu), "setting the CPU threads");
    CHECK(LiteRtAddOpaqueOptions(options, cpu), "setting the CPU threads");
  }
  guard("cannot prepare model", path);
  saved = quiet_stderr();
  st = LiteRtCreateCompiledModel(m->env, m->model, options, &m->compiled);
  restore_stderr(saved);
  LiteRtDestroyOptions(options);
  if (st != kLiteRtStatusOk)
    fail("cannot prepare model %s for the CPU: LiteRT status %d (%s)", path, (int)st, status_name(st));

  LiteRtTensorBufferRequirements rin, rout;
  CHECK(LiteRtGetCompiledModelInputBufferRequirements(m->compiled, 0, 0, &rin), "input buffer requirements");
  CHECK(LiteRtGetCompiledModelOutputBufferRequirements(m->compiled, 0, 0, &rout), "output buffer requirements");
  CHECK(LiteRtCreateManagedTensorBufferFromRequirements(m->env, &m->in_type, rin, &m->in), "input buffer");
  CHECK(LiteRtCreateManagedTensorBufferFromRequirements(m->env, &m->out_type, rout, &m->out), "output buffer");
}

static void close_model(Model *m) {
  LiteRtDestroyTensorBuffer(m->in);
  LiteRtDestroyTensorBuffer(m->out);
  LiteRtDestroyCompiledModel(m->compiled);
  LiteRtDestroyModel(m->model);
  LiteRtDestroyEnvironment(m->env);
  free(m->bytes);
}

/* numpy's quantize: round half to even (the default rounding mode), then clip. */
static float quantize(float x, const LiteRtQuantizationPerTensor *q, float lo, float hi) {
  float v = nearbyintf(x / q->scale + (float)q->zero_point);
  return v < lo ? lo : v > hi ? hi : v;
}

static void set_input(Model *m, const unsigned char *pixels, const Args *a) {
  void *dst;
  size_t n = (size_t)m->h * m->w * m->c;
  CHECK(LiteRtLockTensorBuffer(m->in, &dst, kLiteRtTensorBufferLockModeWrite), "writing the input");
  for (size_t i = 0; i < n; i++) {
    int ch = (int)(i % (size_t)m->c);
    float x = ((float)pixels[i] * a->scale - a->mean[ch]) / a->std[ch];
    switch (m->in_type.element_type) {
      case kLiteRtElementTypeFloat32: ((float *)dst)[i] = x; break;
      case kLiteRtElementTypeUInt8:
        ((uint8_t *)dst)[i] = (uint8_t)(m->in_quantized && m->in_q.scale ? quantize(x, &m->in_q, 0, 255) : x);
        break;
      default:
        ((int8_t *)dst)[i] = (int8_t)(m->in_quantized && m->in_q.scale ? quantize(x, &m->in_q, -128, 127) : x);
    }
  }
  CHECK(LiteRtUnlockTensorBuffer(m->in), "writing the input");
}

static void get_output(Model *m, float *probs) {
  void *src;
  CHECK(LiteRtLockTensorBuffer(m->out, &src, kLiteRtTensorBufferLockModeRead), "reading the output");
  for (size_t i = 0; i < m->out_count; i++) {
    float v = m->out_type.element_type == kLiteRtElementTypeFloat32 ? ((float *)src)[i]
              : m->out_type.element_type == kLiteRtElementTypeUInt8 ? (float)((uint8_t *)src)[i]
                                                                     : (float)((int8_t *)src)[i];
    /* (q - zero_point) * scale in float32, as the Python runners dequantize */
    probs[i] = m->out_quantized && m->out_q.scale ? (v - (float)m->out_q.zero_point) * m->out_q.scale : v;
  }
  CHECK(LiteRtUnlockTensorBuffer(m->out), "reading the output");
}

static void run(Model *m) {
  /* LiteRT prepares the kernels at the first run and logs what it refuses there (a corrupt tensor shape):
   * stderr stays the runner's one-line error. */
  int saved = m->ran ? -1 : quiet_stderr();
  LiteRtStatus st = LiteRtRunCompiledModel(m->compiled, 0, 1, &m->in, 1, &m->out);
  restore_stderr(saved);
  m->ran = 1;
  CHECK(st, "running the model");
}

/* ------------------------------------------------------------------ output */

/* Python's repr of a float: the shortest decimal that reads back as the same double. */
static void print_repr(double v) {
  char buf[40];
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, sizeof buf, "%.*g", p, v);
    if (strtod(buf, NULL) == v) break;
  }
  fputs(buf, stdout);
  if (!strpbrk(buf, ".einn")) fputs(".0", stdout);
}

/* A JSON string as Python's json.dumps writes it (ensure_ascii). */
static void print_json_string(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  putchar('"');
  while (*p) {
    unsigned cp = *p, extra = 0;
    if (cp >= 0xF0) cp &= 0x07, extra = 3;
    else if (cp >= 0xE0) cp &= 0x0F, extra = 2;
    else if (cp >= 0xC0) cp &= 0x1F, extra = 1;
    p++;
    for (unsigned k = 0; k < extra && (*p & 0xC0) == 0x80; k++) cp = (cp << 6) | (*p++ & 0x3F);
    if (cp == '"') fputs("\\\"", stdout);
    else if (cp == '\\') fputs("\\\\", stdout);
    else if (cp == '\n') fputs("\\n", stdout);
    else if (cp == '\r') fputs("\\r", stdout);
    else if (cp == '\t') fputs("\\t", stdout);
    else if (cp == '\b') fputs("\\b", stdout);
    else if (cp == '\f') fputs("\\f", stdout);
    else if (cp < 0x20 || (cp >= 0x7F && cp < 0x10000)) printf("\\u%04x", cp);
    else if (cp >= 0x10000) printf("\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF));
    else putchar((int)cp);
  }
  putchar('"');
}

/* Indices of the k largest scores; ties keep the lower index first (numpy's argsort on 10 classes). */
static void top_k(const float *probs, int n, int k, int *order) {
  for (int i = 0; i < n; i++) order[i] = i;
  for (int i = 1; i < n; i++) {
    int x = order[i], j = i;
    while (j > 0 && probs[order[j - 1]] < probs[x]) order[j] = order[j - 1], j--;
    order[j] = x;
  }
  (void)k;
}

static void print_result(const char *image, const float *probs, char **names, int n, int k, int json,
                         int first, int last) {
  int order[MAX_CLASSES];
  top_k(probs, n, k, order);
  if (!json) {
    printf("%s: ", image);
    for (int j = 0; j < k; j++) printf("%s%s %.1f%%", j ? ", " : "", names[order[j]], probs[order[j]] * 100.0);
    putchar('\n');
    return;
  }
  if (first) puts("[");
  printf("  {\n    \"image\": ");
  print_json_string(image);
  printf(",\n    \"top_k\": [\n");
  for (int j = 0; j < k; j++) {
    printf("      {\n        \"class\": ");
    print_json_string(names[order[j]]);
    printf(",\n        \"probability\": ");
    print_repr((double)probs[order[j]]);
    printf("\n      }%s\n", j + 1 < k ? "," : "");
  }
  printf("    ]\n  }%s\n", last ? "" : ",");
  if (last) puts("]");
}

/* ------------------------------------------------------------------ bench */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* numpy.percentile's default (linear interpolation between closest ranks). */
static double percentile(const double *sorted, int n, double q) {
  double pos = q / 100.0 * (n - 1);
  int lo = (int)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The first (cold) call, `warmup` untimed calls, then up to `bench` timed ones into ms[] (stopping once
 * --time-cap seconds are spent and MIN_TIMED are taken, as bench's timed_samples); the count timed. */
static int time_calls(Model *m, const Args *a, double *ms, double *first_ms) {
  double t0 = now_ms();
  run(m);
  *first_ms = now_ms() - t0;
  for (int i = 0; i < a->warmup; i++) run(m);
  double deadline = now_ms() + a->time_cap * 1e3;
  int n = 0;
  while (n < a->bench) {
    double start = now_ms();
    run(m);
    double end = now_ms();
    ms[n++] = end - start;
    if (a->time_cap > 0 && n >= MIN_TIMED && end >= deadline) break;
  }
  return n;
}

/* Peak resident memory of this process in kB: model, runtime and buffers. /proc/self/status's VmHWM first:
 * ru_maxrss keeps the peak of the process before exec (a forked Python parent's 50 MB, say), VmHWM is this
 * program's own; ru_maxrss where there is no /proc. */
static long peak_rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && kb < 0 && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
  if (f) fclose(f);
  struct rusage ru;
  if (kb < 0 && !getrusage(RUSAGE_SELF, &ru)) kb = ru.ru_maxrss;
  return kb;
}

/* q: p50, p90, p99, mean of the n samples in ms[] (call order). */
static void print_bench_json(const Model *m, const Args *a, const double *ms, int n, double first_ms,
                             const double *q) {
  printf("{\n  \"call\": \"LiteRtRunCompiledModel\",\n  \"runs\": %d,\n  \"warmup\": %d,\n  \"threads\": %d,\n"
         "  \"load_ms\": %.6f,\n  \"first_ms\": %.6f,\n  \"peak_rss_kb\": %ld,\n",
         n, a->warmup, a->threads, m->load_ms, first_ms, peak_rss_kb());
  printf("  \"p50_ms\": %.4f,\n  \"p90_ms\": %.4f,\n", q[0], q[1]);
  if (n >= P99_MIN_SAMPLES) printf("  \"p99_ms\": %.4f,\n", q[2]);
  else printf("  \"p99_ms\": null,\n");
  printf("  \"mean_ms\": %.4f,\n  \"samples_ms\": [", q[3]);
  for (int i = 0; i < n; i++) printf("%s%.6f", i ? ", " : "", ms[i]);
  printf("]\n}\n");
}

static void bench(Model *m, const Args *a) {
  double *ms = malloc(sizeof(double) * (size_t)a->bench), *sorted = malloc(sizeof(double) * (size_t)a->bench);
  double first_ms, sum = 0;
  if (!ms || !sorted) fail("out of memory");
  int n = time_calls(m, a, ms, &first_ms);
  memcpy(sorted, ms, sizeof(double) * (size_t)n);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
  for (int i = 0; i < n; i++) sum += ms[i];
  double q[4] = {percentile(sorted, n, 50), percentile(sorted, n, 90), percentile(sorted, n, 99), sum / n};
  if (a->json)
    print_bench_json(m, a, ms, n, first_ms, q);
  else
    printf("bench: %d calls of LiteRtRunCompiledModel after %d warm-up, threads %d: p50 %.3f ms, p90 %.3f ms, "
           "p99 %.3f ms, mean %.3f ms\n",
           n, a->warmup, a->threads, q[0], q[1], q[2], q[3]);
  free(ms);
  free(sorted);
}

int main(int argc, char **argv) {
  Args a = parse_args(argc, argv);
  check_cpu(a.allow_cpu);
  char **names;
  int n_classes = read_labels(a.labels, &names);
  if (a.top_k > n_classes) fail("--top-k must be between 1 and %d (got %d)", n_classes, a.top_k);
  Model m = {0};
  /* The bundle's own model is the file model.json describes, as infer.py checks; --model runs any file. */
  const char *expected = a.model_given || !RUNNER_MODEL_SHA256[0] ? NULL : RUNNER_MODEL_SHA256;
  double t0 = now_ms();
  open_model(&m, a.model, a.threads, n_classes, expected);
  m.load_ms = now_ms() - t0;

  guard("running model", a.model);
  /* Every image is read and checked before the first result is printed: bad input prints nothing else. */
  size_t n_px = (size_t)m.h * m.w * m.c;
  unsigned char **pixels = calloc((size_t)a.n_images + 1, sizeof *pixels);
  if (!pixels) fail("out of memory");
  for (int i = 0; i < a.n_images; i++) pixels[i] = read_image(a.images[i], m.h, m.w, m.c);

  if (a.bench) {
    if (!a.n_images && !(pixels[0] = calloc(n_px, 1))) fail("out of memory");
    set_input(&m, pixels[0], &a);
    bench(&m, &a);
  } else {
    float *probs = malloc(sizeof(float) * m.out_count);
    if (!probs) fail("out of memory");
    for (int i = 0; i < a.n_images; i++) {
      set_input(&m, pixels[i], &a);
      run(&m);
      get_output(&m, probs);
      print_result(a.images[i], probs, names, n_classes, a.top_k, a.json, i == 0, i + 1 == a.n_images);
    }
    free(probs);
  }
  int saved = quiet_stderr(); /* LiteRT logs the accelerator's teardown */
  close_model(&m);
  restore_stderr(saved);
  return 0;
}
