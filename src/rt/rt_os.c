/*
 * The OS backend of rt: pthreads, CLOCK_MONOTONIC, non-blocking sockets with
 * poll(2), getrandom(2).  This file (and only src/rt/) may call them.
 *
 * Parking: each thread has a parker, a mutex + condition variable (on the
 * monotonic clock) + one permit, plus an eventfd.  A thread waiting for a
 * socket polls the socket and its eventfd together, so unparking it (for
 * example because its context was cancelled) interrupts the poll as well.
 */
#define _GNU_SOURCE
#include "obs/registry.h"
#include "rt/rt_internal.h"
#include "rt/sim.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- clock --------------------------------------------------------------- */

int64_t rv_now_ns(void) {
  if (rv__sim_active())
    return rv__sim_now_ns();
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * RV_NS_PER_S + ts.tv_nsec;
}

int64_t rv_wall_ns(void) {
  if (rv__sim_active())
    return rv__sim_wall_ns();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * RV_NS_PER_S + ts.tv_nsec;
}

int rv_getpid(void) { return rv__sim_active() ? rv__sim_getpid() : (int)getpid(); }

void rv_gethostname(char *buf, size_t len) {
  if (len == 0)
    return;
  if (rv__sim_active()) {
    rv__sim_gethostname(buf, len);
    return;
  }
  buf[0] = 0;
  if (gethostname(buf, len - 1) != 0 || !buf[0])
    snprintf(buf, len, "localhost");
  buf[len - 1] = 0;
}

uint64_t rv_rng_os_seed(void) {
  if (rv__sim_active())
    return rv__sim_rng_os_seed();
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
    seed = (uint64_t)rv_wall_ns() ^ ((uint64_t)getpid() << 32);
  return seed;
}

/* ---- raw mutex ------------------------------------------------------------- */

_Static_assert(sizeof(pthread_mutex_t) <= sizeof(rv_rawmu), "rv_rawmu too small");

void rv_rawmu_init(rv_rawmu *m) { pthread_mutex_init((pthread_mutex_t *)m->opaque, NULL); }
void rv_rawmu_destroy(rv_rawmu *m) { pthread_mutex_destroy((pthread_mutex_t *)m->opaque); }
/* Under the simulator: one OS thread, no preemption inside a coroutine, and a raw
 * critical section never spans a park, so there is nothing to exclude. */
void rv_rawmu_lock(rv_rawmu *m) {
  if (!rv__sim_active())
    pthread_mutex_lock((pthread_mutex_t *)m->opaque);
}
void rv_rawmu_unlock(rv_rawmu *m) {
  if (!rv__sim_active())
    pthread_mutex_unlock((pthread_mutex_t *)m->opaque);
}

/* ---- parker ---------------------------------------------------------------- */

typedef struct os_thread {
  pthread_t pt;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool permit;
  bool polling;
  int efd;
  void (*fn)(void *);
  void *arg;
} os_thread;

static os_thread *os_of(rv_thread *t) { return (os_thread *)t->os; }

static void deadline_to_timespec(int64_t deadline_ns, struct timespec *ts) {
  ts->tv_sec = deadline_ns / RV_NS_PER_S;
  ts->tv_nsec = deadline_ns % RV_NS_PER_S;
}

void rv__park(rv_thread *self, int64_t deadline_ns) {
  if (rv__sim_active()) {
    rv__sim_park(self, deadline_ns);
    return;
  }
  os_thread *o = os_of(self);
  pthread_mutex_lock(&o->mu);
  while (!o->permit) {
    if (deadline_ns == RV_NO_DEADLINE) {
      pthread_cond_wait(&o->cv, &o->mu);
    } else {
      if (rv_now_ns() >= deadline_ns)
        break;
      struct timespec ts;
      deadline_to_timespec(deadline_ns, &ts);
      pthread_cond_timedwait(&o->cv, &o->mu, &ts);
    }
  }
  o->permit = false;
  pthread_mutex_unlock(&o->mu);
}

