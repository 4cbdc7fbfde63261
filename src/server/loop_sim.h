/*
 * The server loop (loop.h) over the simulator's network and virtual clock:
 * loop.c forwards every call here while a simulated world runs on this OS
 * thread (rv__sim_active).  Not for use outside src/server/.
 */
#ifndef RAVEL_SERVER_LOOP_SIM_H
#define RAVEL_SERVER_LOOP_SIM_H

#include "server/loop.h"

int rv__simloop_new(rv_loop **out, const rv_loop_opts *opts);
int rv__simloop_run(rv_loop *loop);
void rv__simloop_stop(rv_loop *loop);
void rv__simloop_free(rv_loop *loop);
int rv__simloop_listen(rv_loop *loop, const char *host, uint16_t port, const rv_sconn_handler *h,
                       void *server, uint16_t *bound_port);
void rv__simloop_write(rv_sconn *c, const void *buf, size_t len);
size_t rv__simloop_out_bytes(const rv_sconn *c);
void rv__simloop_close(rv_sconn *c);
void rv__simloop_pause(rv_sconn *c);
void rv__simloop_resume(rv_sconn *c);
const char *rv__simloop_peer(const rv_sconn *c);
rv_loop *rv__simloop_conn_loop(const rv_sconn *c);
rv_timer *rv__simloop_timer_new(rv_loop *loop, void (*cb)(void *arg), void *arg);
void rv__simloop_timer_set(rv_timer *t, int64_t deadline_ns);
void rv__simloop_timer_stop(rv_timer *t);
void rv__simloop_timer_free(rv_timer *t);
rv_wakeup *rv__simloop_wakeup_new(rv_loop *loop, void (*cb)(void *arg), void *arg);
void rv__simloop_wakeup_send(rv_wakeup *w);
void rv__simloop_wakeup_free(rv_wakeup *w);

#endif
