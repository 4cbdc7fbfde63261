/*
 * ravel grab: collect the evidence of a ravel system into a directory
 * (docs/grab.md gives the layout), pack it, unpack it safely.
 *
 * The collection runs on a pool of rt threads, one job per process folder
 * plus one for coord's RESP data.  Every network request and every outside
 * tool has a deadline no later than the collection's, so the whole
 * collection ends within its bound whatever the processes do.
 */
#define _GNU_SOURCE
#include "diag/grab.h"

#include "diag/collect.h"
#include "rt/rt.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GRAB_LOG_TAIL_BYTES (256 * 1024)
#define GRAB_REQUEST_MAX_MS 3000

/* ---- small helpers ---------------------------------------------------------------------------- */

void rv_grab_sanitize(const char *s, char *out, size_t cap) {
  size_t k = 0;
  for (; s && *s && k + 1 < cap; s++) {
    char c = *s;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || (c == '.' && k > 0);
    out[k++] = ok ? c : '_';
  }
  if (k == 0 && cap > 1)
    out[k++] = '_';
  if (cap)
    out[k] = 0;
}

static void setwhy(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void setwhy(char *why, size_t whylen, const char *fmt, ...) {
  if (!why || !whylen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
}

static int write_all_fd(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return RV_EIO;
    }
    c += w;
    n -= (size_t)w;
  }
  return RV_OK;
}

static int write_file(const char *path, const void *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return RV_EIO;
  int rc = write_all_fd(fd, data, len);
  if (close(fd) != 0)
    rc = RV_EIO;
  return rc;
}

