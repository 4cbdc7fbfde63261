/*
 * Scenario files (spec.h): parsing, the key tables of each kind, swarm fault
 * mixes, and one runner over every kind so the command and the tests handle
 * all scenarios the same way.
 */
#include "sim/spec.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum key_type {
  K_INT,     /* int */
  K_SECONDS, /* int64 nanoseconds, written in seconds */
  K_ON,      /* bool: on/off */
  K_OFF,     /* bool stored inverted ("partitions on" is no_partitions = false) */
  K_I64,     /* int64 */
  K_MS,      /* int64 nanoseconds, written in milliseconds */
  K_PROB,    /* double; min and max are in thousandths */
  K_WORDS,   /* a list of words, each turning on one bool of the key's word table ("none": all off) */
} key_type;

/* The words of a K_WORDS key: each names a bool (offset in rv_sim_spec). */
typedef struct spec_word {
  const char *word;
  size_t off;
} spec_word;

typedef struct spec_key {
  const char *name;
  rv_sim_kind kind;
  key_type type;
  size_t off; /* in rv_sim_spec */
  int64_t min, max;
  bool fault; /* part of the fault mix swarm testing draws */
  const char *help;
  const spec_word *words; /* K_WORDS: the table, ending with {NULL, 0} */
} spec_key;

#define LOCKS(f) offsetof(rv_sim_spec, locks.f)
#define QUEUE(f) offsetof(rv_sim_spec, queue.f)
#define SERVICE(f) offsetof(rv_sim_spec, service.f)
#define DURABILITY(f) offsetof(rv_sim_spec, durability.f)

static const spec_word service_bugs[] = {
    {"release", SERVICE(bugs[RV_SVC_BUG_RELEASE])}, {"rebuild", SERVICE(bugs[RV_SVC_BUG_REBUILD])},
    {"cancel", SERVICE(bugs[RV_SVC_BUG_CANCEL])},   {"held", SERVICE(bugs[RV_SVC_BUG_HELD])},
    {"detect", SERVICE(bugs[RV_SVC_BUG_DETECT])},   {NULL, 0}};
static const spec_word service_checks[] = {
    {"deadlock", SERVICE(check_deadlock)}, {"threads", SERVICE(check_threads)},
    {"fencing", SERVICE(check_fencing)},   {"liveness", SERVICE(check_liveness)},
    {"detect", SERVICE(check_detect)},     {"no-rebuild", SERVICE(check_no_rebuild)},
    {NULL, 0}};

