/* tstats entry point (C side): everything runs from ts_cli_main. */
#include "ts_cli.h"

int main(int argc, char **argv) { return ts_cli_main(argc, argv); }