void rv__unpark(rv_thread *t) {
  if (rv__sim_active()) {
    rv__sim_unpark(t);
    return;
  }
  os_thread *o = os_of(t);
  pthread_mutex_lock(&o->mu);
  o->permit = true;
  if (o->polling) {
    uint64_t one = 1;
    ssize_t n = write(o->efd, &one, sizeof one);
    (void)n; /* a full eventfd counter still wakes the poll */
  }
  pthread_cond_signal(&o->cv);
  pthread_mutex_unlock(&o->mu);
}

/*
 * Poll fd for events until it is ready, the thread is unparked, or
 * deadline_ns passes.  Returns true if fd is ready.
 */
static bool park_fd(rv_thread *self, int fd, short events, int64_t deadline_ns) {
  os_thread *o = os_of(self);
  pthread_mutex_lock(&o->mu);
  if (o->permit) {
    o->permit = false;
    pthread_mutex_unlock(&o->mu);
    return false;
  }
  o->polling = true;
  pthread_mutex_unlock(&o->mu);

  struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = o->efd, .events = POLLIN}};
  int timeout_ms = -1;
  if (deadline_ns != RV_NO_DEADLINE) {
    int64_t left = deadline_ns - rv_now_ns();
    if (left < 0)
      left = 0;
    int64_t ms = (left + RV_NS_PER_MS - 1) / RV_NS_PER_MS; /* round up: never wake early */
    timeout_ms = ms > INT32_MAX ? INT32_MAX : (int)ms;
  }
  int n = poll(p, 2, timeout_ms);

  pthread_mutex_lock(&o->mu);
  o->polling = false;
  if (n > 0 && (p[1].revents & POLLIN)) {
    uint64_t v;
    ssize_t r = read(o->efd, &v, sizeof v);
    (void)r;
  }
  o->permit = false; /* an unpark during the poll has done its job */
  pthread_mutex_unlock(&o->mu);
  return n > 0 && (p[0].revents & (events | POLLERR | POLLHUP));
}

/* ---- threads --------------------------------------------------------------- */

static pthread_once_t rt_once = PTHREAD_ONCE_INIT;
static rv_registry *rt_registry;       /* the process's registry */
static pthread_key_t rt_adopted_key;   /* destructor forgets adopted threads */
static __thread rv_thread *rt_self;

static void thread_free(rv_thread *t);

static void adopted_exit(void *arg) {
  rv_thread *t = arg;
  rt_self = NULL;
  rv__registry_remove_thread(t);
  thread_free(t);
}

static void rt_init(void) {
  rt_registry = rv_registry_new();
  if (!rt_registry)
    abort();
  pthread_key_create(&rt_adopted_key, adopted_exit);
}

rv_registry *rv_registry_current(void) {
  if (rv__sim_active())
    return rv__sim_registry_current();
  pthread_once(&rt_once, rt_init);
  return rt_registry;
}

static rv_thread *thread_alloc(const char *name, const char *role) {
  rv_thread *t = calloc(1, sizeof *t);
  os_thread *o = calloc(1, sizeof *o);
  if (!t || !o)
    goto fail;
  o->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (o->efd < 0)
    goto fail;
  pthread_mutex_init(&o->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&o->cv, &ca);
  pthread_condattr_destroy(&ca);
  t->os = o;
  rv_rawmu_init(&t->mu);
  snprintf(t->name, sizeof t->name, "%s", name ? name : "thread");
  snprintf(t->role, sizeof t->role, "%s", role ? role : "");
  t->started_ns = rv_now_ns();
  return t;
fail:
  free(o);
  free(t);
  return NULL;
}

static void thread_free(rv_thread *t) {
  rv__thread_slots_free(t);
  os_thread *o = os_of(t);
  close(o->efd);
  pthread_mutex_destroy(&o->mu);
  pthread_cond_destroy(&o->cv);
  rv_rawmu_destroy(&t->mu);
  free(o);
  free(t);
}

