/* Strongly connected components: see scc.h. */
#include "obs/scc.h"

#include <stdlib.h>

bool rv_scc(size_t n, const size_t *off, const size_t *dst, size_t *comp, size_t *ncomp) {
  const size_t UNSET = (size_t)-1;
  size_t *index = malloc((n ? n : 1) * sizeof *index);
  size_t *low = malloc((n ? n : 1) * sizeof *low);
  bool *on = calloc(n ? n : 1, sizeof *on);
  size_t *stack = malloc((n ? n : 1) * sizeof *stack);
  size_t *cs_node = malloc((n ? n : 1) * sizeof *cs_node); /* call stack */
  size_t *cs_edge = malloc((n ? n : 1) * sizeof *cs_edge);
  bool ok = index && low && on && stack && cs_node && cs_edge;
  if (ok) {
    for (size_t i = 0; i < n; i++)
      index[i] = UNSET;
    size_t next = 0, sp = 0, nc = 0;
    for (size_t root = 0; root < n; root++) {
      if (index[root] != UNSET)
        continue;
      size_t csp = 0;
      cs_node[csp] = root;
      cs_edge[csp] = off[root];
      csp++;
      index[root] = low[root] = next++;
      stack[sp++] = root;
      on[root] = true;
      while (csp > 0) {
        size_t v = cs_node[csp - 1];
        if (cs_edge[csp - 1] < off[v + 1]) {
          size_t w = dst[cs_edge[csp - 1]++];
          if (index[w] == UNSET) {
            index[w] = low[w] = next++;
            stack[sp++] = w;
            on[w] = true;
            cs_node[csp] = w;
            cs_edge[csp] = off[w];
            csp++;
          } else if (on[w] && index[w] < low[v]) {
            low[v] = index[w];
          }
          continue;
        }
        if (low[v] == index[v]) {
          size_t w;
          do {
            w = stack[--sp];
            on[w] = false;
            comp[w] = nc;
          } while (w != v);
          nc++;
        }
        csp--;
        if (csp > 0) {
          size_t u = cs_node[csp - 1];
          if (low[v] < low[u])
            low[u] = low[v];
        }
      }
    }
    *ncomp = nc;
  }
  free(index);
  free(low);
  free(on);
  free(stack);
  free(cs_node);
  free(cs_edge);
  return ok;
}
