/*
 * Strongly connected components of a directed graph in compressed form:
 * node v's edges go to dst[off[v]] .. dst[off[v + 1] - 1].  Used by the
 * local wait-for graph (waitgraph.c) and by the cross-process one (ravel
 * unravel): a component of more than one node, or a node with an edge to
 * itself, is a deadlock.
 */
#ifndef RAVEL_OBS_SCC_H
#define RAVEL_OBS_SCC_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Tarjan's algorithm, iterative (a deadlocked service can have thousands of
 * threads: the depth of the search must not be the C stack's).  comp[v] gets
 * v's component number, *ncomp their count.  false on ENOMEM.
 */
bool rv_scc(size_t n, const size_t *off, const size_t *dst, size_t *comp, size_t *ncomp);

#endif