static void *thread_main(void *arg) {
  rv_thread *t = arg;
  rt_self = t;
  rv_rawmu_lock(&t->mu); /* dumpers may be reading the record already */
  t->tid = (int)gettid();
  rv_rawmu_unlock(&t->mu);
  char os_name[16]; /* the kernel keeps 15 bytes: what gdb and top show */
  snprintf(os_name, sizeof os_name, "%s", t->name);
  pthread_setname_np(pthread_self(), os_name);
  os_thread *o = os_of(t);
  o->fn(o->arg);
  return NULL;
}

int rv_thread_start(rv_thread **out, const char *name, const char *role, void (*fn)(void *),
                    void *arg) {
  if (rv__sim_active())
    return rv__sim_thread_start(out, name, role, fn, arg);
  rv_registry *reg = rt_self ? rt_self->reg : rv_registry_current();
  rv_thread *t = thread_alloc(name, role);
  if (!t)
    return RV_ENOMEM;
  os_thread *o = os_of(t);
  o->fn = fn;
  o->arg = arg;
  rv__registry_add_thread(reg, t);
  int rc = pthread_create(&o->pt, NULL, thread_main, t);
  if (rc != 0) {
    rv__registry_remove_thread(t);
    thread_free(t);
    return RV_ENOMEM;
  }
  *out = t;
  return RV_OK;
}

int rv_thread_join(rv_thread *t) {
  if (rv__sim_active())
    return rv__sim_thread_join(t);
  rv_thread *self = rv_thread_self();
  rv__wait_begin(self, RV_WAIT_JOIN, t->id, t->name, __FILE__, __LINE__);
  int rc = pthread_join(os_of(t)->pt, NULL);
  rv__wait_end(self);
  rv__registry_remove_thread(t);
  thread_free(t);
  return rc == 0 ? RV_OK : RV_EINVAL;
}

rv_thread *rv_thread_self(void) {
  if (rv__sim_active())
    return rv__sim_thread_self();
  if (rt_self)
    return rt_self;
  pthread_once(&rt_once, rt_init);
  char name[RV_THREAD_NAME_MAX];
  snprintf(name, sizeof name, "thread-%d", (int)gettid());
  rv_thread *t = thread_alloc(name, "adopted");
  if (!t)
    abort(); /* no memory for a 1 KiB record: nothing sensible to do */
  t->adopted = true;
  t->tid = (int)gettid();
  rv__registry_add_thread(rv_registry_current(), t);
  rt_self = t;
  pthread_setspecific(rt_adopted_key, t);
  return t;
}

void rv_thread_adopt(const char *name, const char *role) {
  rv_thread *t = rv_thread_self();
  rv_rawmu_lock(&t->mu);
  snprintf(t->name, sizeof t->name, "%s", name ? name : t->name);
  if (role)
    snprintf(t->role, sizeof t->role, "%s", role);
  rv_rawmu_unlock(&t->mu);
}

void rv_thread_forget(void) {
  if (rv__sim_active())
    return; /* simulated threads are not adopted */
  rv_thread *t = rt_self;
  if (!t || !t->adopted)
    return;
  pthread_setspecific(rt_adopted_key, NULL);
  adopted_exit(t);
}

/* ---- sleep ---------------------------------------------------------------- */

int rv_sleep(rv_ctx *ctx, int64_t dur_ns) {
  rv_thread *self = rv_thread_self();
  int64_t until = dur_ns > RV_NO_DEADLINE - rv_now_ns() ? RV_NO_DEADLINE : rv_now_ns() + dur_ns;
  rv__ctxwait cw;
  rv__ctxwait_begin(&cw, ctx, self);
  rv__wait_begin(self, RV_WAIT_SLEEP, 0, "", __FILE__, __LINE__);
  int rc;
  while ((rc = rv__ctxwait_check(&cw, until)) == 0)
    rv__park(self, rv__ctxwait_deadline(&cw, until));
  rv__wait_end(self);
  rv__ctxwait_end(&cw);
  return rc == RV_ETIMEDOUT ? RV_OK : rc;
}

/* ---- TCP ------------------------------------------------------------------- */

struct rv_conn {
  int fd;
  int64_t rd_deadline_ns, wr_deadline_ns;
  char peer[64];
};

struct rv_listener {
  int fd;
  uint16_t port;
};