static int rmtree_at(int dfd, const char *name) {
  int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return unlinkat(dfd, name, 0) == 0 || errno == ENOENT ? RV_OK : RV_EIO;
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return RV_EIO;
  }
  int rc = RV_OK;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
      continue;
    if (rmtree_at(dirfd(d), e->d_name) != RV_OK)
      rc = RV_EIO;
  }
  closedir(d);
  if (unlinkat(dfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
    rc = RV_EIO;
  return rc;
}

int rv_grab_rmtree(const char *dir) { return rmtree_at(AT_FDCWD, dir); }

static bool host_is_loopback(const char *h) {
  return !strncmp(h, "127.", 4) || !strcmp(h, "localhost") || !strcmp(h, "::1");
}

/* ---- the collection's state ---------------------------------------------------------------------- */

typedef enum { JOB_PROCESS, JOB_COORD_DATA } job_kind;

typedef struct proc {
  char dir[160];
  const char *kind;       /* "coord", "queue", "service", "target" */
  char service[160];      /* "" unknown */
  char replica[160];
  int pid;                /* 0 unknown */
  char admin[300];        /* "" none */
  long long session;      /* 0 none */
  char host[160];         /* the session's host, "" unknown */
  bool answered, stacks_outside;
  bool want_stats;        /* the queue: stats.json */
  json_t *files, *failed; /* guarded by grab.mu */
} proc;

typedef struct job {
  job_kind kind;
  proc *p;
} job;

typedef struct grab {
  const rv_grab_opts *o;
  const char *root;
  int64_t start_ns, deadline_ns, per_req_ns;
  char hostname[256];
  proc procs[RV_GRAB_PROCESSES_MAX + 3 + RV_GRAB_TARGETS_MAX];
  size_t nprocs;
  job jobs[RV_GRAB_PROCESSES_MAX + 4 + RV_GRAB_TARGETS_MAX];
  size_t njobs, next_job;
  redisReply *sessions;   /* SESSION.LIST from discovery, or NULL */
  char sessions_why[200]; /* why not */
  proc *coord;
  rv_rawmu mu;
  json_t *failed;         /* top-level failures */
  size_t nfiles;
} grab;

static void add_failure(grab *g, json_t *list, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add_failure(grab *g, json_t *list, const char *what, const char *fmt, ...) {
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  rv_rawmu_lock(&g->mu);
  json_array_append_new(list, json_pack("{s:s, s:s}", "what", what, "why", why));
  rv_rawmu_unlock(&g->mu);
}

static void add_file(grab *g, proc *p, const char *name) {
  rv_rawmu_lock(&g->mu);
  json_array_append_new(p->files, json_string(name));
  g->nfiles++;
  rv_rawmu_unlock(&g->mu);
}

static void proc_path(grab *g, proc *p, const char *name, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s/%s", g->root, p->dir, name);
}

/* Write data as p's file name; records the file or the failure. */
static bool save(grab *g, proc *p, const char *name, const void *data, size_t len) {
  char path[PATH_MAX];
  proc_path(g, p, name, path, sizeof path);
  if (write_file(path, data, len) != RV_OK) {
    add_failure(g, p->failed, name, "cannot write %s: %s", path, strerror(errno));
    return false;
  }
  add_file(g, p, name);
  return true;
}

static bool save_json(grab *g, proc *p, const char *name, json_t *j) {
  char *s = j ? json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
  if (!s) {
    add_failure(g, p->failed, name, "cannot render JSON (out of memory)");
    return false;
  }
  size_t n = strlen(s);
  bool ok = save(g, p, name, s, n);
  free(s);
  return ok;
}

static int64_t req_deadline(grab *g) {
  int64_t d = rv_now_ns() + g->per_req_ns;
  return d < g->deadline_ns ? d : g->deadline_ns;
}

static void fetch_why(int rc, int64_t ms, char *why, size_t cap) {
  if (rc == RV_EDEADLINE || rc == RV_ETIMEDOUT)
    snprintf(why, cap, "no answer within %lld ms", (long long)ms);
  else
    snprintf(why, cap, "%s", rv_strerror(rc));
}

/* ---- /proc ------------------------------------------------------------------------------------- */

static bool pid_alive(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d", pid);
  struct stat st;
  return pid > 0 && stat(path, &st) == 0;
}

static char *slurp(const char *path, size_t max, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  char *buf = malloc(max + 1);
  size_t n = 0;
  while (buf && n < max) {
    ssize_t r = read(fd, buf + n, max - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  if (buf)
    buf[n] = 0;
  if (len)
    *len = n;
  return buf;
}

static long long status_field(const char *status, const char *key) {
  size_t kl = strlen(key);
  for (const char *p = status; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (!strncmp(p, key, kl) && p[kl] == ':')
      return strtoll(p + kl + 1, NULL, 10);
  return -1;
}

static void take_proc(grab *g, proc *p) {
  char path[128];
  snprintf(path, sizeof path, "/proc/%d/status", p->pid);
  char *status = slurp(path, 65536, NULL);
  if (!status) {
    add_failure(g, p->failed, "proc.json", "cannot read %s: %s", path, strerror(errno));
    return;
  }
  char state[64] = "";
  const char *s = strstr(status, "\nState:");
  if (s) {
    s += 7;
    s += strspn(s, " \t");
    snprintf(state, sizeof state, "%.*s", (int)strcspn(s, "\n"), s);
  }
  json_t *j = json_object();
  json_object_set_new(j, "pid", json_integer(p->pid));
  json_object_set_new(j, "state", json_string(state));
  json_object_set_new(j, "threads", json_integer(status_field(status, "Threads")));
  free(status);
  long long fds = 0;
  snprintf(path, sizeof path, "/proc/%d/fd", p->pid);
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.')
        fds++;
    closedir(d);
  } else {
    fds = -1;
  }
  json_object_set_new(j, "fds", json_integer(fds));
  snprintf(path, sizeof path, "/proc/%d/status", p->pid);
  status = slurp(path, 65536, NULL);
  json_object_set_new(j, "vm_rss_kb", json_integer(status ? status_field(status, "VmRSS") : -1));
  json_object_set_new(j, "vm_size_kb", json_integer(status ? status_field(status, "VmSize") : -1));
  free(status);
  snprintf(path, sizeof path, "/proc/%d/cmdline", p->pid);
  size_t n = 0;
  char *cmd = slurp(path, 65536, &n);
  json_t *argv = json_array();
  for (size_t i = 0; cmd && i < n;) {
    size_t l = strnlen(cmd + i, n - i);
    json_array_append_new(argv, rv_diag_json_bytes(cmd + i, l));
    i += l + 1;
  }
  free(cmd);
  json_object_set_new(j, "cmdline", argv);
  save_json(g, p, "proc.json", j);
  json_decref(j);
}

/* The tail of the process's log: its stderr (else stdout), when that is a regular file. */
static void take_log(grab *g, proc *p) {
  for (int fdno = 2; fdno >= 1; fdno--) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", p->pid, fdno);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      continue;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
      close(fd);
      continue;
    }
    off_t from = st.st_size > GRAB_LOG_TAIL_BYTES ? st.st_size - GRAB_LOG_TAIL_BYTES : 0;
    size_t want = (size_t)(st.st_size - from), n = 0;
    char *buf = malloc(want + 1);
    while (buf && n < want) {
      ssize_t r = pread(fd, buf + n, want - n, from + (off_t)n);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        break;
      n += (size_t)r;
    }
    close(fd);
    if (buf) {
      size_t skip = 0;
      if (from > 0) { /* start at a whole line */
        char *nl = memchr(buf, '\n', n);
        skip = nl ? (size_t)(nl + 1 - buf) : 0;
      }
      save(g, p, "log.txt", buf + skip, n - skip);
      free(buf);
    }
    return;
  }
}

/* The pid listening on a loopback TCP port, from /proc/net/tcp{,6} and /proc/PID/fd; 0 if unknown. */
static int pid_of_port(uint16_t port) {
  unsigned long inode = 0;
  const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
  for (size_t t = 0; t < 2 && !inode; t++) {
    char *tab = slurp(tables[t], 8u << 20, NULL);
    for (char *line = tab ? strchr(tab, '\n') : NULL; line && *line && !inode;
         line = strchr(line + 1, '\n')) {
      char local[128];
      unsigned st;
      unsigned long ino;
      if (sscanf(line + 1, "%*d: %127s %*s %x %*s %*s %*s %*s %*s %lu", local, &st, &ino) != 3)
        continue;
      char *colon = strrchr(local, ':');
      if (st == 0x0a && colon && strtoul(colon + 1, NULL, 16) == port)
        inode = ino;
    }
    free(tab);
  }
  if (!inode)
    return 0;
  char want[64];
  snprintf(want, sizeof want, "socket:[%lu]", inode);
  int found = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && !found && (e = readdir(d))) {
    int pid = atoi(e->d_name);
    if (pid <= 0)
      continue;
    char fdpath[64];
    snprintf(fdpath, sizeof fdpath, "/proc/%d/fd", pid);
    DIR *fdd = opendir(fdpath);
    struct dirent *f;
    while (fdd && !found && (f = readdir(fdd))) {
      char lp[128], target[128];
      snprintf(lp, sizeof lp, "%s/%s", fdpath, f->d_name);
      ssize_t n = readlink(lp, target, sizeof target - 1);
      if (n > 0) {
        target[n] = 0;
        if (!strcmp(target, want))
          found = pid;
      }
    }
    if (fdd)
      closedir(fdd);
  }
  if (d)
    closedir(d);
  return found;
}

/* Append a line to a file (headers between the tools' outputs). */
static void append_line(const char *path, const char *line) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd >= 0) {
    (void)write_all_fd(fd, line, strlen(line));
    close(fd);
  }
}

/*
 * Thread stacks from outside, into stacks.txt, before the deadline: eu-stack
 * first (tens of milliseconds: function names per thread), then, while at
 * least GRAB_GDB_MIN_MS remain, gdb for the richer view (thread names,
 * arguments, source lines), which can take seconds on a large binary.  gdb's
 * partial output is kept if it is killed at the deadline.
 */
