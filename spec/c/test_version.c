/* C unit test of the version (ctest `version`, C core side): the version
 * written in CMakeLists.txt's project(VERSION) is the one the generated
 * ts_version.h carries, the one `tstats --version` prints, the one Lua sees as
 * tstats.version and the one in the HTTP client's default User-Agent (read off
 * the wire by a one-shot listener in a child process). No fallback anywhere. */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ts_api.h"
#include "ts_lua.h"
#include "ts_http.h"
#include "ts_log.h"
#include "ts_version.h"

#include "check.h"

/* The x.y.z of `project(tstats VERSION x.y.z` in the tree's CMakeLists.txt. */
static void project_version(char *out, size_t cap) {
    FILE *f = fopen(TS_SOURCE_DIR "/CMakeLists.txt", "r");
    if (!f) { perror(TS_SOURCE_DIR "/CMakeLists.txt"); exit(2); }
    char line[512];
    out[0] = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "project(tstats VERSION ");
        if (p != line) continue;
        p += strlen("project(tstats VERSION ");
        size_t n = strspn(p, "0123456789.");
        if (n == 0 || n >= cap) break;
        memcpy(out, p, n);
        out[n] = 0;
        break;
    }
    fclose(f);
    if (!out[0]) { fprintf(stderr, "no project(tstats VERSION x.y.z) in CMakeLists.txt\n"); exit(2); }
}

/* Child: accept one connection, send its User-Agent value up the pipe, answer 200. */
static void serve_once(int lfd, int wfd) {
    int c = accept(lfd, NULL, NULL);
    if (c < 0) _exit(3);
    char req[8192];
    size_t n = 0;
    while (n < sizeof req - 1) {
        ssize_t r = read(c, req + n, sizeof req - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        req[n] = 0;
        if (strstr(req, "\r\n\r\n")) break;
    }
    req[n] = 0;
    const char *ua = strcasestr(req, "\r\nUser-Agent: ");
    if (ua) {
        ua += strlen("\r\nUser-Agent: ");
        size_t l = strcspn(ua, "\r\n");
        if (write(wfd, ua, l) != (ssize_t)l) _exit(4);
    }
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    if (write(c, resp, strlen(resp)) < 0) _exit(5);
    close(c);
    _exit(0);
}

static void test_user_agent(const char *want) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) != 0) { perror("listener"); exit(2); }
    int pfd[2];
    if (pipe(pfd) != 0) { perror("pipe"); exit(2); }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(2); }
    if (pid == 0) { close(pfd[0]); serve_once(lfd, pfd[1]); }
    close(pfd[1]);
    close(lfd);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(a.sin_port));
    ts_http_req req = {.url = url};
    req.opts.timeout_ms = 10000;
    ts_http_result r;
    ts_http_result_init(&r);
    int rc = ts_http_perform(&req, &r);
    CHECK(rc == 0 && r.status == 200, "request answered (rc %d, status %ld, %s)", rc, r.status, r.errmsg);
    ts_http_result_free(&r);
    char got[256];
    ssize_t n = read(pfd[0], got, sizeof got - 1);
    got[n > 0 ? n : 0] = 0;
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "listener exited cleanly (status %d)", st);
    char ua[64];
    snprintf(ua, sizeof ua, "tstats/%s", want);
    CHECK(strcmp(got, ua) == 0, "User-Agent '%s', want '%s'", got, ua);
}

static void test_cli(const char *tstats, const char *want) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --version", tstats);
    FILE *p = popen(cmd, "r");
    char out[256] = "";
    if (!p || !fgets(out, sizeof out, p)) out[0] = 0;
    int st = p ? pclose(p) : -1;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "tstats %s (", want);
    CHECK(st == 0 && strncmp(out, prefix, strlen(prefix)) == 0, "`tstats --version` printed '%s' (exit %d), want '%s...'",
          out, st, prefix);
}

static void test_lua(const char *want) {
    lua_State *L = ts_lua_new(0, ts_api_open);
    CHECK(L != NULL, "state");
    if (!L) return;
    CHECK(ts_lua_require(L, "tstats") == 0 && lua_istable(L, -1), "require 'tstats'");
    lua_getfield(L, -1, "version");
    const char *v = lua_tostring(L, -1);
    CHECK(v && strcmp(v, want) == 0, "tstats.version '%s', want '%s'", v ? v : "(nil)", want);
    ts_lua_close(L);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: test_version PATH/TO/tstats\n"); return 2; }
    ts_log_set_level(TS_LOG_ERROR);
    char want[64];
    project_version(want, sizeof want);
    CHECK(strcmp(TS_VERSION, want) == 0, "ts_version.h says %s, project(VERSION) %s", TS_VERSION, want);
    if (ts_http_global_init() != 0) { fprintf(stderr, "curl init failed\n"); return 2; }
    test_user_agent(want);
    test_cli(argv[1], want);
    test_lua(want);
    ts_http_global_cleanup();
    return check_report("test_version");
}