static int errno_to_rv(int e) {
  switch (e) {
  case ECONNREFUSED:
    return RV_ECONNREFUSED;
  case ECONNRESET:
  case EPIPE:
  case ENOTCONN:
    return RV_ECLOSED;
  case ENOMEM:
  case ENOBUFS:
  case EMFILE:
  case ENFILE:
    return RV_ENOMEM;
  case EADDRINUSE:
  case EADDRNOTAVAIL:
    return RV_EADDR;
  case ETIMEDOUT:
    return RV_ETIMEDOUT;
  default:
    return RV_EIO;
  }
}

/*
 * Block until fd is ready for `events`, publishing the wait in the registry.
 * 0 when ready; RV_ECANCELED/RV_EDEADLINE (ctx) or RV_ETIMEDOUT (op deadline).
 */
static int wait_fd(int fd, short events, int64_t deadline_ns, rv_ctx *ctx, rv_wait_kind kind,
                   const char *what) {
  rv_thread *self = rv_thread_self();
  rv__ctxwait cw;
  rv__ctxwait_begin(&cw, ctx, self);
  /* Inside a published external wait ("dlock acct-42") the socket wait is its
   * mechanism: keep showing the external one. */
  rv_rawmu_lock(&self->mu);
  bool nested = self->wait.kind == RV_WAIT_EXTERNAL;
  rv_rawmu_unlock(&self->mu);
  if (!nested)
    rv__wait_begin(self, kind, 0, what, __FILE__, __LINE__);
  int rc;
  while ((rc = rv__ctxwait_check(&cw, deadline_ns)) == 0) {
    if (park_fd(self, fd, events, rv__ctxwait_deadline(&cw, deadline_ns)))
      break;
  }
  if (!nested)
    rv__wait_end(self);
  rv__ctxwait_end(&cw);
  return rc;
}


static void format_peer(const struct sockaddr *sa, char *out, size_t n) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) == 0)
    snprintf(out, n, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
  else
    snprintf(out, n, "?");
}

static rv_conn *conn_wrap(int fd, const struct sockaddr *peer) {
  rv_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->fd = fd;
  c->rd_deadline_ns = c->wr_deadline_ns = RV_NO_DEADLINE;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  format_peer(peer, c->peer, sizeof c->peer);
  return c;
}

static int resolve(const char *host, uint16_t port, int flags, struct addrinfo **res) {
  char serv[8];
  snprintf(serv, sizeof serv, "%u", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV | flags};
  return getaddrinfo(host, serv, &hints, res) == 0 ? RV_OK : RV_EADDR;
}

int rv_tcp_connect(rv_conn **out, const char *host, uint16_t port, rv_ctx *ctx) {
  if (rv__sim_active())
    return rv__sim_tcp_connect(out, host, port, ctx);
  struct addrinfo *res;
  int rc = resolve(host, port, 0, &res);
  if (rc)
    return rc;
  rc = RV_ECONNREFUSED;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      rc = errno_to_rv(errno);
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        rc = errno_to_rv(errno);
        close(fd);
        continue;
      }
      char what[RV_WAIT_WHAT_MAX];
      snprintf(what, sizeof what, "%s:%u", host, port);
      rc = wait_fd(fd, POLLOUT, RV_NO_DEADLINE, ctx, RV_WAIT_NET_CONNECT, what);
      if (rc == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err ? errno_to_rv(err) : RV_OK;
      }
      if (rc) {
        close(fd);
        if (rc == RV_ECANCELED || rc == RV_EDEADLINE)
          break;
        continue;
      }
    }
    *out = conn_wrap(fd, ai->ai_addr);
    rc = *out ? RV_OK : RV_ENOMEM;
    if (!*out)
      close(fd);
    break;
  }
  freeaddrinfo(res);
  return rc;
}

ssize_t rv_conn_read(rv_conn *c, void *buf, size_t len, rv_ctx *ctx) {
  if (rv__sim_active())
    return rv__sim_conn_read(c, buf, len, ctx);
  for (;;) {
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n >= 0)
      return n;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return errno_to_rv(errno);
    int rc = wait_fd(c->fd, POLLIN, c->rd_deadline_ns, ctx, RV_WAIT_NET_READ, c->peer);
    if (rc)
      return rc;
  }
}

