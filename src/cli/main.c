/* The ravel command: subcommands are added as their components land. */
#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f, "usage: ravel COMMAND [OPTIONS]\n\n"
             "commands:\n"
             "  help       show this help\n"
             "  version    print the version\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
      strcmp(argv[1], "-h") == 0) {
    usage(stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
    printf("ravel 0.1.0\n");
    return 0;
  }
  fprintf(stderr, "ravel: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
