/* The command line (C side): lua/commands.lua parses argv, then the daemon
 * modes run in C or a command's Lua function runs (src/cli.c). */
#ifndef TS_CLI_H
#define TS_CLI_H
#include <lua.h>
#include "ts_collect.h"

int ts_cli_main(int argc, char **argv);
/* `once`'s exit status from the poll's outcome: 1 when an endpoint failed, 3 when
 * the plan came from the cached Traffic Ops data (daemon.stale), else rc. */
int ts_cli_once_status(lua_State *L, ts_collector *coll, int rc);

#endif