static const spec_key keys[] = {
    {"virtual-seconds", RV_SIM_KIND_LOCKS, K_SECONDS, LOCKS(virtual_ns), 1, 86400, false,
     "workload length in virtual seconds (default 60)", NULL},
    {"clients", RV_SIM_KIND_LOCKS, K_INT, LOCKS(clients), 1, RV_SIM_LOCKS_CLIENTS_MAX, false,
     "client processes (default 4)", NULL},
    {"threads", RV_SIM_KIND_LOCKS, K_INT, LOCKS(threads), 1, RV_SIM_LOCKS_THREADS_MAX, false,
     "threads per client, each taking locks (default 3)", NULL},
    {"min-acquisitions", RV_SIM_KIND_LOCKS, K_INT, LOCKS(min_acquisitions), 1, 1000000, false,
     "liveness: acquisitions every thread must make (default 3)", NULL},
    {"partitions", RV_SIM_KIND_LOCKS, K_OFF, LOCKS(no_partitions), 0, 1, true,
     "on|off: the nemesis cuts clients off from coord (default on)", NULL},
    {"break-fencing", RV_SIM_KIND_LOCKS, K_ON, LOCKS(broken_fencing), 0, 1, false,
     "test-only: the resource skips its token check (expect a violation)", NULL},

    {"virtual-seconds", RV_SIM_KIND_QUEUE, K_SECONDS, QUEUE(virtual_ns), 1, 86400, false,
     "workload window in virtual seconds (default 30)", NULL},
    {"messages", RV_SIM_KIND_QUEUE, K_INT, QUEUE(messages), 1, RV_SIM_QUEUE_MESSAGES_MAX, false,
     "messages to publish (default 200)", NULL},
    {"consumers", RV_SIM_KIND_QUEUE, K_INT, QUEUE(consumers), 1, RV_SIM_QUEUE_CONSUMERS_MAX, false,
     "consumer processes (default 3)", NULL},
    {"max-in-flight", RV_SIM_KIND_QUEUE, K_INT, QUEUE(max_in_flight), 1, 1000, false,
     "RDY per consumer (default 3)", NULL},
    {"partitions", RV_SIM_KIND_QUEUE, K_OFF, QUEUE(no_partitions), 0, 1, true,
     "on|off: the nemesis cuts consumers off from the queue (default on)", NULL},
    {"unfixed-consumers", RV_SIM_KIND_QUEUE, K_ON, QUEUE(unfixed_consumers), 0, 1, false,
     "test-only: consumers without cancel_on_server_timeout and hold_slots (expect a violation)", NULL},

    {"virtual-seconds", RV_SIM_KIND_SERVICE, K_SECONDS, SERVICE(virtual_ns), 1, 86400, false,
     "load length in virtual seconds, then the liveness window (default 600)", NULL},
    {"replicas", RV_SIM_KIND_SERVICE, K_INT, SERVICE(replicas), 1, RV_SIM_SERVICE_REPLICAS_MAX, false,
     "replicas of the reference service (default 3)", NULL},
    {"bugs", RV_SIM_KIND_SERVICE, K_WORDS, SERVICE(bugs), 0, 0, false,
     "the incident's causes that are on: release rebuild cancel held detect, or none (default none)",
     service_bugs},
    {"checks", RV_SIM_KIND_SERVICE, K_WORDS, SERVICE(check_deadlock), 0, 0, false,
     "properties checked: deadlock threads fencing liveness detect no-rebuild (default the first four)",
     service_checks},
    {"msg-timeout-ms", RV_SIM_KIND_SERVICE, K_I64, SERVICE(msg_timeout_ms), 1, 3600000, false,
     "the queue's message timeout (default 30000, as in the incident)", NULL},
    {"max-in-flight", RV_SIM_KIND_SERVICE, K_I64, SERVICE(max_in_flight), 1, 2500, false,
     "RDY per replica (default 50)", NULL},
    {"rate", RV_SIM_KIND_SERVICE, K_I64, SERVICE(rate), 1, 10000, false, "events per second (default 15)", NULL},
    {"resources", RV_SIM_KIND_SERVICE, K_I64, SERVICE(resources), 1, 100000, false,
     "distinct resources, i.e. distributed locks (default 8)", NULL},
    {"items", RV_SIM_KIND_SERVICE, K_I64, SERVICE(items), 1, RV_SVC_ITEMS_MAX, false,
     "items per event, each an upstream call (default 3)", NULL},
    {"upstream-latency-ms", RV_SIM_KIND_SERVICE, K_I64, SERVICE(upstream_latency_ms), 0, 60000, false,
     "virtual time of one upstream call (default 30)", NULL},
    {"config-at-seconds", RV_SIM_KIND_SERVICE, K_SECONDS, SERVICE(config_at_ns), 0, 86400, false,
     "first platform-wide write of upstream.url (default 60)", NULL},
    {"config-writes", RV_SIM_KIND_SERVICE, K_I64, SERVICE(config_writes), 0, 10000, false,
     "platform writes, each changing nothing the service sees (default 5)", NULL},
    {"config-every-ms", RV_SIM_KIND_SERVICE, K_MS, SERVICE(config_every_ns), 1, 3600000, false,
     "between platform writes (default 300)", NULL},
    {"partitions", RV_SIM_KIND_SERVICE, K_ON, SERVICE(partitions), 0, 1, true,
     "on|off: nemeses cut replicas off from coord and from the queue (default off)", NULL},
    {"crashes", RV_SIM_KIND_SERVICE, K_ON, SERVICE(crashes), 0, 1, true,
     "on|off: kill -9 a random replica, coord or the queue every 15-45 s, restart it 1-5 s later; "
     "coord's and the queue's unsynced writes lost or torn (default off)", NULL},
    {"loss", RV_SIM_KIND_SERVICE, K_PROB, SERVICE(loss), 0, 900, true,
     "probability a segment is lost and retransmitted, 0..0.9, during the fault window (default 0)", NULL},
    {"resets-per-second", RV_SIM_KIND_SERVICE, K_PROB, SERVICE(resets_per_s), 0, 1000, true,
     "connection resets per connection per virtual second, 0..1, during the fault window (default 0)", NULL},
    {"stop-at-violation", RV_SIM_KIND_SERVICE, K_ON, SERVICE(stop_at_violation), 0, 1, false,
     "on|off: end the run at the first violation (default on)", NULL},

    {"virtual-seconds", RV_SIM_KIND_DURABILITY, K_SECONDS, DURABILITY(virtual_ns), 1, 86400, false,
     "the fault window: publishing, crashes, network faults (default 30)", NULL},
    {"producers", RV_SIM_KIND_DURABILITY, K_INT, DURABILITY(producers), 1, RV_SIM_DURABILITY_PRODUCERS_MAX,
     false, "producer processes (default 3)", NULL},
    {"messages", RV_SIM_KIND_DURABILITY, K_INT, DURABILITY(messages), 1, RV_SIM_DURABILITY_MESSAGES_MAX,
     false, "messages per producer (default 100)", NULL},
    {"consumers", RV_SIM_KIND_DURABILITY, K_INT, DURABILITY(consumers), 1, RV_SIM_DURABILITY_CONSUMERS_MAX,
     false, "consumer processes (default 2)", NULL},
    {"crashes", RV_SIM_KIND_DURABILITY, K_OFF, DURABILITY(no_crashes), 0, 1, true,
     "on|off: kill -9 the queue at random, crash its disk (unsynced writes lost or torn), restart it (default on)",
     NULL},
    {"net-faults", RV_SIM_KIND_DURABILITY, K_OFF, DURABILITY(no_net_faults), 0, 1, true,
     "on|off: segment loss (TCP retransmission) and connection resets (default on)", NULL},
    {"ack-before-sync", RV_SIM_KIND_DURABILITY, K_ON, DURABILITY(ack_before_sync), 0, 1, false,
     "test-only: the queue answers PUB OK before the message is synced (expect a violation)", NULL},
};
#define NKEYS (sizeof keys / sizeof keys[0])
_Static_assert(NKEYS <= 128, "rv_sim_spec.seen has 128 bits");

