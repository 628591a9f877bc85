/*
 * What the threaded C tests share (test_core.c, stress_discard.c): a block
 * of the core's memory with the byte it is stamped with, handed to another
 * thread through that thread's mailbox (a cross-thread free), and a
 * xorshift generator, one seed per thread.
 */
#ifndef ZK_TEST_THREADS_H
#define ZK_TEST_THREADS_H

#include <pthread.h>
#include <stdlib.h>

typedef struct { void *p; size_t size; unsigned char v; } block;

#define MAILBOX 64
typedef struct {
    pthread_mutex_t lock;
    block items[MAILBOX];
    int n;
} mailbox;

static mailbox *boxes;

static inline void open_mailboxes(int n)
{
    boxes = calloc((size_t)n, sizeof *boxes);
    for (int i = 0; i < n; i++)
        pthread_mutex_init(&boxes[i].lock, NULL);
}

static inline void close_mailboxes(int n)
{
    for (int i = 0; i < n; i++)
        pthread_mutex_destroy(&boxes[i].lock);
    free(boxes);
    boxes = NULL;
}

/* Leave b for thread `to`; 0 when its mailbox is full. */
static inline int post(int to, block b)
{
    mailbox *m = &boxes[to];
    pthread_mutex_lock(&m->lock);
    int ok = m->n < MAILBOX;
    if (ok)
        m->items[m->n++] = b;
    pthread_mutex_unlock(&m->lock);
    return ok;
}

/* A block another thread left for thread `me`; 0 when there is none. */
static inline int take(int me, block *out)
{
    mailbox *m = &boxes[me];
    pthread_mutex_lock(&m->lock);
    int ok = m->n > 0;
    if (ok)
        *out = m->items[--m->n];
    pthread_mutex_unlock(&m->lock);
    return ok;
}

static inline unsigned next_rand(unsigned *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

#endif