#define GRAB_GDB_MIN_MS 1000
static void take_stacks(grab *g, proc *p) {
  char path[PATH_MAX], pidstr[32], line[256];
  proc_path(g, p, "stacks.txt", path, sizeof path);
  snprintf(pidstr, sizeof pidstr, "%d", p->pid);
  /* No debuginfod: a grab must not wait on the network for symbols. */
  const char *gdb[] = {"gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off", "-p", pidstr,
                       "-ex", "set pagination off", "-ex", "thread apply all bt", NULL};
  const char *eu[] = {"eu-stack", "-p", pidstr, NULL};
  const char *const *tools[] = {eu, gdb};
  char whys[2][160] = {"", ""};
  bool any = false;
  unlink(path);
  for (int t = 0; t < 2; t++) {
    int64_t left = g->deadline_ns - rv_now_ns();
    if (left < (t == 0 ? 100 : GRAB_GDB_MIN_MS) * RV_NS_PER_MS) {
      snprintf(whys[t], sizeof whys[t], "%s: not run, the bound was (nearly) reached", tools[t][0]);
      continue;
    }
    snprintf(line, sizeof line, "%s==== %s -p %d (ravel grab: the admin endpoint did not answer)\n",
             any ? "\n" : "", tools[t][0], p->pid);
    append_line(path, line);
    size_t before = 0, after = 0;
    free(slurp(path, 64u << 20, &before));
    int st = -1;
    int rc = rv_diag_run_bounded(tools[t], path, g->deadline_ns, &st);
    char *out = slurp(path, 64u << 20, &after);
    /* gdb prints "Thread N (...)" headers and "#0 ..." frames; eu-stack "TID n:" and "#0". */
    bool frames = out && after > before && strstr(out + before, "#0") != NULL;
    free(out);
    if (rc == RV_ENOTFOUND)
      snprintf(whys[t], sizeof whys[t], "%s: not installed", tools[t][0]);
    else if (rc == RV_ETIMEDOUT)
      snprintf(whys[t], sizeof whys[t], "%s: killed at the bound%s", tools[t][0], frames ? " (partial output kept)" : "");
    else if (!frames)
      snprintf(whys[t], sizeof whys[t], "%s: exit %d, no frames", tools[t][0], st);
    if (rc == RV_ETIMEDOUT)
      append_line(path, "\n==== (killed at the bound)\n");
    any |= frames;
  }
  if (any) {
    p->stacks_outside = true;
    add_file(g, p, "stacks.txt");
    return;
  }
  unlink(path);
  add_failure(g, p->failed, "stacks.txt", "%s; %s", whys[0], whys[1]);
}

/* ---- one process ------------------------------------------------------------------------------- */

typedef struct fetch {
  const char *file, *path;
  bool optional; /* 404 is not a failure */
} fetch;

static void process_job(grab *g, proc *p) {
  static const fetch admin_files[] = {
      {"stats.json", "/stats?format=json", false}, /* queue only */
      {"threads.txt", "/debug/threads", false},    {"threads.json", "/debug/threads?format=json", false},
      {"locks.txt", "/debug/locks", false},        {"metrics.txt", "/metrics", false},
      {"history.json", "/debug/history", true},
  };
  char host[160] = "";
  uint16_t port = 0;
  bool has_admin = p->admin[0] && rv_diag_parse_url(p->admin, host, sizeof host, &port);
  bool local = p->pid > 0 && (!p->host[0] || !strcmp(p->host, g->hostname) || host_is_loopback(p->host));
  if (has_admin && host_is_loopback(host))
    local = true;
  if (p->admin[0] && !has_admin)
    add_failure(g, p->failed, "admin", "cannot parse the admin URL %s", p->admin);
  else if (!p->admin[0] && strcmp(p->kind, "target") != 0)
    add_failure(g, p->failed, "admin", "no admin URL known (its session names none)");
  if (has_admin) {
    char silent[200] = "";
    for (size_t i = 0; i < sizeof admin_files / sizeof admin_files[0]; i++) {
      const fetch *f = &admin_files[i];
      if (i == 0 && !p->want_stats)
        continue;
      if (silent[0]) {
        add_failure(g, p->failed, f->file, "not asked: %s", silent);
        continue;
      }
      if (rv_now_ns() >= g->deadline_ns) {
        add_failure(g, p->failed, f->file, "not asked: the bound was reached");
        continue;
      }
      int64_t t0 = rv_now_ns(), dl = req_deadline(g);
      int st = 0;
      char *body = NULL;
      size_t len = 0;
      int rc = rv_diag_http_get(host, port, f->path, dl, &st, &body, &len);
      if (rc != RV_OK) {
        char why[160];
        fetch_why(rc, (rv_now_ns() - t0) / RV_NS_PER_MS, why, sizeof why);
        add_failure(g, p->failed, f->file, "GET %s%s: %s", p->admin, f->path + 1, why);
        snprintf(silent, sizeof silent, "the admin endpoint did not answer %s", f->file);
        continue;
      }
      if (st == 200) {
        save(g, p, f->file, body, len);
        if (!strcmp(f->file, "threads.txt") || !strcmp(f->file, "threads.json"))
          p->answered = true;
        if (!strcmp(f->file, "threads.json") && p->pid <= 0) {
          json_t *j = json_loadb(body, len, 0, NULL);
          json_int_t pid = json_integer_value(json_object_get(j, "pid"));
          if (pid > 0 && pid < INT32_MAX)
            p->pid = (int)pid;
          json_decref(j);
          local = local || (p->pid > 0 && host_is_loopback(host));
        }
      } else if (!(f->optional && st == 404)) {
        add_failure(g, p->failed, f->file, "GET %s%s: HTTP %d", p->admin, f->path + 1, st);
      }
      free(body);
    }
  }
  if (p->pid <= 0 && has_admin && host_is_loopback(host)) {
    p->pid = pid_of_port(port);
    local = p->pid > 0;
  }
  if (!local || p->pid <= 0) {
    if (!p->answered)
      add_failure(g, p->failed, "proc.json", "no local pid known: no /proc data, no outside stacks");
    return;
  }
  if (!pid_alive(p->pid)) {
    add_failure(g, p->failed, "proc.json", "pid %d is not running here", p->pid);
    return;
  }
  take_proc(g, p);
  take_log(g, p);
  if (!p->answered) {
    if (p->pid == rv_getpid())
      add_failure(g, p->failed, "stacks.txt", "not taken: it is this process");
    else if (!g->o->outside_stacks)
      add_failure(g, p->failed, "stacks.txt", "not taken: --no-outside-stacks");
    else
      take_stacks(g, p);
  }
}