static const char *const kind_names[RV_SIM_KIND_COUNT] = {"locks", "queue", "service", "durability"};

/* A kind's settings before the file's: 0 means "the scenario's default" for most, but not all. */
static void kind_defaults(rv_sim_spec *s) {
  if (s->kind == RV_SIM_KIND_SERVICE) {
    rv_sim_service_defaults(&s->service);
    s->service.stop_at_violation = true;
  }
}

const char *rv_sim_kind_name(rv_sim_kind k) {
  return k < RV_SIM_KIND_COUNT ? kind_names[k] : "?";
}

static const spec_key *find_key(rv_sim_kind kind, const char *name) {
  for (size_t i = 0; i < NKEYS; i++)
    if (keys[i].kind == kind && strcmp(keys[i].name, name) == 0)
      return &keys[i];
  return NULL;
}

static int fail(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t whylen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
  return RV_EINVAL;
}

static bool parse_bool(const char *v, bool *out) {
  static const char *const yes[] = {"on", "true", "yes", "1"}, *const no[] = {"off", "false", "no", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcmp(v, yes[i]) == 0)
      return *out = true, true;
    if (strcmp(v, no[i]) == 0)
      return *out = false, true;
  }
  return false;
}

static void known_keys(rv_sim_kind kind, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = 0;
  for (size_t i = 0; i < NKEYS && n < cap; i++)
    if (keys[i].kind == kind)
      n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", keys[i].name);
}

