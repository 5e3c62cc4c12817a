/*
 * Helpers shared by the C API tests: assertions that name the failing line, a small
 * mutex/condvar "board" that callbacks post to and the main thread waits on, and the
 * connection arguments every test receives on its command line.
 *
 * Written to compile as C11 (with POSIX) and as C++.
 */
#ifndef FLEETPROV_TEST_UTIL_H
#define FLEETPROV_TEST_UTIL_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetprov.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Asserts that an fp_result expression has the expected value, naming both on failure. */
#define CHECK_RESULT(expr, expected)                                                               \
    do {                                                                                           \
        int got_ = (int)(expr);                                                                    \
        int want_ = (int)(expected);                                                               \
        if (got_ != want_) {                                                                       \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", __FILE__, __LINE__,  \
                    #expr, got_, fp_result_str(got_), want_, fp_result_str(want_));                \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(actual, expected)                                                                \
    do {                                                                                           \
        const char *a_ = (actual);                                                                 \
        const char *e_ = (expected);                                                               \
        if (a_ == NULL || strcmp(a_, e_) != 0) {                                                   \
            fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, __LINE__,          \
                    #actual, a_ == NULL ? "(null)" : a_, e_);                                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* What every test gets on its command line: endpoint port ca cert key. */
struct conn_args {
    const char *endpoint;
    int port;
    const char *ca;
    const char *cert;
    const char *key;
};

static inline void parse_conn_args(int argc, char **argv, int extra, struct conn_args *out) {
    if (argc < 6 + extra) {
        fprintf(stderr, "usage: %s ENDPOINT PORT CA CERT KEY ...\n", argv[0]);
        exit(2);
    }
    out->endpoint = argv[1];
    out->port = atoi(argv[2]);
    out->ca = argv[3];
    out->cert = argv[4];
    out->key = argv[5];
}

/* Options for the emulator at `a`, on `port` (0: a->port), with MQTT `version`. */
static inline fp_client_options *make_options(const struct conn_args *a, int port, int version) {
    fp_client_options *o = NULL;
    CHECK_RESULT(fp_client_options_new(a->endpoint, &o), FP_OK);
    CHECK_RESULT(fp_client_options_set_port(o, (uint16_t)(port != 0 ? port : a->port)), FP_OK);
    CHECK_RESULT(fp_client_options_set_ca_file(o, a->ca), FP_OK);
    CHECK_RESULT(fp_client_options_set_cert_file(o, a->cert), FP_OK);
    CHECK_RESULT(fp_client_options_set_key_file(o, a->key), FP_OK);
    CHECK_RESULT(fp_client_options_set_mqtt_version(o, version), FP_OK);
    return o;
}

static inline fp_client *make_client(const struct conn_args *a, int port, int version) {
    fp_client *c = NULL;
    fp_client_options *o = make_options(a, port, version);
    CHECK_RESULT(fp_client_new(o, &c), FP_OK);
    CHECK(c != NULL);
    /* The client copied the options. */
    fp_client_options_free(o);
    return c;
}

/* A board that callbacks post to under a mutex and the main thread waits on. */
struct board {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pthread_t main_thread;
};

static inline void board_init(struct board *b) {
    CHECK(pthread_mutex_init(&b->lock, NULL) == 0);
    CHECK(pthread_cond_init(&b->changed, NULL) == 0);
    b->main_thread = pthread_self();
}

static inline void board_destroy(struct board *b) {
    pthread_cond_destroy(&b->changed);
    pthread_mutex_destroy(&b->lock);
}

static inline void board_lock(struct board *b) {
    pthread_mutex_lock(&b->lock);
}

/* Wakes the waiters and unlocks. */
static inline void board_post(struct board *b) {
    pthread_cond_broadcast(&b->changed);
    pthread_mutex_unlock(&b->lock);
}

/* Waits (lock held by the caller) until *counter >= target. */
static inline void board_wait_locked(struct board *b, const int *counter, int target) {
    while (*counter < target) {
        pthread_cond_wait(&b->changed, &b->lock);
    }
}

static inline void board_wait(struct board *b, const int *counter, int target) {
    board_lock(b);
    board_wait_locked(b, counter, target);
    pthread_mutex_unlock(&b->lock);
}

/* Callbacks must never run on the thread that started the operation. */
static inline int on_main_thread(const struct board *b) {
    return pthread_equal(pthread_self(), b->main_thread);
}

static inline char *test_strdup(const char *s) {
    size_t n;
    char *out;
    if (s == NULL) {
        return NULL;
    }
    n = strlen(s) + 1;
    out = (char *)malloc(n);
    CHECK(out != NULL);
    memcpy(out, s, n);
    return out;
}

/* Lifecycle events recorded in order. */
struct lifecycle_log {
    struct board *board;
    int count;
    fp_lifecycle_event events[8];
    fp_result codes[8];
    int off_main_thread; /* 1 while every event arrived off the main thread */
};

static inline void record_lifecycle(void *user_data, fp_lifecycle_event event,
                                    const fp_error *error) {
    struct lifecycle_log *log = (struct lifecycle_log *)user_data;
    board_lock(log->board);
    if (log->count < 8) {
        log->events[log->count] = event;
        log->codes[log->count] = error != NULL ? fp_error_code(error) : FP_OK;
    }
    if (on_main_thread(log->board)) {
        log->off_main_thread = 0;
    }
    /* error is non-NULL exactly for failure and disconnection. */
    if ((error != NULL) !=
        (event == FP_EVENT_CONNECTION_FAILURE || event == FP_EVENT_DISCONNECTED)) {
        fprintf(stderr, "lifecycle event %d with error %p\n", (int)event, (const void *)error);
        exit(1);
    }
    log->count++;
    board_post(log->board);
}

static inline void lifecycle_log_init(struct lifecycle_log *log, struct board *b) {
    memset(log, 0, sizeof *log);
    log->board = b;
    log->off_main_thread = 1;
}

/* A valid PEM CSR (P-256 key, CN fleetprov-c-test) for CreateCertificateFromCsr. */
#define TEST_CSR_PEM \
    "-----BEGIN CERTIFICATE REQUEST-----\n" \
    "MIHUMH0CAQAwGzEZMBcGA1UEAwwQZmxlZXRwcm92LWMtdGVzdDBZMBMGByqGSM49\n" \
    "AgEGCCqGSM49AwEHA0IABACAY7h3p4d7Uh+nfeUmCEVW3rxF83h2ADtjC4obDqPC\n" \
    "SyqiAgvXezTvjbs0ZmEDG/6I1VwkxrKYpzEaUWfakUigADAKBggqhkjOPQQDAgNH\n" \
    "ADBEAiA58EUnHiuUy88he3bLsoUTpnMZx9I6pQaCgvixSs3M9AIgHaX7SkGt3WAQ\n" \
    "5ST9/qISA+geLhDrY0xkrgK6gbbp/1I=\n" \
    "-----END CERTIFICATE REQUEST-----\n"

/* Defines on_keys, on_csr and on_register, the three operation callbacks of a test that
 * treats every outcome alike: each passes its `struct op` (user_data), response (NULL or not)
 * and error to `done(struct op *, const void *, const fp_error *)`. */
#define DEFINE_OP_CALLBACKS(done)                                                                  \
    static void on_keys(void *ud, const fp_create_keys_response *r, const fp_error *e) {          \
        done((struct op *)ud, r, e);                                                               \
    }                                                                                              \
    static void on_csr(void *ud, const fp_create_from_csr_response *r, const fp_error *e) {       \
        done((struct op *)ud, r, e);                                                               \
    }                                                                                              \
    static void on_register(void *ud, const fp_register_thing_response *r, const fp_error *e) {   \
        done((struct op *)ud, r, e);                                                               \
    }

#endif
