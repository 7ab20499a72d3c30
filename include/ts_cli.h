/* The command line (C side): lua/commands.lua parses argv, then the daemon
 * modes run in C or a command's Lua function runs (src/cli.c). */
#ifndef TS_CLI_H
#define TS_CLI_H

int ts_cli_main(int argc, char **argv);

#endif
