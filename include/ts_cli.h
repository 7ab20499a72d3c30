/* The command line (C side): global options, then the daemon modes in C or
 * a subcommand of lua/cli.lua. */
#ifndef TS_CLI_H
#define TS_CLI_H

int ts_cli_main(int argc, char **argv);

#endif