static int set_key(rv_sim_spec *s, const spec_key *k, const char *v, char *why, size_t whylen) {
  char *base = (char *)s + k->off;
  if (k->type == K_ON || k->type == K_OFF) {
    bool b;
    if (!parse_bool(v, &b))
      return fail(why, whylen, "%s: '%s' is not on or off", k->name, v);
    *(bool *)base = k->type == K_ON ? b : !b;
    return RV_OK;
  }
  if (k->type == K_WORDS) {
    bool on[32] = {false};
    char list[RV_SIM_SPEC_LINE_MAX];
    snprintf(list, sizeof list, "%s", v);
    char *save = NULL;
    for (char *w = strtok_r(list, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
      if (strcmp(w, "none") == 0)
        continue;
      size_t i = 0;
      while (k->words[i].word && strcmp(k->words[i].word, w) != 0)
        i++;
      if (!k->words[i].word) {
        char known[256] = "";
        size_t n = 0;
        for (size_t j = 0; k->words[j].word && n < sizeof known; j++)
          n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", j ? ", " : "", k->words[j].word);
        return fail(why, whylen, "%s: unknown word '%s' (known: %s, none)", k->name, w, known);
      }
      on[i] = true;
    }
    for (size_t i = 0; k->words[i].word; i++)
      *(bool *)((char *)s + k->words[i].off) = on[i];
    return RV_OK;
  }
  char *end;
  errno = 0;
  if (k->type == K_PROB) {
    double d = strtod(v, &end);
    if (end == v || *end || errno || !(d >= (double)k->min / 1000 && d <= (double)k->max / 1000))
      return fail(why, whylen, "%s: '%s' is not a number from %g to %g", k->name, v,
                  (double)k->min / 1000, (double)k->max / 1000);
    *(double *)base = d;
    return RV_OK;
  }
  long long x = strtoll(v, &end, 10);
  if (end == v || *end || errno || x < k->min || x > k->max)
    return fail(why, whylen, "%s: '%s' is not a whole number from %" PRId64 " to %" PRId64, k->name, v,
                k->min, k->max);
  if (k->type == K_INT)
    *(int *)base = (int)x;
  else if (k->type == K_I64)
    *(int64_t *)base = (int64_t)x;
  else if (k->type == K_MS)
    *(int64_t *)base = (int64_t)x * RV_NS_PER_MS;
  else
    *(int64_t *)base = (int64_t)x * RV_NS_PER_S;
  return RV_OK;
}

int rv_sim_spec_set(rv_sim_spec *s, const char *key, const char *value, char *why, size_t whylen) {
  const spec_key *k = find_key(s->kind, key);
  if (!k) {
    char known[1024];
    known_keys(s->kind, known, sizeof known);
    return fail(why, whylen, "unknown key '%s' for kind %s (known: %s)", key, rv_sim_kind_name(s->kind),
                known);
  }
  return set_key(s, k, value, why, whylen);
}

bool rv_sim_spec_key_is_flag(const rv_sim_spec *s, const char *key) {
  const spec_key *k = find_key(s->kind, key);
  return k && (k->type == K_ON || k->type == K_OFF);
}

void rv_sim_spec_print_keys(FILE *f, int kind) {
  for (int kd = 0; kd < RV_SIM_KIND_COUNT; kd++) {
    if (kind >= 0 && kd != kind)
      continue;
    fprintf(f, "  kind %s:\n", kind_names[kd]);
    for (size_t i = 0; i < NKEYS; i++)
      if ((int)keys[i].kind == kd)
        fprintf(f, "    %-20s %s%s\n", keys[i].name, keys[i].help, keys[i].fault ? " [fault]" : "");
  }
}

/* Trim in place; returns the start. */
static char *trim(char *p) {
  while (isspace((unsigned char)*p))
    p++;
  size_t n = strlen(p);
  while (n && isspace((unsigned char)p[n - 1]))
    p[--n] = 0;
  return p;
}

static int parse_line(rv_sim_spec *s, char *line, char *why, size_t whylen) {
  char *hash = strchr(line, '#');
  if (hash)
    *hash = 0;
  char *p = trim(line);
  if (!*p)
    return RV_OK;
  char *sp = p;
  while (*sp && !isspace((unsigned char)*sp))
    sp++;
  char *value = *sp ? (*sp = 0, trim(sp + 1)) : sp;
  const char *key = p;
  if (strcmp(key, "kind") == 0) {
    if (s->kind_set)
      return fail(why, whylen, "kind given twice");
    for (int k = 0; k < RV_SIM_KIND_COUNT; k++)
      if (strcmp(value, kind_names[k]) == 0) {
        s->kind = (rv_sim_kind)k;
        s->kind_set = true;
        kind_defaults(s);
        return RV_OK;
      }
    return fail(why, whylen, "unknown kind '%s' (known: locks, queue, service, durability)", value);
  }
  if (strcmp(key, "name") == 0) {
    snprintf(s->name, sizeof s->name, "%s", value);
    return RV_OK;
  }
  if (strcmp(key, "description") == 0) {
    snprintf(s->description, sizeof s->description, "%s", value);
    return RV_OK;
  }
  if (strcmp(key, "expect") == 0) {
    if (strcmp(value, "pass") != 0 && strcmp(value, "violation") != 0)
      return fail(why, whylen, "expect: '%s' is not pass or violation", value);
    s->expect_violation = strcmp(value, "violation") == 0;
    return RV_OK;
  }
  if (strcmp(key, "swarm") == 0) {
    if (!parse_bool(value, &s->swarm))
      return fail(why, whylen, "swarm: '%s' is not on or off", value);
    return RV_OK;
  }
  if (!s->kind_set)
    return fail(why, whylen, "'%s' before 'kind': the kind must come first", key);
  const spec_key *k = find_key(s->kind, key);
  if (!k)
    return rv_sim_spec_set(s, key, value, why, whylen); /* the error names the known keys */
  size_t idx = (size_t)(k - keys);
  if (s->seen[idx / 64] & (UINT64_C(1) << (idx % 64)))
    return fail(why, whylen, "%s given twice", key);
  s->seen[idx / 64] |= UINT64_C(1) << (idx % 64);
  if (!*value)
    return fail(why, whylen, "%s needs a value", key);
  return set_key(s, k, value, why, whylen);
}

int rv_sim_spec_parse(rv_sim_spec *s, const char *text, const char *origin, char *why, size_t whylen) {
  memset(s, 0, sizeof *s);
  int lineno = 0;
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    lineno++;
    char line[RV_SIM_SPEC_LINE_MAX];
    if (len >= sizeof line) {
      snprintf(why, whylen, "%s:%d: line longer than %d bytes", origin, lineno, RV_SIM_SPEC_LINE_MAX - 1);
      return RV_EINVAL;
    }
    memcpy(line, p, len);
    line[len] = 0;
    char err[1200];
    if (parse_line(s, line, err, sizeof err) != RV_OK) {
      snprintf(why, whylen, "%s:%d: %s", origin, lineno, err);
      return RV_EINVAL;
    }
    p += len + (nl ? 1 : 0);
  }
  if (!s->kind_set) {
    snprintf(why, whylen, "%s: no 'kind' line (locks, queue, service, durability)", origin);
    return RV_EINVAL;
  }
  return RV_OK;
}