int rv_conn_read_full(rv_conn *c, void *buf, size_t len, rv_ctx *ctx) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = rv_conn_read(c, (char *)buf + got, len - got, ctx);
    if (n < 0)
      return (int)n;
    if (n == 0)
      return RV_ECLOSED;
    got += (size_t)n;
  }
  return RV_OK;
}

int rv_conn_write_all(rv_conn *c, const void *buf, size_t len, rv_ctx *ctx) {
  if (rv__sim_active())
    return rv__sim_conn_write_all(c, buf, len, ctx);
  size_t put = 0;
  while (put < len) {
    ssize_t n = send(c->fd, (const char *)buf + put, len - put, MSG_NOSIGNAL);
    if (n >= 0) {
      put += (size_t)n;
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return errno_to_rv(errno);
    int rc = wait_fd(c->fd, POLLOUT, c->wr_deadline_ns, ctx, RV_WAIT_NET_WRITE, c->peer);
    if (rc)
      return rc;
  }
  return RV_OK;
}

void rv_conn_set_read_deadline(rv_conn *c, int64_t deadline_ns) {
  if (rv__sim_active())
    rv__sim_conn_set_read_deadline(c, deadline_ns);
  else
    c->rd_deadline_ns = deadline_ns;
}
void rv_conn_set_write_deadline(rv_conn *c, int64_t deadline_ns) {
  if (rv__sim_active())
    rv__sim_conn_set_write_deadline(c, deadline_ns);
  else
    c->wr_deadline_ns = deadline_ns;
}

int rv_conn_shutdown_write(rv_conn *c) {
  if (rv__sim_active())
    return rv__sim_conn_shutdown_write(c);
  return shutdown(c->fd, SHUT_WR) == 0 ? RV_OK : errno_to_rv(errno);
}

void rv_conn_close(rv_conn *c) {
  if (rv__sim_active()) {
    rv__sim_conn_close(c);
    return;
  }
  if (!c)
    return;
  close(c->fd);
  free(c);
}

const char *rv_conn_peer(const rv_conn *c) {
  return rv__sim_active() ? rv__sim_conn_peer(c) : c->peer;
}

int rv_tcp_listen(rv_listener **out, const char *host, uint16_t port, int backlog) {
  if (rv__sim_active())
    return rv__sim_tcp_listen(out, host, port, backlog);
  struct addrinfo *res;
  int rc = resolve(host, port, AI_PASSIVE, &res);
  if (rc)
    return rc;
  rc = RV_EADDR;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
      continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
      rc = errno_to_rv(errno);
      close(fd);
      continue;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    rv_listener *l = calloc(1, sizeof *l);
    if (!l) {
      close(fd);
      rc = RV_ENOMEM;
      break;
    }
    l->fd = fd;
    l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    *out = l;
    rc = RV_OK;
    break;
  }
  freeaddrinfo(res);
  return rc;
}

uint16_t rv_listener_port(const rv_listener *l) {
  return rv__sim_active() ? rv__sim_listener_port(l) : l->port;
}

int rv_listener_accept(rv_listener *l, rv_conn **out, rv_ctx *ctx) {
  if (rv__sim_active())
    return rv__sim_listener_accept(l, out, ctx);
  for (;;) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      *out = conn_wrap(fd, (struct sockaddr *)&ss);
      if (!*out) {
        close(fd);
        return RV_ENOMEM;
      }
      return RV_OK;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return errno_to_rv(errno);
    char what[RV_WAIT_WHAT_MAX];
    snprintf(what, sizeof what, "port %u", l->port);
    int rc = wait_fd(l->fd, POLLIN, RV_NO_DEADLINE, ctx, RV_WAIT_ACCEPT, what);
    if (rc)
      return rc;
  }
}

void rv_listener_close(rv_listener *l) {
  if (rv__sim_active()) {
    rv__sim_listener_close(l);
    return;
  }
  if (!l)
    return;
  close(l->fd);
  free(l);
}
