/*
 * coord's config commands (CFG.*): layered service config over the config
 * store (core/config.h) made durable by configdb (SQLite).  docs/coord.md
 * is the reference.
 *
 * Watches are long polls, which every Redis client can do: CFG.WATCH names
 * what to watch and the revision the client has seen, and answers with the
 * changes after it, blocking (like BLPOP) until there is at least one or
 * its TIMEOUT passes.  The reply carries the revision to resume from, so a
 * client that reconnects, or simply calls again, neither misses nor repeats
 * a change.  Internally each poll registers a store watch "since R"; the
 * store replays what R missed at once, or the next write that affects the
 * watcher produces its event.
 */
#define _GNU_SOURCE
#include "server/coord_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a CFG.WATCH waits without TIMEOUT; a client may ask for up to RV_COORD_WATCH_MAX_MS. */
#define COORD_WATCH_DEFAULT_MS 30000
#define COORD_WATCH_MAX_MS (10 * 60 * 1000)
#define COORD_CFG_DB_FILE "config.db"

static rv_cfg_str cs(const rv_resp_arg *a) { return (rv_cfg_str){a->ptr, a->len}; }

static void out_str(rv_resp_out *o, rv_cfg_str s) { rv_resp_out_bulk(o, s.ptr, s.len); }

static void out_opt(rv_resp_out *o, bool present, rv_cfg_str s) {
  if (present)
    out_str(o, s);
  else
    rv_resp_out_null(o);
}