int rv_sim_spec_load(rv_sim_spec *s, const char *name_or_path, char *why, size_t whylen) {
  size_t n = strlen(name_or_path);
  bool path = strchr(name_or_path, '/') || (n > 4 && strcmp(name_or_path + n - 4, ".sim") == 0);
  if (!path) {
    for (const rv_sim_builtin *b = rv_sim_builtins; b->name; b++)
      if (strcmp(b->name, name_or_path) == 0) {
        int rc = rv_sim_spec_parse(s, b->text, b->name, why, whylen);
        if (rc == RV_OK && !s->name[0])
          snprintf(s->name, sizeof s->name, "%s", b->name);
        return rc;
      }
    char known[1024] = "";
    size_t k = 0;
    for (const rv_sim_builtin *b = rv_sim_builtins; b->name && k < sizeof known; b++)
      k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", k ? ", " : "", b->name);
    snprintf(why, whylen, "no scenario named '%s' (built in: %s; or give a path to a .sim file)",
             name_or_path, known);
    return RV_ENOTFOUND;
  }
  FILE *f = fopen(name_or_path, "r");
  if (!f) {
    snprintf(why, whylen, "%s: %s", name_or_path, strerror(errno));
    return RV_ENOTFOUND;
  }
  char *text = malloc(RV_SIM_SPEC_FILE_MAX + 1);
  size_t got = text ? fread(text, 1, RV_SIM_SPEC_FILE_MAX + 1, f) : 0;
  bool err = ferror(f);
  fclose(f);
  if (!text || err || got > RV_SIM_SPEC_FILE_MAX) {
    snprintf(why, whylen, "%s: %s", name_or_path,
             !text ? "out of memory" : err ? "read error" : "larger than 64 KiB (RV_SIM_SPEC_FILE_MAX)");
    free(text);
    return RV_EINVAL;
  }
  text[got] = 0;
  int rc = rv_sim_spec_parse(s, text, name_or_path, why, whylen);
  free(text);
  if (rc == RV_OK && !s->name[0]) {
    const char *base = strrchr(name_or_path, '/');
    base = base ? base + 1 : name_or_path;
    snprintf(s->name, sizeof s->name, "%.*s", (int)strcspn(base, "."), base);
  }
  return rc;
}