/* ---- coord's RESP data ---------------------------------------------------------------------------- */

static redisReply *coord_call(grab *g, rv_diag_resp *c, const char *file, int argc, const char **argv) {
  proc *p = g->coord;
  if (rv_now_ns() >= g->deadline_ns) {
    add_failure(g, p->failed, file, "not asked: the bound was reached");
    return NULL;
  }
  int err = 0;
  int64_t t0 = rv_now_ns();
  redisReply *r = rv_diag_resp_call(c, argc, argv, req_deadline(g), &err);
  if (!r) {
    char why[160];
    fetch_why(err, (rv_now_ns() - t0) / RV_NS_PER_MS, why, sizeof why);
    add_failure(g, p->failed, file, "%s: %s", argv[0], why);
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    add_failure(g, p->failed, file, "%s: %.*s", argv[0], (int)r->len, r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

static void coord_save(grab *g, const char *file, redisReply *r, rv_resp_shape shape) {
  json_t *j = rv_resp_to_json(r, shape);
  save_json(g, g->coord, file, j);
  json_decref(j);
}

static const redisReply *map_get(const redisReply *m, const char *key) {
  for (size_t i = 0; m && m->type == REDIS_REPLY_ARRAY && i + 1 < m->elements; i += 2) {
    const redisReply *k = m->element[i];
    if ((k->type == REDIS_REPLY_STRING || k->type == REDIS_REPLY_STATUS) && strlen(key) == k->len &&
        !memcmp(k->str, key, k->len))
      return m->element[i + 1];
  }
  return NULL;
}

static void map_str(const redisReply *m, const char *key, char *out, size_t cap) {
  const redisReply *v = map_get(m, key);
  if (v && (v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_STATUS))
    snprintf(out, cap, "%.*s", (int)v->len, v->str);
  else if (v && v->type == REDIS_REPLY_INTEGER)
    snprintf(out, cap, "%lld", v->integer);
  else if (cap)
    out[0] = 0;
}

static long long map_int(const redisReply *m, const char *key) {
  const redisReply *v = map_get(m, key);
  if (v && v->type == REDIS_REPLY_INTEGER)
    return v->integer;
  if (v && v->type == REDIS_REPLY_STRING)
    return strtoll(v->str, NULL, 10);
  return 0;
}

static void coord_data_job(grab *g) {
  proc *p = g->coord;
  static const char *const files[] = {"sessions.json", "lock-table.json", "config-*.json", "audit.json"};
  if (!g->sessions) {
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
      add_failure(g, p->failed, files[i], "not asked: %s", g->sessions_why);
    return;
  }
  coord_save(g, "sessions.json", g->sessions, RV_RESP_LIST_OF_MAPS);
  rv_diag_resp *c = NULL;
  int rc = rv_diag_resp_open(&c, g->o->coord_host, g->o->coord_port, req_deadline(g));
  if (rc != RV_OK) {
    for (size_t i = 1; i < sizeof files / sizeof files[0]; i++)
      add_failure(g, p->failed, files[i], "cannot connect to coord: %s", rv_strerror(rc));
    return;
  }
  for (size_t i = 0; i < g->sessions->elements; i++) {
    char id[32], file[64];
    map_str(g->sessions->element[i], "session", id, sizeof id);
    if (!id[0])
      continue;
    snprintf(file, sizeof file, "session-%s.json", id);
    redisReply *r = coord_call(g, c, file, 2, (const char *[]){"SESSION.INFO", id});
    if (r) {
      coord_save(g, file, r, RV_RESP_MAP);
      freeReplyObject(r);
    }
  }
  redisReply *r = coord_call(g, c, "lock-table.json", 1, (const char *[]){"LOCK.LIST"});
  if (r) {
    coord_save(g, "lock-table.json", r, RV_RESP_LIST_OF_MAPS);
    freeReplyObject(r);
  }
  r = coord_call(g, c, "config-*.json", 1, (const char *[]){"CFG.TARGETS"});
  for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    char svc[160], prev[160];
    map_str(r->element[i], "service", svc, sizeof svc);
    bool seen = !svc[0];
    for (size_t k = 0; k < i && !seen; k++) {
      map_str(r->element[k], "service", prev, sizeof prev);
      seen = !strcmp(prev, svc);
    }
    if (seen)
      continue;
    char safe[80], file[128];
    rv_grab_sanitize(svc, safe, sizeof safe);
    snprintf(file, sizeof file, "config-%s.json", safe);
    redisReply *d = coord_call(g, c, file, 2, (const char *[]){"CFG.DUMP", svc});
    if (d) {
      coord_save(g, file, d, RV_RESP_LIST_OF_MAPS);
      freeReplyObject(d);
    }
  }
  if (r)
    freeReplyObject(r);
  r = coord_call(g, c, "audit.json", 4, (const char *[]){"CFG.AUDIT", "LIMIT", "200", "NEWEST"});
  if (r) {
    coord_save(g, "audit.json", r, RV_RESP_LIST_OF_MAPS);
    freeReplyObject(r);
  }
  rv_diag_resp_close(c);
}

/* ---- the pool ------------------------------------------------------------------------------------- */

static void worker(void *arg) {
  grab *g = arg;
  for (;;) {
    rv_rawmu_lock(&g->mu);
    job *j = g->next_job < g->njobs ? &g->jobs[g->next_job++] : NULL;
    rv_rawmu_unlock(&g->mu);
    if (!j)
      return;
    if (j->kind == JOB_COORD_DATA)
      coord_data_job(g);
    else
      process_job(g, j->p);
  }
}

/* ---- building the list of processes ---------------------------------------------------------------- */

static bool dir_taken(grab *g, const char *dir) {
  for (size_t i = 0; i < g->nprocs; i++)
    if (!strcmp(g->procs[i].dir, dir))
      return true;
  return false;
}

static proc *add_proc(grab *g, const char *kind, const char *want_dir) {
  if (g->nprocs == sizeof g->procs / sizeof g->procs[0])
    return NULL;
  char dir[160];
  snprintf(dir, sizeof dir, "%s", want_dir);
  for (int k = 2; dir_taken(g, dir); k++)
    snprintf(dir, sizeof dir, "%.140s-%d", want_dir, k);
  proc *p = &g->procs[g->nprocs++];
  memset(p, 0, sizeof *p);
  snprintf(p->dir, sizeof p->dir, "%s", dir);
  p->kind = kind;
  p->files = json_array();
  p->failed = json_array();
  g->jobs[g->njobs++] = (job){JOB_PROCESS, p};
  return p;
}

static void discover(grab *g) {
  const rv_grab_opts *o = g->o;
  rv_diag_resp *c = NULL;
  int64_t t0 = rv_now_ns();
  int rc = rv_diag_resp_open(&c, o->coord_host, o->coord_port, req_deadline(g));
  int err = rc;
  if (rc == RV_OK) {
    g->sessions = rv_diag_resp_call(c, 1, (const char *[]){"SESSION.LIST"}, req_deadline(g), &err);
    rv_diag_resp_close(c);
  }
  char why[160];
  if (!g->sessions) {
    fetch_why(err, (rv_now_ns() - t0) / RV_NS_PER_MS, why, sizeof why);
    snprintf(g->sessions_why, sizeof g->sessions_why, "coord %s:%u did not answer SESSION.LIST: %s",
             o->coord_host, o->coord_port, why);
  } else if (g->sessions->type != REDIS_REPLY_ARRAY) {
    snprintf(g->sessions_why, sizeof g->sessions_why, "coord %s:%u answered SESSION.LIST with %s%.*s",
             o->coord_host, o->coord_port, g->sessions->type == REDIS_REPLY_ERROR ? "an error: " : "a non-list",
             g->sessions->type == REDIS_REPLY_ERROR ? (int)g->sessions->len : 0,
             g->sessions->type == REDIS_REPLY_ERROR ? g->sessions->str : "");
    freeReplyObject(g->sessions);
    g->sessions = NULL;
  }
  if (!g->sessions) {
    add_failure(g, g->failed, "discovery", "%s", g->sessions_why);
    return;
  }
  for (size_t i = 0; i < g->sessions->elements; i++) {
    const redisReply *m = g->sessions->element[i];
    char svc[160], rep[160], dir[160], a[80], b[80];
    map_str(m, "service", svc, sizeof svc);
    map_str(m, "replica", rep, sizeof rep);
    rv_grab_sanitize(svc[0] ? svc : "session", a, sizeof a);
    rv_grab_sanitize(rep, b, sizeof b);
    if (rep[0])
      snprintf(dir, sizeof dir, "%s-%s", a, b);
    else
      snprintf(dir, sizeof dir, "%s", a);
    if (!strcmp(dir, "coord") || !strcmp(dir, "queue") || !strncmp(dir, "target-", 7))
      snprintf(dir, sizeof dir, "service-%s", a);
    proc *p = g->nprocs < RV_GRAB_PROCESSES_MAX ? add_proc(g, "service", dir) : NULL;
    if (!p) {
      char sid[32];
      map_str(m, "session", sid, sizeof sid);
      add_failure(g, g->failed, "session", "session %s (%s/%s) not collected: more than %d processes", sid,
                  svc, rep, RV_GRAB_PROCESSES_MAX);
      continue;
    }
    snprintf(p->service, sizeof p->service, "%s", svc);
    snprintf(p->replica, sizeof p->replica, "%s", rep);
    map_str(m, "admin", p->admin, sizeof p->admin);
    map_str(m, "host", p->host, sizeof p->host);
    long long pid = map_int(m, "pid");
    p->pid = pid > 0 && pid < INT32_MAX ? (int)pid : 0;
    p->session = map_int(m, "session");
  }
}

static json_t *str_or_null(const char *s) { return s && s[0] ? json_string(s) : json_null(); }

static int write_manifest(grab *g, rv_grab_result *res, char *why, size_t whylen) {
  const rv_grab_opts *o = g->o;
  json_t *m = json_object();
  char buf[300];
  json_object_set_new(m, "format", json_string(RV_GRAB_FORMAT));
  json_object_set_new(m, "taken_at_ms", json_integer(rv_wall_ns() / RV_NS_PER_MS - (rv_now_ns() - g->start_ns) / RV_NS_PER_MS));
  json_object_set_new(m, "bound_ms", json_integer(o->bound_ms > 0 ? o->bound_ms : RV_GRAB_DEFAULT_BOUND_MS));
  json_object_set_new(m, "elapsed_ms", json_integer(res->elapsed_ms));
  if (o->coord_host) {
    snprintf(buf, sizeof buf, "%s:%u", o->coord_host, o->coord_port);
    json_object_set_new(m, "coord", json_string(buf));
  } else {
    json_object_set_new(m, "coord", json_null());
  }
  if (o->queue_host) {
    snprintf(buf, sizeof buf, "%s:%u", o->queue_host, o->queue_http_port);
    json_object_set_new(m, "queue", json_string(buf));
  } else {
    json_object_set_new(m, "queue", json_null());
  }
  json_t *procs = json_array();
  for (size_t i = 0; i < g->nprocs; i++) {
    proc *p = &g->procs[i];
    json_t *e = json_object();
    json_object_set_new(e, "dir", json_string(p->dir));
    json_object_set_new(e, "kind", json_string(p->kind));
    json_object_set_new(e, "service", str_or_null(p->service));
    json_object_set_new(e, "replica", str_or_null(p->replica));
    json_object_set_new(e, "pid", p->pid > 0 ? json_integer(p->pid) : json_null());
    json_object_set_new(e, "admin", str_or_null(p->admin));
    json_object_set_new(e, "session", p->session ? json_integer(p->session) : json_null());
    json_object_set_new(e, "answered", json_boolean(p->answered));
    json_object_set_new(e, "stacks_from_outside", json_boolean(p->stacks_outside));
    json_object_set(e, "files", p->files);
    json_object_set(e, "failed", p->failed);
    json_array_append_new(procs, e);
    res->answered += p->answered;
    res->failures += json_array_size(p->failed);
  }
  res->processes = g->nprocs;
  res->failures += json_array_size(g->failed);
  res->files = g->nfiles;
  json_object_set_new(m, "processes", procs);
  json_object_set(m, "failed", g->failed);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/manifest.json", g->root);
  char *s = json_dumps(m, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  json_decref(m);
  if (!s || write_file(path, s, strlen(s)) != RV_OK) {
    free(s);
    setwhy(why, whylen, "cannot write %s: %s", path, strerror(errno));
    return RV_EIO;
  }
  free(s);
  return RV_OK;
}

static int make_root(const char *dir, char *why, size_t whylen) {
  if (mkdir(dir, 0755) == 0)
    return RV_OK;
  if (errno != EEXIST) {
    setwhy(why, whylen, "cannot create %s: %s", dir, strerror(errno));
    return RV_EIO;
  }
  DIR *d = opendir(dir);
  if (!d) {
    setwhy(why, whylen, "%s exists and is not a readable directory", dir);
    return RV_EINVAL;
  }
  struct dirent *e;
  bool empty = true;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      empty = false;
  closedir(d);
  if (!empty) {
    setwhy(why, whylen, "%s exists and is not empty", dir);
    return RV_EINVAL;
  }
  return RV_OK;
}

int rv_grab_collect(const rv_grab_opts *o, const char *dir, rv_grab_result *res, char *why,
                    size_t whylen) {
  rv_grab_result local_res;
  if (!res)
    res = &local_res;
  memset(res, 0, sizeof *res);
  if (!o || !dir || o->ntargets > RV_GRAB_TARGETS_MAX) {
    setwhy(why, whylen, "invalid arguments");
    return RV_EINVAL;
  }
  int rc = make_root(dir, why, whylen);
  if (rc != RV_OK)
    return rc;
  grab *g = calloc(1, sizeof *g);
  if (!g) {
    setwhy(why, whylen, "out of memory");
    return RV_ENOMEM;
  }
  g->o = o;
  g->root = dir;
  g->start_ns = rv_now_ns();
  int64_t bound_ns = (o->bound_ms > 0 ? o->bound_ms : RV_GRAB_DEFAULT_BOUND_MS) * RV_NS_PER_MS;
  /* Keep a tenth of the bound (at most 1 s) to write the manifest after the last job. */
  int64_t reserve = bound_ns / 10 < RV_NS_PER_S ? bound_ns / 10 : RV_NS_PER_S;
  g->deadline_ns = g->start_ns + bound_ns - reserve;
  int64_t per = o->per_request_ms > 0 ? o->per_request_ms : (bound_ns / RV_NS_PER_MS) / 4;
  if (o->per_request_ms <= 0 && per > GRAB_REQUEST_MAX_MS)
    per = GRAB_REQUEST_MAX_MS;
  g->per_req_ns = per * RV_NS_PER_MS;
  rv_rawmu_init(&g->mu);
  g->failed = json_array();
  if (gethostname(g->hostname, sizeof g->hostname - 1) != 0)
    g->hostname[0] = 0;

  if (o->coord_host) {
    g->coord = add_proc(g, "coord", "coord");
    if (o->coord_admin_port)
      snprintf(g->coord->admin, sizeof g->coord->admin, "http://%s:%u/", o->coord_host, o->coord_admin_port);
    else
      g->jobs[--g->njobs] = (job){0}; /* no admin files: only the RESP data */
    g->jobs[g->njobs++] = (job){JOB_COORD_DATA, g->coord};
  }
  if (o->queue_host) {
    proc *q = add_proc(g, "queue", "queue");
    snprintf(q->admin, sizeof q->admin, "http://%s:%u/", o->queue_host, o->queue_http_port);
    q->want_stats = true;
  }
  for (size_t i = 0; i < o->ntargets; i++) {
    char dname[32];
    snprintf(dname, sizeof dname, "target-%zu", i + 1);
    proc *p = add_proc(g, "target", dname);
    const char *t = o->targets[i];
    if (!strncmp(t, "pid:", 4)) {
      long pid = strtol(t + 4, NULL, 10);
      p->pid = pid > 0 && pid < INT32_MAX ? (int)pid : 0;
      if (!p->pid)
        add_failure(g, p->failed, "target", "invalid target %s", t);
    } else {
      snprintf(p->admin, sizeof p->admin, "%s", t);
    }
  }
  if (o->coord_host)
    discover(g);
  for (size_t i = 0; i < g->nprocs; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, g->procs[i].dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
      add_failure(g, g->procs[i].failed, "dir", "cannot create %s: %s", path, strerror(errno));
  }
  size_t nworkers = g->njobs < RV_GRAB_WORKERS_MAX ? g->njobs : RV_GRAB_WORKERS_MAX;
  rv_thread *threads[RV_GRAB_WORKERS_MAX];
  size_t started = 0;
  for (size_t i = 0; i < nworkers; i++) {
    char name[32];
    snprintf(name, sizeof name, "grab-%zu", i + 1);
    if (rv_thread_start(&threads[started], name, "grab", worker, g) == RV_OK)
      started++;
  }
  if (started == 0)
    worker(g); /* no thread could start: do it all here, still bounded */
  for (size_t i = 0; i < started; i++)
    rv_thread_join(threads[i]);
  res->elapsed_ms = (rv_now_ns() - g->start_ns) / RV_NS_PER_MS;
  rc = write_manifest(g, res, why, whylen);
  for (size_t i = 0; i < g->nprocs; i++) {
    json_decref(g->procs[i].files);
    json_decref(g->procs[i].failed);
  }
  json_decref(g->failed);
  if (g->sessions)
    freeReplyObject(g->sessions);
  rv_rawmu_destroy(&g->mu);
  free(g);
  return rc;
}

/* ---- archive ------------------------------------------------------------------------------------- */

static int archive_tree(struct archive *a, const char *fs_path, const char *name, char *why, size_t whylen) {
  struct stat st;
  if (lstat(fs_path, &st) != 0) {
    setwhy(why, whylen, "cannot stat %s: %s", fs_path, strerror(errno));
    return RV_EIO;
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
    return RV_OK; /* the collector writes only files and directories */
  struct archive_entry *e = archive_entry_new();
  char ename[PATH_MAX];
  snprintf(ename, sizeof ename, "%s%s", name, S_ISDIR(st.st_mode) ? "/" : "");
  archive_entry_set_pathname(e, ename);
  archive_entry_set_filetype(e, S_ISDIR(st.st_mode) ? AE_IFDIR : AE_IFREG);
  archive_entry_set_perm(e, S_ISDIR(st.st_mode) ? 0755 : 0644);
  archive_entry_set_size(e, S_ISDIR(st.st_mode) ? 0 : st.st_size);
  archive_entry_set_mtime(e, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  int rc = RV_OK;
  if (archive_write_header(a, e) != ARCHIVE_OK) {
    setwhy(why, whylen, "archive %s: %s", ename, archive_error_string(a));
    rc = RV_EIO;
  }
  archive_entry_free(e);
  if (rc != RV_OK)
    return rc;
  if (S_ISREG(st.st_mode)) {
    int fd = open(fs_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      setwhy(why, whylen, "cannot open %s: %s", fs_path, strerror(errno));
      return RV_EIO;
    }
    char buf[65536];
    off_t left = st.st_size;
    while (left > 0) {
      ssize_t r = read(fd, buf, sizeof buf < (size_t)left ? sizeof buf : (size_t)left);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        break;
      if (archive_write_data(a, buf, (size_t)r) != r) {
        setwhy(why, whylen, "archive %s: %s", ename, archive_error_string(a));
        rc = RV_EIO;
        break;
      }
      left -= r;
    }
    close(fd);
    if (rc == RV_OK && left > 0) { /* the file shrank: pad as the header promised */
      memset(buf, 0, sizeof buf);
      while (left > 0) {
        size_t n = sizeof buf < (size_t)left ? sizeof buf : (size_t)left;
        archive_write_data(a, buf, n);
        left -= (off_t)n;
      }
    }
    return rc;
  }
  /* Sorted, so that the same collection gives the same archive order. */
  struct dirent **list = NULL;
  int n = scandir(fs_path, &list, NULL, alphasort);
  if (n < 0) {
    setwhy(why, whylen, "cannot read %s: %s", fs_path, strerror(errno));
    return RV_EIO;
  }
  for (int i = 0; i < n; i++) {
    const char *nm = list[i]->d_name;
    if (rc == RV_OK && strcmp(nm, ".") && strcmp(nm, "..")) {
      char child[PATH_MAX], cname[PATH_MAX];
      snprintf(child, sizeof child, "%s/%s", fs_path, nm);
      snprintf(cname, sizeof cname, "%s/%s", name, nm);
      rc = archive_tree(a, child, cname, why, whylen);
    }
    free(list[i]);
  }
  free(list);
  return rc;
}

int rv_grab_archive(const char *dir, const char *path, char *why, size_t whylen) {
  char base[PATH_MAX];
  snprintf(base, sizeof base, "%s", dir);
  size_t bl = strlen(base);
  while (bl > 1 && base[bl - 1] == '/')
    base[--bl] = 0;
  const char *name = strrchr(base, '/') ? strrchr(base, '/') + 1 : base;
  if (!name[0] || !strcmp(name, ".") || !strcmp(name, "..")) {
    setwhy(why, whylen, "%s has no usable base name", dir);
    return RV_EINVAL;
  }
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.part", path);
  struct archive *a = archive_write_new();
  if (!a) {
    setwhy(why, whylen, "out of memory");
    return RV_ENOMEM;
  }
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  int rc = RV_OK;
  if (archive_write_open_filename(a, tmp) != ARCHIVE_OK) {
    setwhy(why, whylen, "cannot create %s: %s", tmp, archive_error_string(a));
    rc = RV_EIO;
  }
  if (rc == RV_OK)
    rc = archive_tree(a, base, name, why, whylen);
  if (rc == RV_OK && archive_write_close(a) != ARCHIVE_OK) {
    setwhy(why, whylen, "cannot finish %s: %s", tmp, archive_error_string(a));
    rc = RV_EIO;
  }
  archive_write_free(a);
  if (rc == RV_OK && rename(tmp, path) != 0) {
    setwhy(why, whylen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    rc = RV_EIO;
  }
  if (rc != RV_OK)
    unlink(tmp);
  return rc;
}

/* ---- extract ------------------------------------------------------------------------------------- */

bool rv_grab_entry_path_ok(const char *path, size_t *toplen) {
  if (!path || !path[0] || path[0] == '/' || strlen(path) >= PATH_MAX - 256)
    return false;
  size_t first = 0;
  for (const char *p = path;;) {
    size_t n = strcspn(p, "/");
    if (n == 0)
      return p[0] == 0 && p != path; /* only a trailing slash may leave an empty component */
    if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
      return false;
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)p[i] < 0x20 || p[i] == '\\')
        return false;
    if (!first)
      first = n;
    if (!p[n])
      break;
    p += n + 1;
    if (!p[0])
      break; /* trailing slash */
  }
  if (toplen)
    *toplen = first;
  return true;
}

int rv_grab_extract(const char *path, const char *parent, char **out_dir, char *why,
                    size_t whylen) {
  return rv_grab_extract_bounded(path, parent, RV_GRAB_EXTRACT_MAX_BYTES, out_dir, why, whylen);
}

int rv_grab_extract_bounded(const char *path, const char *parent, unsigned long long max_bytes,
                            char **out_dir, char *why, size_t whylen) {
  *out_dir = NULL;
  struct archive *a = archive_read_new();
  if (!a) {
    setwhy(why, whylen, "out of memory");
    return RV_ENOMEM;
  }
  archive_read_support_filter_gzip(a);
  archive_read_support_filter_none(a);
  archive_read_support_format_tar(a);
  int rc = RV_OK;
  char top[PATH_MAX] = "", root[PATH_MAX] = "";
  bool created = false;
  unsigned long long total = 0, declared = 0;
  size_t entries = 0;
  if (archive_read_open_filename(a, path, 65536) != ARCHIVE_OK) {
    setwhy(why, whylen, "cannot open %s: %s", path, archive_error_string(a));
    archive_read_free(a);
    return RV_EIO;
  }
  struct archive_entry *e;
  int r;
  while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
    const char *name = archive_entry_pathname(e);
    size_t tl = 0;
    if (++entries > RV_GRAB_EXTRACT_MAX_ENTRIES) {
      setwhy(why, whylen, "%s: more than %d entries", path, RV_GRAB_EXTRACT_MAX_ENTRIES);
      rc = RV_EINVAL;
      break;
    }
    if (!rv_grab_entry_path_ok(name, &tl)) {
      setwhy(why, whylen, "%s: unsafe entry path \"%s\"", path, name ? name : "(none)");
      rc = RV_EINVAL;
      break;
    }
    if (!top[0]) {
      snprintf(top, sizeof top, "%.*s", (int)tl, name);
      snprintf(root, sizeof root, "%s/%s", parent, top);
      if (mkdir(root, 0755) != 0) {
        setwhy(why, whylen, "cannot create %s: %s", root, strerror(errno));
        rc = errno == EEXIST ? RV_EBUSY : RV_EIO;
        break;
      }
      created = true;
    } else if (strlen(top) != tl || strncmp(top, name, tl) != 0) {
      setwhy(why, whylen, "%s: entry \"%s\" is outside the top directory %s", path, name, top);
      rc = RV_EINVAL;
      break;
    }
    mode_t type = archive_entry_filetype(e);
    if (type != AE_IFDIR && type != AE_IFREG) {
      setwhy(why, whylen, "%s: entry \"%s\" is not a file or a directory", path, name);
      rc = RV_EINVAL;
      break;
    }
    if (archive_entry_hardlink(e) || archive_entry_symlink(e)) {
      setwhy(why, whylen, "%s: entry \"%s\" is a link", path, name);
      rc = RV_EINVAL;
      break;
    }
    char dest[PATH_MAX + 256];
    snprintf(dest, sizeof dest, "%s/%s", parent, name);
    size_t dl = strlen(dest);
    while (dl > 0 && dest[dl - 1] == '/')
      dest[--dl] = 0;
    if (type == AE_IFDIR) {
      if (strlen(name) > tl + 1 && mkdir(dest, 0755) != 0 && errno != EEXIST) {
        setwhy(why, whylen, "cannot create %s: %s", dest, strerror(errno));
        rc = RV_EIO;
        break;
      }
      continue;
    }
    /* The sizes the headers declare count against the bound before anything is written. */
    declared += (unsigned long long)(archive_entry_size(e) > 0 ? archive_entry_size(e) : 0);
    if (declared > max_bytes) {
      setwhy(why, whylen, "%s: unpacks to more than %llu bytes", path, max_bytes);
      rc = RV_EINVAL;
      break;
    }
    if (strlen(name) <= tl + 1) {
      setwhy(why, whylen, "%s: the top entry \"%s\" is a file", path, name);
      rc = RV_EINVAL;
      break;
    }
    /* Create missing parent directories (entries may come without their directory entries). */
    for (char *s = dest + strlen(root) + 1; (s = strchr(s, '/')); s++) {
      *s = 0;
      int mk = mkdir(dest, 0755);
      *s = '/';
      if (mk != 0 && errno != EEXIST) {
        setwhy(why, whylen, "cannot create the directories of %s: %s", dest, strerror(errno));
        rc = RV_EIO;
        break;
      }
    }
    if (rc != RV_OK)
      break;
    int fd = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
      setwhy(why, whylen, "cannot create %s: %s", dest, strerror(errno));
      rc = RV_EIO;
      break;
    }
    const void *buf;
    size_t len;
    la_int64_t off;
    int dr;
    while ((dr = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
      total += len;
      if (total > max_bytes) {
        setwhy(why, whylen, "%s: unpacks to more than %llu bytes", path, max_bytes);
        rc = RV_EINVAL;
        break;
      }
      if (pwrite(fd, buf, len, off) != (ssize_t)len) {
        setwhy(why, whylen, "cannot write %s: %s", dest, strerror(errno));
        rc = RV_EIO;
        break;
      }
    }
    if (rc == RV_OK && dr != ARCHIVE_EOF) {
      setwhy(why, whylen, "%s: %s", path, archive_error_string(a));
      rc = RV_EIO;
    }
    if (close(fd) != 0 && rc == RV_OK) {
      setwhy(why, whylen, "cannot write %s: %s", dest, strerror(errno));
      rc = RV_EIO;
    }
    if (rc != RV_OK)
      break;
  }
  if (rc == RV_OK && r != ARCHIVE_EOF) {
    setwhy(why, whylen, "%s: %s", path, archive_error_string(a));
    rc = RV_EIO;
  }
  archive_read_free(a);
  if (rc == RV_OK && !top[0]) {
    setwhy(why, whylen, "%s: the archive is empty", path);
    rc = RV_EINVAL;
  }
  if (rc == RV_OK) {
    char man[PATH_MAX + 32];
    struct stat st;
    snprintf(man, sizeof man, "%s/manifest.json", root);
    if (stat(man, &st) != 0 || !S_ISREG(st.st_mode)) {
      setwhy(why, whylen, "%s: not a ravel grab archive (no %s/manifest.json)", path, top);
      rc = RV_EINVAL;
    }
  }
  if (rc != RV_OK) {
    if (created)
      rv_grab_rmtree(root);
    return rc;
  }
  *out_dir = strdup(root);
  if (!*out_dir) {
    rv_grab_rmtree(root);
    setwhy(why, whylen, "out of memory");
    return RV_ENOMEM;
  }
  return RV_OK;
}
