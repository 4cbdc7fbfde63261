/* The one table that maps rv_err codes to names and text. */
#include "rt/rt.h"

#define RV__ERR_ROW(name, val, text) {val, #name, text},
static const struct {
  int code;
  const char *name;
  const char *text;
} rv__errors[] = {RV_ERRORS(RV__ERR_ROW)};
#undef RV__ERR_ROW

const char *rv_strerror(int err) {
  for (size_t i = 0; i < sizeof rv__errors / sizeof rv__errors[0]; i++)
    if (rv__errors[i].code == err)
      return rv__errors[i].text;
  return "unknown error";
}

const char *rv_errname(int err) {
  for (size_t i = 0; i < sizeof rv__errors / sizeof rv__errors[0]; i++)
    if (rv__errors[i].code == err)
      return rv__errors[i].name;
  return "RV_E?";
}