/* ---- swarm: the seed picks the fault mix ----------------------------------------------------- */

static void swarm_pick(rv_sim_spec *s, uint64_t seed, char *mix, size_t cap) {
  rv_rng rng;
  rv_rng_seed(&rng, seed ^ UINT64_C(0x5377617276616c21)); /* not the world's stream */
  size_t n = 0;
  mix[0] = 0;
  for (size_t i = 0; i < NKEYS; i++) {
    const spec_key *k = &keys[i];
    if (k->kind != s->kind || !k->fault)
      continue;
    bool keep = rv_rng_below(&rng, 2) == 1;
    if (k->type == K_PROB) {
      double *d = (double *)((char *)s + k->off);
      *d = keep ? *d * (0.25 + 0.75 * (double)rv_rng_below(&rng, 1001) / 1000) : 0;
      n += (size_t)snprintf(mix + n, n < cap ? cap - n : 0, "%s%s %.3g", n ? ", " : "", k->name, *d);
      continue;
    }
    bool *b = (bool *)((char *)s + k->off);
    if (!keep)
      *b = k->type == K_OFF; /* off */
    bool on = k->type == K_OFF ? !*b : *b;
    n += (size_t)snprintf(mix + n, n < cap ? cap - n : 0, "%s%s %s", n ? ", " : "", k->name, on ? "on" : "off");
  }
}

/* ---- one runner over every kind --------------------------------------------------------------- */

#define COPY_VERDICT(out, r)                                                                       \
  do {                                                                                             \
    (out)->ok = (r).ok;                                                                            \
    snprintf((out)->violation, sizeof (out)->violation, "%s", (r).violation);                      \
    (out)->violation_at = (r).violation_at;                                                        \
    (out)->hash = (r).hash;                                                                        \
    (out)->events = (r).events;                                                                    \
    (out)->virtual_ns = (r).virtual_ns;                                                            \
    (out)->wall_ns = (r).wall_ns;                                                                  \
    snprintf((out)->trace, sizeof (out)->trace, "%s", (r).trace);                                  \
    if (!(r).ok && (r).diagnosis[0])                                                               \
      (out)->diagnosis = strdup((r).diagnosis);                                                    \
  } while (0)

static int run_locks(const rv_sim_spec *s, uint64_t seed, rv_sim_outcome *out) {
  rv_sim_locks_opts o = s->locks;
  o.seed = seed;
  rv_sim_locks_result r;
  int rc = rv_sim_locks_run(&o, &r);
  COPY_VERDICT(out, r);
  snprintf(out->figures, sizeof out->figures,
           "acquisitions %" PRIu64 ", acquire timeouts/failures %" PRIu64 ", session losses %" PRIu64
           ", partitions %" PRIu64 ", writes ok %" PRIu64 ", stale writes rejected %" PRIu64,
           r.acquisitions, r.acquire_failures, r.session_losses, r.partitions, r.writes_ok,
           r.writes_rejected);
  snprintf(out->properties, sizeof out->properties,
           "fencing tokens increase: ok; no overlapping holders at the resource: ok; liveness: ok");
  return rc;
}

static int run_queue(const rv_sim_spec *s, uint64_t seed, rv_sim_outcome *out) {
  rv_sim_queue_opts o = s->queue;
  o.seed = seed;
  rv_sim_queue_result r;
  int rc = rv_sim_queue_run(&o, &r);
  COPY_VERDICT(out, r);
  snprintf(out->figures, sizeof out->figures,
           "published %" PRIu64 " (retries %" PRIu64 ", server messages %" PRIu64 "), deliveries %" PRIu64
           ", FINs accepted %" PRIu64 ", handler FINs %" PRIu64 ", timeouts %" PRIu64 ", REQs %" PRIu64
           ", late answers refused %" PRIu64 ", answers dropped %" PRIu64 ", reconnects %" PRIu64
           ", partitions %" PRIu64 ", most handler threads %d (max_in_flight %d)",
           r.published, r.publish_retries, r.server_messages, r.deliveries, r.fins_accepted,
           r.handler_fins, r.timeouts, r.requeues, r.late_answers, r.answers_dropped, r.reconnects,
           r.partitions, r.max_handlers, r.max_in_flight);
  snprintf(out->properties, sizeof out->properties,
           "core invariants: ok; no message finished twice: ok; handler threads bounded: ok; every "
           "acknowledged message finished: ok");
  return rc;
}

