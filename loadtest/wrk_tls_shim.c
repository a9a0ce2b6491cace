/* LD_PRELOAD shim for wrk in the loadtest's TLS scenarios (compiled by compare.py into its
 * temp dir with `cc -shared -fPIC`; no OpenSSL headers needed, every OpenSSL function is
 * looked up at run time in the libssl wrk already loaded).
 *
 * Why: wrk reconnects a closed connection with the same SSL object (SSL_shutdown, then
 * SSL_clear, which keeps the session), so with `Connection: close` every connection after
 * the first resumes its TLS session (TLS 1.3 PSK, or a TLS 1.2 session ID/ticket) when the
 * server allows it: about 99.7 % of them against nginx in a test. The tls-handshake
 * scenario is about full handshakes, so with RW_TLS_NORESUME=1 this shim drops the session
 * in SSL_clear: every connection starts a fresh, full handshake.
 *
 * It also counts what wrk negotiated: every successful SSL_connect, how many were
 * resumptions, and the protocol, cipher suite and key-exchange group of each. When wrk exits
 * it prints one line to stderr, which compare.py reads:
 *   rw-tls-shim: handshakes N resumed R noresume 0|1 | TLSv1.3 TLS_AES_256_GCM_SHA384 x25519 = N; ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
typedef struct ssl_cipher_st SSL_CIPHER;

#define SSL_CTRL_GET_NEGOTIATED_GROUP 134
#define MAX_KINDS 8

static unsigned long handshakes, resumed;
static struct { char what[160]; unsigned long n; } kinds[MAX_KINDS];
static int nkinds, overflow;

static void *sym(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) f = dlsym(RTLD_DEFAULT, name);
    return f;
}

static int noresume(void) {
    const char *v = getenv("RW_TLS_NORESUME");
    return v && v[0] == '1';
}

int SSL_clear(SSL *s) {
    static int (*real)(SSL *);
    static int (*set_session)(SSL *, SSL_SESSION *);
    if (!real) real = (int (*)(SSL *))sym("SSL_clear");
    if (!set_session) set_session = (int (*)(SSL *, SSL_SESSION *))sym("SSL_set_session");
    if (noresume() && set_session) set_session(s, NULL);
    return real(s);
}

static void note(SSL *s) {
    static int (*reused)(const SSL *);
    static const char *(*version)(const SSL *);
    static const SSL_CIPHER *(*cur)(const SSL *);
    static const char *(*cname)(const SSL_CIPHER *);
    static long (*ctrl)(SSL *, int, long, void *);
    static const char *(*gname)(SSL *, int);
    if (!reused) {
        reused = (int (*)(const SSL *))sym("SSL_session_reused");
        version = (const char *(*)(const SSL *))sym("SSL_get_version");
        cur = (const SSL_CIPHER *(*)(const SSL *))sym("SSL_get_current_cipher");
        cname = (const char *(*)(const SSL_CIPHER *))sym("SSL_CIPHER_get_name");
        ctrl = (long (*)(SSL *, int, long, void *))sym("SSL_ctrl");
        gname = (const char *(*)(SSL *, int))sym("SSL_group_to_name");
    }
    /* wrk -t1: one thread makes every connection; atomics anyway, in case of -tN. */
    __atomic_add_fetch(&handshakes, 1, __ATOMIC_RELAXED);
    if (reused && reused(s)) __atomic_add_fetch(&resumed, 1, __ATOMIC_RELAXED);
    char what[160];
    const SSL_CIPHER *c = cur ? cur(s) : NULL;
    const char *g = NULL;
    if (ctrl && gname) {
        long nid = ctrl(s, SSL_CTRL_GET_NEGOTIATED_GROUP, 0, NULL);
        if (nid > 0) g = gname(s, (int)nid);
    }
    snprintf(what, sizeof what, "%s %s %s", version ? version(s) : "?", (c && cname) ? cname(c) : "?",
             g ? g : "?");
    for (int i = 0; i < nkinds; i++) {
        if (strcmp(kinds[i].what, what) == 0) {
            kinds[i].n++;
            return;
        }
    }
    if (nkinds < MAX_KINDS) {
        strcpy(kinds[nkinds].what, what);
        kinds[nkinds++].n = 1;
    } else {
        overflow++;
    }
}

int SSL_connect(SSL *s) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))sym("SSL_connect");
    int r = real(s);
    if (r == 1) note(s);
    return r;
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "rw-tls-shim: handshakes %lu resumed %lu noresume %d |", handshakes, resumed, noresume());
    for (int i = 0; i < nkinds; i++) fprintf(stderr, "%s %s = %lu", i ? ";" : "", kinds[i].what, kinds[i].n);
    if (overflow) fprintf(stderr, "; (more kinds) = %d", overflow);
    fprintf(stderr, "\n");
}