static void reply_cfg_error(cconn *k, int err, const char *msg) {
  rv__coord_reply_err(k, "%s %s", rv_cfg_errcode(err), msg);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

int rv__coord_cfg_open(rv_coord *c, bool sync_full, char *why, size_t why_len) {
  rv_cfg_opts o;
  rv_cfg_opts_default(&o);
  if (rv_cfg_create(&c->cfg, &o) != RV_CFG_OK) {
    snprintf(why, why_len, "cannot create the config store (out of memory)");
    return RV_ENOMEM;
  }
  char path[600];
  snprintf(path, sizeof path, "%s/%s", c->data_dir, COORD_CFG_DB_FILE);
  rv_cfgdb_opts dbo = {.sync = sync_full ? RV_CFGDB_SYNC_FULL : RV_CFGDB_SYNC_NORMAL};
  char dbwhy[400];
  if (rv_cfgdb_open(&c->db, path, &dbo, c->cfg, dbwhy, sizeof dbwhy) != RV_CFG_OK) {
    snprintf(why, why_len, "cannot open config database %s: %s", path, dbwhy);
    rv_cfg_destroy(c->cfg);
    c->cfg = NULL;
    return RV_EIO;
  }
  rv_cfg_events_init(&c->cev);
  return RV_OK;
}

void rv__coord_cfg_close(rv_coord *c) {
  if (c->db)
    rv_cfgdb_close(c->db);
  if (c->cfg) {
    rv_cfg_events_free(&c->cev);
    rv_cfg_destroy(c->cfg);
  }
  c->db = NULL;
  c->cfg = NULL;
}

void rv__coord_cfg_register(rv_coord *c, rv_lt_str service, rv_lt_str replica) {
  if (!c->db || service.len == 0)
    return;
  rv_cfg_str s = {service.ptr, service.len}, r = {replica.ptr, replica.len};
  if (rv_cfgdb_register(c->db, s, r) != RV_CFG_OK)
    rv_log_warn(c->log, "service not registered with config", "service=%.*s replica=%.*s why=%s",
                (int)service.len, service.ptr, (int)replica.len, replica.ptr,
                rv_cfgdb_errmsg(c->db));
}

/* ---- options shared by the write commands ------------------------------------------------- */

typedef struct write_opts {
  rv_cfg_str author, reason;
  uint64_t ifrev;
  bool include_all;   /* CFG.DRYRUN ... ALL */
  char default_author[128];
} write_opts;

/*
 * Parse [AUTHOR a] [REASON r] [IFREV n] (and, for CFG.DRYRUN only, ALL) from
 * argv[from..]; false after replying an error.
 */
static bool parse_write_opts(cmdctx *x, size_t from, write_opts *w, const char *usage,
                             bool dry_run) {
  const rv_resp_cmd *cmd = x->cmd;
  w->ifrev = RV_CFG_REV_ANY;
  for (size_t i = from; i < cmd->argc; i++) {
    const rv_resp_arg *a = &cmd->argv[i];
    bool has = i + 1 < cmd->argc;
    if (rv_resp_arg_is(a, "AUTHOR") && has) {
      w->author = cs(&cmd->argv[++i]);
    } else if (rv_resp_arg_is(a, "REASON") && has) {
      w->reason = cs(&cmd->argv[++i]);
    } else if (rv_resp_arg_is(a, "IFREV") && has) {
      if (!rv__coord_arg_u64(&cmd->argv[++i], &w->ifrev)) {
        rv__coord_reply_err(x->k, "ERR IFREV must be a revision number (0: the key must not exist)");
        return false;
      }
    } else if (dry_run && rv_resp_arg_is(a, "ALL")) {
      w->include_all = true;
    } else {
      rv__coord_reply_usage(x->k, usage);
      return false;
    }
  }
  if (w->author.len == 0) {
    /* Who wrote it, if the client did not say: its CLIENT SETNAME, else its address. */
    snprintf(w->default_author, sizeof w->default_author, "%s",
             x->k->name[0] ? x->k->name : rv_sconn_peer(x->k->sc));
    w->author = rv_cfg_cstr(w->default_author);
  }
  return true;
}

/* After a write: answer the watchers it concerns. */
static void deliver_watch_events(rv_coord *c);

static void apply_write(cmdctx *x, rv_cfg_write *w) {
  rv_coord *c = x->k->srv;
  w->wall_ns = rv_wall_ns();
  rv_cfg_change ch;
  int rc = rv_cfgdb_apply(c->db, w, &c->cev, &ch);
  if (rc != RV_CFG_OK) {
    reply_cfg_error(x->k, rc, rv_cfgdb_errmsg(c->db));
    rv_cfg_events_clear(&c->cev);
    return;
  }
  rv_resp_out_int(&x->k->out, (int64_t)ch.revision);
  rv_log_info(c->log, "config write", "rev=%" PRIu64 " op=%s ns=%.*s key=%.*s author=%.*s reason=%.*s",
              ch.revision, rv_cfg_op_name(ch.op), (int)ch.ns.len, ch.ns.ptr, (int)ch.key.len,
              ch.key.ptr, (int)ch.author.len, ch.author.ptr, (int)ch.reason.len, ch.reason.ptr);
  deliver_watch_events(c);
}

/* ---- writes -------------------------------------------------------------------------------- */

static bool cmd_set(cmdctx *x) {
  static const char usage[] = "CFG.SET ns key value [AUTHOR a] [REASON r] [IFREV rev]";
  if (x->cmd->argc < 4) {
    rv__coord_reply_usage(x->k, usage);
    return false;
  }
  write_opts o = {0};
  if (!parse_write_opts(x, 4, &o, usage, false))
    return false;
  rv_cfg_write w = {.op = RV_CFG_OP_SET, .ns = cs(&x->cmd->argv[1]), .key = cs(&x->cmd->argv[2]),
                    .value = cs(&x->cmd->argv[3]), .expect_revision = o.ifrev,
                    .author = o.author, .reason = o.reason};
  apply_write(x, &w);
  return false;
}

static bool cmd_del(cmdctx *x) {
  static const char usage[] = "CFG.DEL ns key [AUTHOR a] [REASON r] [IFREV rev]";
  if (x->cmd->argc < 3) {
    rv__coord_reply_usage(x->k, usage);
    return false;
  }
  write_opts o = {0};
  if (!parse_write_opts(x, 3, &o, usage, false))
    return false;
  rv_cfg_write w = {.op = RV_CFG_OP_DELETE, .ns = cs(&x->cmd->argv[1]),
                    .key = cs(&x->cmd->argv[2]), .expect_revision = o.ifrev,
                    .author = o.author, .reason = o.reason};
  apply_write(x, &w);
  return false;
}

static bool cmd_rollback(cmdctx *x) {
  static const char usage[] = "CFG.ROLLBACK ns key to_revision [AUTHOR a] [REASON r]";
  uint64_t to;
  if (x->cmd->argc < 4 || !rv__coord_arg_u64(&x->cmd->argv[3], &to)) {
    rv__coord_reply_usage(x->k, usage);
    return false;
  }
  write_opts o = {0};
  if (!parse_write_opts(x, 4, &o, usage, false))
    return false;
  rv_cfg_write w = {.op = RV_CFG_OP_ROLLBACK, .ns = cs(&x->cmd->argv[1]),
                    .key = cs(&x->cmd->argv[2]), .rollback_to = to,
                    .expect_revision = RV_CFG_REV_ANY, .author = o.author, .reason = o.reason};
  apply_write(x, &w);
  return false;
}

/* ---- reads --------------------------------------------------------------------------------- */

static void out_kv_map(rv_resp_out *o, const rv_cfg_kv *kv) {
  rv_resp_out_array(o, 12);
  rv_resp_out_bulk_cstr(o, "key");
  out_str(o, kv->key);
  rv_resp_out_bulk_cstr(o, "value");
  out_str(o, kv->value);
  rv__coord_out_kv_str(o, "layer", rv_cfg_level_name(kv->level));
  rv_resp_out_bulk_cstr(o, "ns");
  out_str(o, kv->ns);
  rv__coord_out_kv_int(o, "mod_revision", (int64_t)kv->mod_revision);
  rv__coord_out_kv_int(o, "create_revision", (int64_t)kv->create_revision);
}

static bool cmd_get(cmdctx *x) {
  if (x->cmd->argc != 3) {
    rv__coord_reply_usage(x->k, "CFG.GET ns key");
    return false;
  }
  rv_cfg_kv kv;
  int rc = rv_cfg_get(x->k->srv->cfg, cs(&x->cmd->argv[1]), cs(&x->cmd->argv[2]), &kv);
  if (rc == RV_CFG_ENOKEY)
    rv_resp_out_null(&x->k->out);
  else if (rc != RV_CFG_OK)
    reply_cfg_error(x->k, rc, rv_cfg_errmsg(x->k->srv->cfg));
  else
    out_kv_map(&x->k->out, &kv);
  return false;
}

/* "service" or "service/replica" */
static void split_target(const rv_resp_arg *a, rv_cfg_str *service, rv_cfg_str *replica) {
  const char *slash = memchr(a->ptr, '/', a->len);
  if (!slash) {
    *service = cs(a);
    *replica = (rv_cfg_str){"", 0};
    return;
  }
  *service = (rv_cfg_str){a->ptr, (size_t)(slash - a->ptr)};
  *replica = (rv_cfg_str){slash + 1, a->len - (size_t)(slash - a->ptr) - 1};
}

static bool cmd_effective(cmdctx *x) {
  if (x->cmd->argc != 3) {
    rv__coord_reply_usage(x->k, "CFG.EFFECTIVE service[/replica] key");
    return false;
  }
  rv_cfg_str s, r;
  split_target(&x->cmd->argv[1], &s, &r);
  rv_cfg_kv kv;
  int rc = rv_cfg_get_effective(x->k->srv->cfg, s, r, cs(&x->cmd->argv[2]), &kv);
  if (rc == RV_CFG_ENOKEY)
    rv_resp_out_null(&x->k->out);
  else if (rc != RV_CFG_OK)
    reply_cfg_error(x->k, rc, rv_cfg_errmsg(x->k->srv->cfg));
  else
    out_kv_map(&x->k->out, &kv);
  return false;
}

typedef struct kv_list {
  rv_resp_out *o;
} kv_list;

static bool count_kv(const rv_cfg_kv *kv, void *arg) { return true; }

static bool emit_kv(const rv_cfg_kv *kv, void *arg) {
  out_kv_map(((kv_list *)arg)->o, kv);
  return true;
}

static bool parse_prefix(cmdctx *x, size_t from, rv_cfg_str *prefix, const char *usage) {
  *prefix = (rv_cfg_str){"", 0};
  if (x->cmd->argc == from)
    return true;
  if (x->cmd->argc == from + 2 && rv_resp_arg_is(&x->cmd->argv[from], "PREFIX")) {
    *prefix = cs(&x->cmd->argv[from + 1]);
    return true;
  }
  rv__coord_reply_usage(x->k, usage);
  return false;
}

/* CFG.LIST ns [PREFIX p] and CFG.DUMP target [PREFIX p]: count, then emit. */
static bool cmd_list_common(cmdctx *x, bool effective) {
  const char *usage = effective ? "CFG.DUMP service[/replica] [PREFIX p]" : "CFG.LIST ns [PREFIX p]";
  rv_cfg_str prefix;
  if (x->cmd->argc < 2 || !parse_prefix(x, 2, &prefix, usage)) {
    if (x->cmd->argc < 2)
      rv__coord_reply_usage(x->k, usage);
    return false;
  }
  rv_cfg *cfg = x->k->srv->cfg;
  rv_cfg_str s, r;
  split_target(&x->cmd->argv[1], &s, &r);
  size_t n = 0;
  int rc = effective ? rv_cfg_list_effective(cfg, s, r, prefix, count_kv, NULL, &n)
                     : rv_cfg_list(cfg, cs(&x->cmd->argv[1]), prefix, count_kv, NULL, &n);
  if (rc != RV_CFG_OK) {
    reply_cfg_error(x->k, rc, rv_cfg_errmsg(cfg));
    return false;
  }
  rv_resp_out_array(&x->k->out, n);
  kv_list l = {&x->k->out};
  if (effective)
    rv_cfg_list_effective(cfg, s, r, prefix, emit_kv, &l, NULL);
  else
    rv_cfg_list(cfg, cs(&x->cmd->argv[1]), prefix, emit_kv, &l, NULL);
  return false;
}

static bool cmd_list(cmdctx *x) { return cmd_list_common(x, false); }
static bool cmd_dump(cmdctx *x) { return cmd_list_common(x, true); }

static bool count_target(const rv_cfg_target_view *v, void *arg) { return true; }

static bool emit_target(const rv_cfg_target_view *v, void *arg) {
  rv_resp_out *o = arg;
  rv_resp_out_array(o, 12);
  rv_resp_out_bulk_cstr(o, "service");
  out_str(o, v->service);
  rv_resp_out_bulk_cstr(o, "replica");
  out_str(o, v->replica);
  rv_resp_out_bulk_cstr(o, "ns");
  out_str(o, v->ns);
  rv__coord_out_kv_int(o, "registered", v->registered);
  rv__coord_out_kv_int(o, "keys", (int64_t)v->keys);
  rv__coord_out_kv_int(o, "watches", (int64_t)v->watches);
  return true;
}

static bool cmd_targets(cmdctx *x) {
  rv_cfg_str service = {"", 0};
  if (x->cmd->argc == 2)
    service = cs(&x->cmd->argv[1]);
  else if (x->cmd->argc != 1) {
    rv__coord_reply_usage(x->k, "CFG.TARGETS [service]");
    return false;
  }
  rv_cfg *cfg = x->k->srv->cfg;
  size_t n = 0;
  int rc = rv_cfg_list_targets(cfg, service, count_target, NULL, &n);
  if (rc != RV_CFG_OK) {
    reply_cfg_error(x->k, rc, rv_cfg_errmsg(cfg));
    return false;
  }
  rv_resp_out_array(&x->k->out, n);
  rv_cfg_list_targets(cfg, service, emit_target, &x->k->out, NULL);
  return false;
}

static bool cmd_register(cmdctx *x) {
  if (x->cmd->argc < 2 || x->cmd->argc > 3) {
    rv__coord_reply_usage(x->k, "CFG.REGISTER service [replica]");
    return false;
  }
  rv_cfg_str r = x->cmd->argc == 3 ? cs(&x->cmd->argv[2]) : (rv_cfg_str){"", 0};
  int rc = rv_cfgdb_register(x->k->srv->db, cs(&x->cmd->argv[1]), r);
  if (rc != RV_CFG_OK)
    reply_cfg_error(x->k, rc, rv_cfgdb_errmsg(x->k->srv->db));
  else
    rv_resp_out_simple(&x->k->out, "OK");
  return false;
}

static bool cmd_revision(cmdctx *x) {
  rv_resp_out_int(&x->k->out, (int64_t)rv_cfg_revision(x->k->srv->cfg));
  return false;
}

/* ---- dry run --------------------------------------------------------------------------------- */

typedef struct impact_acc {
  rv_resp_out *o;
} impact_acc;

static const char *effect_name(int e) {
  return e == RV_CFG_IMPACT_CHANGES ? "changes" : e == RV_CFG_IMPACT_OVERRIDDEN ? "overridden" : "same";
}

static bool count_impact(const rv_cfg_impact *imp, void *arg) {
  (*(size_t *)arg)++;
  return true;
}

static bool emit_impact(const rv_cfg_impact *imp, void *arg) {
  rv_resp_out *o = arg;
  rv_resp_out_array(o, 16);
  rv_resp_out_bulk_cstr(o, "service");
  out_str(o, imp->service);
  rv_resp_out_bulk_cstr(o, "replica");
  out_str(o, imp->replica);
  rv__coord_out_kv_str(o, "effect", effect_name(imp->effect));
  rv__coord_out_kv_str(o, "overridden_by",
                       imp->effect == RV_CFG_IMPACT_OVERRIDDEN ? rv_cfg_level_name(imp->override_level)
                                                               : "");
  rv_resp_out_bulk_cstr(o, "old");
  out_opt(o, imp->old_present, imp->old_value);
  rv__coord_out_kv_str(o, "old_layer", rv_cfg_level_name(imp->old_level));
  rv_resp_out_bulk_cstr(o, "new");
  out_opt(o, imp->new_present, imp->new_value);
  rv__coord_out_kv_str(o, "new_layer", rv_cfg_level_name(imp->new_level));
  return true;
}

/*
 * CFG.DRYRUN ns key (value | DELETE) [ALL] [IFREV n]: who the write would
 * reach, old -> new, without writing.  ALL also lists the services in
 * scope that it would not change (and why: overridden or same value).
 */
static bool cmd_dryrun(cmdctx *x) {
  static const char usage[] = "CFG.DRYRUN ns key (value | DELETE) [ALL] [IFREV rev]";
  const rv_resp_cmd *cmd = x->cmd;
  if (cmd->argc < 4) {
    rv__coord_reply_usage(x->k, usage);
    return false;
  }
  write_opts o = {0};
  bool is_delete = rv_resp_arg_is(&cmd->argv[3], "DELETE");
  if (!parse_write_opts(x, 4, &o, usage, true))
    return false;
  rv_cfg_write w = {.op = is_delete ? RV_CFG_OP_DELETE : RV_CFG_OP_SET,
                    .ns = cs(&cmd->argv[1]), .key = cs(&cmd->argv[2]),
                    .value = is_delete ? (rv_cfg_str){"", 0} : cs(&cmd->argv[3]),
                    .expect_revision = o.ifrev, .author = o.author, .reason = o.reason,
                    .wall_ns = rv_wall_ns()};
  rv_coord *c = x->k->srv;
  size_t n = 0;
  rv_cfg_dry_run_res res;
  int rc = rv_cfgdb_dry_run(c->db, &w, o.include_all, count_impact, &n, &res);
  if (rc != RV_CFG_OK) {
    reply_cfg_error(x->k, rc, rv_cfgdb_errmsg(c->db));
    return false;
  }
  rv_resp_out *out = &x->k->out;
  rv_resp_out_array(out, 8);
  rv__coord_out_kv_int(out, "changes", (int64_t)res.changes);
  rv__coord_out_kv_int(out, "unaffected", (int64_t)res.unaffected);
  rv__coord_out_kv_int(out, "revision_now", (int64_t)rv_cfg_revision(c->cfg));
  rv_resp_out_bulk_cstr(out, "impacts");
  rv_resp_out_array(out, n);
  rv_cfgdb_dry_run(c->db, &w, o.include_all, emit_impact, out, &res);
  return false;
}

/* ---- audit ----------------------------------------------------------------------------------- */

static void out_change(rv_resp_out *o, const rv_cfg_change *ch) {
  rv_resp_out_array(o, 22);
  rv__coord_out_kv_int(o, "revision", (int64_t)ch->revision);
  rv__coord_out_kv_int(o, "time_ms", ch->wall_ns / RV_NS_PER_MS);
  rv__coord_out_kv_str(o, "op", rv_cfg_op_name(ch->op));
  rv_resp_out_bulk_cstr(o, "ns");
  out_str(o, ch->ns);
  rv_resp_out_bulk_cstr(o, "key");
  out_str(o, ch->key);
  rv_resp_out_bulk_cstr(o, "old");
  out_opt(o, ch->old_present, ch->old_value);
  rv_resp_out_bulk_cstr(o, "new");
  out_opt(o, ch->new_present, ch->new_value);
  rv_resp_out_bulk_cstr(o, "author");
  out_str(o, ch->author);
  rv_resp_out_bulk_cstr(o, "reason");
  out_str(o, ch->reason);
  rv__coord_out_kv_int(o, "rollback_to", (int64_t)ch->rollback_to);
  rv__coord_out_kv_str(o, "layer", rv_cfg_level_name(ch->level));
}

typedef struct audit_acc {
  rv_resp_out *o;
  size_t n;
} audit_acc;

static bool count_change(const rv_cfg_change *ch, void *arg) {
  ((audit_acc *)arg)->n++;
  return true;
}

static bool emit_change(const rv_cfg_change *ch, void *arg) {
  out_change(((audit_acc *)arg)->o, ch);
  return true;
}

/* CFG.AUDIT [NS ns] [KEY k] [SINCE rev] [UNTIL rev] [FROM ms] [TO ms] [LIMIT n] [NEWEST] */
static bool cmd_audit(cmdctx *x) {
  static const char usage[] =
      "CFG.AUDIT [NS ns] [KEY k] [SINCE rev] [UNTIL rev] [FROM unix_ms] [TO unix_ms] [LIMIT n] "
      "[NEWEST]";
  const rv_resp_cmd *cmd = x->cmd;
  rv_cfg_audit_query q = {0};
  for (size_t i = 1; i < cmd->argc; i++) {
    const rv_resp_arg *a = &cmd->argv[i];
    bool has = i + 1 < cmd->argc;
    int64_t v = 0;
    if (rv_resp_arg_is(a, "NEWEST")) {
      q.newest_first = true;
      continue;
    }
    if (!has) {
      rv__coord_reply_usage(x->k, usage);
      return false;
    }
    const rv_resp_arg *val = &cmd->argv[++i];
    if (rv_resp_arg_is(a, "NS")) {
      q.ns = cs(val);
    } else if (rv_resp_arg_is(a, "KEY")) {
      q.key = cs(val);
    } else if (rv__coord_arg_i64(val, &v) && v >= 0) {
      if (rv_resp_arg_is(a, "SINCE"))
        q.rev_min = (uint64_t)v;
      else if (rv_resp_arg_is(a, "UNTIL"))
        q.rev_max = (uint64_t)v;
      else if (rv_resp_arg_is(a, "FROM"))
        q.wall_min_ns = v * RV_NS_PER_MS;
      else if (rv_resp_arg_is(a, "TO"))
        q.wall_max_ns = v * RV_NS_PER_MS;
      else if (rv_resp_arg_is(a, "LIMIT"))
        q.limit = (size_t)v;
      else {
        rv__coord_reply_usage(x->k, usage);
        return false;
      }
    } else {
      rv__coord_reply_usage(x->k, usage);
      return false;
    }
  }
  rv_coord *c = x->k->srv;
  audit_acc acc = {&x->k->out, 0};
  rv_cfg_audit_res res;
  int rc = rv_cfgdb_audit(c->db, &q, count_change, &acc, &res);
  if (rc != RV_CFG_OK) {
    reply_cfg_error(x->k, rc, rv_cfgdb_errmsg(c->db));
    return false;
  }
  rv_resp_out_array(&x->k->out, acc.n);
  rv_cfgdb_audit(c->db, &q, emit_change, &acc, &res);
  return false;
}

/* ---- watches ----------------------------------------------------------------------------------- */

static void watcher_link(rv_coord *c, cconn *k) {
  k->watch_prev = NULL;
  k->watch_next = c->watchers;
  if (c->watchers)
    c->watchers->watch_prev = k;
  c->watchers = k;
}

static void watcher_unlink(rv_coord *c, cconn *k) {
  if (k->watch_prev)
    k->watch_prev->watch_next = k->watch_next;
  else if (c->watchers == k)
    c->watchers = k->watch_next;
  if (k->watch_next)
    k->watch_next->watch_prev = k->watch_prev;
  k->watch_next = k->watch_prev = NULL;
}

/* The reply to a watch: [resume_revision, [event...]]; only events of watch_id are used. */
static void out_watch_reply(cconn *k, const rv_cfg_events *ev, uint64_t watch_id,
                            uint64_t resume_rev) {
  size_t n = 0;
  for (size_t i = 0; i < ev->len; i++)
    if (ev->v[i].watch_id == watch_id) {
      n++;
      if (ev->v[i].change.revision > resume_rev)
        resume_rev = ev->v[i].change.revision;
    }
  rv_resp_out *o = &k->out;
  rv_resp_out_array(o, 2);
  rv_resp_out_int(o, (int64_t)resume_rev);
  rv_resp_out_array(o, n);
  for (size_t i = 0; i < ev->len; i++) {
    const rv_cfg_event *e = &ev->v[i];
    if (e->watch_id != watch_id)
      continue;
    rv_resp_out_array(o, 22);
    rv__coord_out_kv_int(o, "revision", (int64_t)e->change.revision);
    rv_resp_out_bulk_cstr(o, "key");
    out_str(o, e->change.key);
    rv_resp_out_bulk_cstr(o, "ns");
    out_str(o, e->change.ns);
    rv__coord_out_kv_str(o, "op", rv_cfg_op_name(e->change.op));
    rv_resp_out_bulk_cstr(o, "old");
    out_opt(o, e->old_present, e->old_value);
    rv__coord_out_kv_str(o, "old_layer", rv_cfg_level_name(e->old_level));
    rv_resp_out_bulk_cstr(o, "new");
    out_opt(o, e->new_present, e->new_value);
    rv__coord_out_kv_str(o, "new_layer", rv_cfg_level_name(e->new_level));
    rv_resp_out_bulk_cstr(o, "author");
    out_str(o, e->change.author);
    rv_resp_out_bulk_cstr(o, "reason");
    out_str(o, e->change.reason);
    rv__coord_out_kv_int(o, "time_ms", e->change.wall_ns / RV_NS_PER_MS);
  }
}

static void end_watch(cconn *k) {
  rv_coord *c = k->srv;
  rv_cfg_unwatch(c->cfg, k->watch_id);
  watcher_unlink(c, k);
  rv_timer_stop(k->watch_timer);
  k->watch_id = 0;
}

static void deliver_watch_events(rv_coord *c) {
  if (c->cev.len == 0)
    return;
  for (cconn *k = c->watchers, *next; k; k = next) {
    next = k->watch_next;
    bool mine = false;
    for (size_t i = 0; i < c->cev.len && !mine; i++)
      mine = c->cev.v[i].watch_id == k->watch_id;
    if (!mine)
      continue;
    out_watch_reply(k, &c->cev, k->watch_id, k->watch_resume_rev);
    end_watch(k);
    rv__coord_unblock(k);
  }
  rv_cfg_events_clear(&c->cev);
}

static void on_watch_timeout(void *arg) {
  cconn *k = arg;
  if (k->blocked != BLOCK_WATCH)
    return;
  /* Every write since the watch began was delivered as it happened and none
   * concerned this watcher: it may resume from the current revision. */
  rv_cfg_events none = {0};
  out_watch_reply(k, &none, k->watch_id, rv_cfg_revision(k->srv->cfg));
  end_watch(k);
  rv__coord_unblock(k);
}

/*
 * CFG.WATCH service[/replica] [SINCE rev] [PREFIX p] [TIMEOUT ms]
 * CFG.WATCHRAW ns [ns ...] [SINCE rev] [PREFIX p] [TIMEOUT ms]
 */
static bool cmd_watch_common(cmdctx *x, bool raw) {
  const char *usage = raw ? "CFG.WATCHRAW ns [ns ...] [SINCE rev] [PREFIX p] [TIMEOUT ms]"
                          : "CFG.WATCH service[/replica] [SINCE rev] [PREFIX p] [TIMEOUT ms]";
  const rv_resp_cmd *cmd = x->cmd;
  rv_cfg_watch_req req = {.mode = raw ? RV_CFG_WATCH_RAW : RV_CFG_WATCH_EFFECTIVE,
                          .since_revision = RV_CFG_SINCE_NOW};
  rv_cfg_str nss[RV_CFG_WATCH_NS_MAX];
  int64_t timeout_ms = COORD_WATCH_DEFAULT_MS;
  size_t i = 1;
  if (raw) {
    while (i < cmd->argc && !rv_resp_arg_is(&cmd->argv[i], "SINCE") &&
           !rv_resp_arg_is(&cmd->argv[i], "PREFIX") && !rv_resp_arg_is(&cmd->argv[i], "TIMEOUT")) {
      if (req.nns == RV_CFG_WATCH_NS_MAX) {
        rv__coord_reply_err(x->k, "LIMIT CFG.WATCHRAW watches at most %d namespaces",
                            RV_CFG_WATCH_NS_MAX);
        return false;
      }
      nss[req.nns++] = cs(&cmd->argv[i++]);
    }
    req.ns = nss;
  } else if (cmd->argc >= 2) {
    split_target(&cmd->argv[i++], &req.service, &req.replica);
  }
  if (raw ? req.nns == 0 : cmd->argc < 2) {
    rv__coord_reply_usage(x->k, usage);
    return false;
  }
  for (; i < cmd->argc; i++) {
    const rv_resp_arg *a = &cmd->argv[i];
    int64_t v;
    if (i + 1 >= cmd->argc) {
      rv__coord_reply_usage(x->k, usage);
      return false;
    }
    if (rv_resp_arg_is(a, "PREFIX")) {
      req.key_prefix = cs(&cmd->argv[++i]);
    } else if (rv_resp_arg_is(a, "SINCE") && rv__coord_arg_i64(&cmd->argv[i + 1], &v) && v >= 0) {
      req.since_revision = (uint64_t)v;
      i++;
    } else if (rv_resp_arg_is(a, "TIMEOUT") && rv__coord_arg_i64(&cmd->argv[i + 1], &v)) {
      if (v < 0 || v > COORD_WATCH_MAX_MS) {
        rv__coord_reply_err(x->k, "ERR TIMEOUT %" PRId64 " ms is out of range: must be 0..%d", v,
                            COORD_WATCH_MAX_MS);
        return false;
      }
      timeout_ms = v;
      i++;
    } else {
      rv__coord_reply_usage(x->k, usage);
      return false;
    }
  }
  rv_coord *c = x->k->srv;
  rv_cfg_events replay;
  rv_cfg_events_init(&replay);
  uint64_t wid, start_rev;
  int rc = rv_cfg_watch(c->cfg, &req, &replay, &wid, &start_rev);
  if (rc != RV_CFG_OK) {
    reply_cfg_error(x->k, rc, rv_cfg_errmsg(c->cfg));
    rv_cfg_events_free(&replay);
    return false;
  }
  cconn *k = x->k;
  if (replay.len > 0 || timeout_ms == 0) {
    /* It missed something (or will not wait): answer now. */
    out_watch_reply(k, &replay, wid, start_rev);
    rv_cfg_unwatch(c->cfg, wid);
    rv_cfg_events_free(&replay);
    return false;
  }
  rv_cfg_events_free(&replay);
  k->blocked = BLOCK_WATCH;
  k->watch_id = wid;
  k->watch_resume_rev = start_rev;
  k->block_since_ns = x->now;
  if (!k->watch_timer)
    k->watch_timer = rv_timer_new(c->loop, on_watch_timeout, k);
  rv_timer_set(k->watch_timer, x->now + timeout_ms * RV_NS_PER_MS);
  watcher_link(c, k);
  return true;
}

static bool cmd_watch(cmdctx *x) { return cmd_watch_common(x, false); }
static bool cmd_watchraw(cmdctx *x) { return cmd_watch_common(x, true); }

void rv__coord_cfg_conn_closed(cconn *k) {
  if (k->blocked == BLOCK_WATCH)
    end_watch(k);
  rv_timer_free(k->watch_timer);
  k->watch_timer = NULL;
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

static const struct {
  const char *name;
  cmd_fn fn;
} cfg_commands[] = {
    {"CFG.SET", cmd_set},         {"CFG.DEL", cmd_del},           {"CFG.ROLLBACK", cmd_rollback},
    {"CFG.GET", cmd_get},         {"CFG.EFFECTIVE", cmd_effective}, {"CFG.LIST", cmd_list},
    {"CFG.DUMP", cmd_dump},       {"CFG.TARGETS", cmd_targets},   {"CFG.REGISTER", cmd_register},
    {"CFG.REVISION", cmd_revision}, {"CFG.DRYRUN", cmd_dryrun},   {"CFG.AUDIT", cmd_audit},
    {"CFG.WATCH", cmd_watch},     {"CFG.WATCHRAW", cmd_watchraw},
};

bool rv__coord_cfg_dispatch(cmdctx *x, bool *blocked) {
  for (size_t i = 0; i < sizeof cfg_commands / sizeof cfg_commands[0]; i++) {
    if (rv_resp_arg_is(&x->cmd->argv[0], cfg_commands[i].name)) {
      *blocked = cfg_commands[i].fn(x);
      return true;
    }
  }
  return false;
}