static int run_service(const rv_sim_spec *s, uint64_t seed, rv_sim_outcome *out) {
  rv_sim_service_opts o = s->service;
  o.seed = seed;
  rv_sim_service_result *r = malloc(sizeof *r); /* it carries the diagnosis: big */
  if (!r)
    return RV_ENOMEM;
  int rc = rv_sim_service_run(&o, r);
  COPY_VERDICT(out, *r);
  char bugs[128] = "";
  size_t n = 0;
  for (int b = 0; b < RV_SVC_BUG_COUNT; b++)
    if (o.bugs[b])
      n += (size_t)snprintf(bugs + n, sizeof bugs - n, "%s%s", n ? " " : "", rv_svc_bug_name(b));
  char cycle[48] = "never";
  if (r->first_cycle_at >= 0)
    snprintf(cycle, sizeof cycle, "at %.3f s", (double)r->first_cycle_at / RV_NS_PER_S);
  snprintf(out->figures, sizeof out->figures,
           "bugs %s; published %" PRIu64 ", finished %" PRIu64 ", message timeouts %" PRIu64
           ", platform writes %" PRIu64 ", client rebuilds %" PRIu64 ", recursive reads reported %" PRIu64
           ", partitions %" PRIu64 ", kills %" PRIu64 " (restarts %" PRIu64 "), most handler threads %d, "
           "first wait-for cycle %s, replicas deadlocked at the end %d",
           n ? bugs : "none (every fix)", r->published, r->finished, r->timeouts, r->platform_writes,
           r->rebuilds, r->recursive_reads, r->partitions, r->crashes, r->restarts, r->max_handlers, cycle,
           r->deadlocked_replicas);
  n = 0;
  for (size_t i = 0; service_checks[i].word; i++)
    if (*(const bool *)((const char *)s + service_checks[i].off))
      n += (size_t)snprintf(out->properties + n, sizeof out->properties - n, "%s%s: ok", n ? "; " : "",
                            service_checks[i].word);
  free(r);
  return rc;
}

static int run_durability(const rv_sim_spec *s, uint64_t seed, rv_sim_outcome *out) {
  rv_sim_durability_opts o = s->durability;
  o.seed = seed;
  rv_sim_durability_result r;
  int rc = rv_sim_durability_run(&o, &r);
  COPY_VERDICT(out, r);
  snprintf(out->figures, sizeof out->figures,
           "acknowledged %" PRIu64 " (retries %" PRIu64 "), deliveries %" PRIu64 ", handler FINs %" PRIu64
           ", redelivered after FIN (within the sync window) %" PRIu64 ", queue kills %" PRIu64
           " (%" PRIu64 " between a write and its sync), restarts %" PRIu64 ", connection resets %" PRIu64
           ", messages on the channel at the end %" PRIu64,
           r.acknowledged, r.publish_retries, r.deliveries, r.handler_fins, r.redelivered_after_fin,
           r.crashes, r.armed_crashes, r.restarts, r.resets, r.server_messages);
  snprintf(out->properties, sizeof out->properties,
           "core invariants: ok; no acknowledged message lost: ok; no FIN'd message redelivered outside "
           "the sync window: ok; every acknowledged message delivered and finished: ok");
  return rc;
}

int rv_sim_spec_run(const rv_sim_spec *s, uint64_t seed, rv_sim_outcome *out) {
  memset(out, 0, sizeof *out);
  rv_sim_spec run = *s;
  if (run.swarm)
    swarm_pick(&run, seed, out->swarm, sizeof out->swarm);
  switch (run.kind) {
  case RV_SIM_KIND_LOCKS:
    return run_locks(&run, seed, out);
  case RV_SIM_KIND_QUEUE:
    return run_queue(&run, seed, out);
  case RV_SIM_KIND_SERVICE:
    return run_service(&run, seed, out);
  case RV_SIM_KIND_DURABILITY:
    return run_durability(&run, seed, out);
  default:
    snprintf(out->violation, sizeof out->violation, "unknown kind %d", (int)run.kind);
    return RV_EINVAL;
  }
}

void rv_sim_outcome_clear(rv_sim_outcome *out) {
  free(out->diagnosis);
  out->diagnosis = NULL;
}
