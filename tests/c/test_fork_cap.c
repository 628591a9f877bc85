/*
 * fork() while other threads lower the cap and churn regions: every child
 * must pass zk_check().
 *
 * Two core bugs this caught, both fixed in fork_child():
 *  - a lower cap is stored (zk_option_set) and only then applied
 *    (zk_option_apply trims); a fork in between left the child over its
 *    cap, with no thread left to trim.  The child now trims.
 *  - a thread creating (or growing, or unmapping) a region at the fork left
 *    the child a descriptor with no ownership-map entry.  The child's census
 *    now drops such descriptors.
 * (From Python, configure() holds the GIL across store and trim, so the
 * first cannot happen through the Python API; a C caller, or any thread in
 * the core without the GIL, can.)
 *
 * Exit status 0 when no child of up to 1000 forks failed zk_check().
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zkalloc.h"

static void *fb_malloc(void *c, size_t n) { (void)c; return malloc(n); }
static void *fb_calloc(void *c, size_t a, size_t b) { (void)c; return calloc(a, b); }
static void *fb_realloc(void *c, void *p, size_t n) { (void)c; return realloc(p, n); }
static void fb_free(void *c, void *p, size_t n) { (void)c; (void)n; free(p); }

static _Atomic int stop;

static void *churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        void *p[4];
        for (int i = 0; i < 4; i++)
            p[i] = zk_h_malloc(&zk_route_cache, (size_t)1 << 20);
        for (int i = 0; i < 4; i++)
            zk_h_free(&zk_route_cache, p[i], 0);
    }
    return NULL;
}

static void *toggle_cap(void *arg)
{
    (void)arg;
    for (unsigned i = 0; !atomic_load(&stop); i++) {
        zk_option_set(ZK_OPT_CACHE_BYTES, i % 2 ? 0 : (uint64_t)1 << 30);
        zk_option_apply(ZK_OPT_CACHE_BYTES);
    }
    return NULL;
}

int main(void)
{
    zk_fallback fb = {NULL, fb_malloc, fb_calloc, fb_realloc, fb_free};
    zk_handler_set_fallback(&fb);
    zk_option_set(ZK_OPT_MIN_BYTES, 4096);
    pthread_t t[3];
    pthread_create(&t[0], NULL, churn, NULL);
    pthread_create(&t[1], NULL, churn, NULL);
    pthread_create(&t[2], NULL, toggle_cap, NULL);
    int bad = 0, forks = 0;
    for (; forks < 1000 && bad == 0; forks++) {
        pid_t pid = fork();
        if (pid == 0) {
            const char *what = NULL;
            if (zk_check(&what) != ZK_OK) {
                fprintf(stderr, "child after fork: %s\n", what);
                _exit(3);
            }
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    printf("%d fork(s), %d child(ren) failed zk_check\n", forks, bad);
    return bad == 0 ? 0 : 1;
}
