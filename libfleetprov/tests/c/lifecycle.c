/*
 * The callback contract, line by line:
 * - free(NULL) is a no-op;
 * - operations before fp_client_connect() are refused and never call back;
 * - fp_client_free() with pending operations: each callback fires exactly once with
 *   FP_ERR_CANCELLED, off the main thread, and free returns only after all returned;
 * - free waits for a slow callback that is already running;
 * - operations waiting for a connection that fails get the connection's error;
 * - fp_client_free() from inside the client's own callback neither deadlocks nor loses the
 *   remaining callbacks, and another callback of the client running meanwhile may still use
 *   the handle (its new operations are refused).
 *
 * argv: ENDPOINT PORT CA CERT KEY SILENT_PORT CLOSED_PORT
 *   SILENT_PORT accepts TCP connections and never answers; CLOSED_PORT refuses them.
 * Prints "lifecycle: ok" on success.
 */
#include <time.h>

#include "test_util.h"

struct op {
    struct board *board;
    int calls;
    fp_result code;
    int off_main_thread;
    int slow;     /* sleep inside the callback before returning */
    int entered;  /* the callback started */
    int finished; /* the callback is about to return */
};

static void op_init(struct op *o, struct board *b) {
    memset(o, 0, sizeof *o);
    o->board = b;
    o->off_main_thread = 1;
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void op_done(struct op *o, const void *response, const fp_error *error) {
    int slow;
    board_lock(o->board);
    CHECK((response == NULL) != (error == NULL));
    o->code = error != NULL ? fp_error_code(error) : FP_OK;
    if (on_main_thread(o->board)) {
        o->off_main_thread = 0;
    }
    o->calls++;
    o->entered = 1;
    slow = o->slow;
    board_post(o->board);
    if (slow) {
        /* Simulates a callback doing slow work; free must wait for it. */
        sleep_ms(300);
    }
    board_lock(o->board);
    o->finished = 1;
    board_post(o->board);
}

DEFINE_OP_CALLBACKS(op_done)

static void not_connected_yet(const struct conn_args *a, struct board *b) {
    struct op o;
    fp_client *c = make_client(a, 0, 5);
    op_init(&o, b);
    CHECK_RESULT(fp_create_keys(c, on_keys, &o), FP_ERR_NOT_CONNECTED);
    CHECK_RESULT(fp_create_from_csr(c, "csr", on_csr, &o), FP_ERR_NOT_CONNECTED);
    CHECK_RESULT(fp_register_thing(c, "FleetTemplate", "t", NULL, on_register, &o),
                 FP_ERR_NOT_CONNECTED);
    CHECK_RESULT(fp_client_disconnect(c), FP_ERR_NOT_CONNECTED);
    fp_client_free(c);
    CHECK(o.calls == 0);
}

/* Operations queued behind a connection that never completes, then free. */
static void free_cancels_pending(const struct conn_args *a, int silent_port, struct board *b) {
    enum { N = 3 };
    struct op keys[N], csr, reg;
    struct lifecycle_log life;
    fp_client *c = make_client(a, silent_port, 5);
    int i;

    lifecycle_log_init(&life, b);
    CHECK_RESULT(fp_client_connect(c, record_lifecycle, &life), FP_OK);
    CHECK_RESULT(fp_client_connect(c, record_lifecycle, &life), FP_ERR_ALREADY_CONNECTED);
    for (i = 0; i < N; i++) {
        op_init(&keys[i], b);
        CHECK_RESULT(fp_create_keys(c, on_keys, &keys[i]), FP_OK);
    }
    op_init(&csr, b);
    CHECK_RESULT(fp_create_from_csr(c, "-----BEGIN CERTIFICATE REQUEST-----", on_csr, &csr),
                 FP_OK);
    op_init(&reg, b);
    reg.slow = 1;
    CHECK_RESULT(fp_register_thing(c, "FleetTemplate", "token", "{}", on_register, &reg), FP_OK);

    /* Nothing can have completed: the server never answers. */
    board_lock(b);
    for (i = 0; i < N; i++) {
        CHECK(keys[i].calls == 0);
    }
    CHECK(csr.calls == 0 && reg.calls == 0 && life.count == 0);
    pthread_mutex_unlock(&b->lock);

    fp_client_free(c);

    /* free returned: every callback ran exactly once, to the end, cancelled. */
    for (i = 0; i < N; i++) {
        CHECK(keys[i].calls == 1 && keys[i].finished);
        CHECK_RESULT(keys[i].code, FP_ERR_CANCELLED);
        CHECK(keys[i].off_main_thread);
    }
    CHECK(csr.calls == 1 && csr.finished);
    CHECK_RESULT(csr.code, FP_ERR_CANCELLED);
    CHECK(reg.calls == 1 && reg.finished);
    CHECK_RESULT(reg.code, FP_ERR_CANCELLED);
    CHECK(life.count == 2);
    CHECK(life.events[0] == FP_EVENT_CONNECTION_FAILURE);
    CHECK_RESULT(life.codes[0], FP_ERR_CANCELLED);
    CHECK(life.events[1] == FP_EVENT_STOPPED);
    CHECK(life.off_main_thread);
}

/* free while a real callback is still running on a library thread. */
static void free_waits_for_running_callback(const struct conn_args *a, struct board *b) {
    struct op keys;
    fp_client *c = make_client(a, 0, 5);
    op_init(&keys, b);
    keys.slow = 1;
    CHECK_RESULT(fp_client_connect(c, NULL, NULL), FP_OK);
    CHECK_RESULT(fp_create_keys(c, on_keys, &keys), FP_OK);
    board_wait(b, &keys.entered, 1);
    fp_client_free(c);
    CHECK(keys.finished);
    CHECK(keys.calls == 1);
    CHECK_RESULT(keys.code, FP_OK);
}

/* A connection that fails: waiting operations get its error, exactly once. */
static void failed_connection_fails_waiting_ops(const struct conn_args *a, int closed_port,
                                                struct board *b) {
    struct op keys;
    struct lifecycle_log life;
    fp_client *c = make_client(a, closed_port, 5);
    lifecycle_log_init(&life, b);
    op_init(&keys, b);
    CHECK_RESULT(fp_client_connect(c, record_lifecycle, &life), FP_OK);
    /* Accepted however quickly the refusal comes; the callback gets the connect error. */
    CHECK_RESULT(fp_create_keys(c, on_keys, &keys), FP_OK);
    board_wait(b, &keys.finished, 1);
    board_wait(b, &life.count, 2);
    CHECK(life.events[0] == FP_EVENT_CONNECTION_FAILURE);
    CHECK_RESULT(life.codes[0], FP_ERR_CONNECTION);
    CHECK(life.events[1] == FP_EVENT_STOPPED);
    CHECK_RESULT(keys.code, FP_ERR_CONNECTION);
    /* After the failure (and its events), a new operation is still accepted and reports the
     * connect error exactly once. */
    op_init(&keys, b);
    CHECK_RESULT(fp_create_keys(c, on_keys, &keys), FP_OK);
    board_wait(b, &keys.finished, 1);
    CHECK_RESULT(keys.code, FP_ERR_CONNECTION);
    fp_client_free(c);
    CHECK(keys.calls == 1);
}

/* fp_client_free() from inside the client's own create-keys callback. */
struct self_free {
    struct board *board;
    fp_client *client;
    struct op chained;
    fp_result chain_start;
    fp_result after_free;
    int freed;
};

static void free_self_from_callback(void *ud, const fp_create_keys_response *r,
                                    const fp_error *e) {
    struct self_free *s = (struct self_free *)ud;
    fp_result chained;
    CHECK(r != NULL && e == NULL);
    /* Start one more operation, then free the client while it is pending. */
    chained = fp_register_thing(s->client, "FleetTemplate", r->certificate_ownership_token,
                                "{\"SerialNumber\":\"self-free\",\"DeviceLocation\":\"Seattle\"}",
                                on_register, &s->chained);
    fp_client_free(s->client);
    board_lock(s->board);
    s->chain_start = chained;
    s->freed = 1;
    board_post(s->board);
}

static void free_inside_own_callback(const struct conn_args *a, struct board *b) {
    struct self_free s;
    struct lifecycle_log life;
    fp_client *c = make_client(a, 0, 5);
    memset(&s, 0, sizeof s);
    s.board = b;
    s.client = c;
    op_init(&s.chained, b);
    lifecycle_log_init(&life, b);
    CHECK_RESULT(fp_client_connect(c, record_lifecycle, &life), FP_OK);
    CHECK_RESULT(fp_create_keys(c, free_self_from_callback, &s), FP_OK);
    board_wait(b, &s.freed, 1);
    CHECK_RESULT(s.chain_start, FP_OK);
    /* The chained operation still calls back exactly once (cancelled or, if it won the race,
     * completed), and the lifecycle still ends with STOPPED. */
    board_wait(b, &s.chained.finished, 1);
    board_wait(b, &life.count, 2);
    CHECK(s.chained.calls == 1);
    CHECK(s.chained.code == FP_ERR_CANCELLED || s.chained.code == FP_OK);
    CHECK(life.events[0] == FP_EVENT_CONNECTION_SUCCESS);
    CHECK(life.events[1] == FP_EVENT_STOPPED);
}

/* One callback frees the client from inside while another callback of the same client is
 * still running: the running one may keep using the handle until it returns. */
struct sibling_free {
    struct board *board;
    fp_client *client;
    struct op refused; /* the operation tried after the free: must never call back */
    int life_waiting;  /* the CONNECTION_SUCCESS callback is running */
    int freed;         /* the create-keys callback has freed the client */
    fp_result after_free;
    fp_result disconnect_after_free;
    int stopped;
};

static void sibling_lifecycle(void *ud, fp_lifecycle_event event, const fp_error *error) {
    struct sibling_free *s = (struct sibling_free *)ud;
    fp_result started, disconnected;
    (void)error;
    if (event == FP_EVENT_STOPPED) {
        board_lock(s->board);
        s->stopped = 1;
        board_post(s->board);
        return;
    }
    if (event != FP_EVENT_CONNECTION_SUCCESS) {
        return;
    }
    board_lock(s->board);
    s->life_waiting = 1;
    pthread_cond_broadcast(&s->board->changed);
    board_wait_locked(s->board, &s->freed, 1);
    pthread_mutex_unlock(&s->board->lock);
    /* Still inside a callback of the client: the handle is usable, new work refused. */
    started = fp_create_keys(s->client, on_keys, &s->refused);
    disconnected = fp_client_disconnect(s->client);
    fp_client_free(s->client); /* a second free from a running callback does nothing */
    board_lock(s->board);
    s->after_free = started;
    s->disconnect_after_free = disconnected;
    board_post(s->board);
}

static void sibling_free_keys(void *ud, const fp_create_keys_response *r, const fp_error *e) {
    struct sibling_free *s = (struct sibling_free *)ud;
    (void)r;
    (void)e;
    board_wait(s->board, &s->life_waiting, 1);
    fp_client_free(s->client);
    board_lock(s->board);
    s->freed = 1;
    board_post(s->board);
}

static void free_while_sibling_callback_runs(const struct conn_args *a, struct board *b) {
    struct sibling_free s;
    fp_client *c = make_client(a, 0, 5);
    memset(&s, 0, sizeof s);
    s.board = b;
    s.client = c;
    s.after_free = FP_OK;
    op_init(&s.refused, b);
    CHECK_RESULT(fp_client_connect(c, sibling_lifecycle, &s), FP_OK);
    CHECK_RESULT(fp_create_keys(c, sibling_free_keys, &s), FP_OK);
    board_wait(b, &s.stopped, 1);
    CHECK_RESULT(s.after_free, FP_ERR_CANCELLED);
    CHECK_RESULT(s.disconnect_after_free, FP_OK);
    CHECK(s.refused.calls == 0);
}

/* The main thread frees the client while one of its callbacks runs, and that callback frees
 * it too: the second free does nothing (no double free), and the first waits for it. */
struct both_free {
    struct board *board;
    fp_client *client;
    int entered;
    int finished;
};

static void free_too_from_callback(void *ud, const fp_create_keys_response *r,
                                   const fp_error *e) {
    struct both_free *s = (struct both_free *)ud;
    (void)r;
    (void)e;
    board_lock(s->board);
    s->entered = 1;
    board_post(s->board);
    /* Wait until the main thread's fp_client_free() has begun: the client then refuses
     * new work with FP_ERR_CANCELLED. */
    while (fp_client_connect(s->client, NULL, NULL) != FP_ERR_CANCELLED) {
        sleep_ms(1);
    }
    fp_client_free(s->client);
    board_lock(s->board);
    s->finished = 1;
    board_post(s->board);
}

static void free_from_main_and_from_callback(const struct conn_args *a, struct board *b) {
    struct both_free s;
    fp_client *c = make_client(a, 0, 5);
    memset(&s, 0, sizeof s);
    s.board = b;
    s.client = c;
    CHECK_RESULT(fp_client_connect(c, NULL, NULL), FP_OK);
    CHECK_RESULT(fp_create_keys(c, free_too_from_callback, &s), FP_OK);
    board_wait(b, &s.entered, 1);
    fp_client_free(c);
    CHECK(s.finished);
}

int main(int argc, char **argv) {
    struct conn_args a;
    struct board b;
    int silent_port, closed_port;

    parse_conn_args(argc, argv, 2, &a);
    silent_port = atoi(argv[6]);
    closed_port = atoi(argv[7]);
    board_init(&b);

    fp_client_free(NULL);
    fp_client_options_free(NULL);

    not_connected_yet(&a, &b);
    printf("not connected: ok\n");
    free_cancels_pending(&a, silent_port, &b);
    printf("free cancels pending: ok\n");
    free_waits_for_running_callback(&a, &b);
    printf("free waits for running callback: ok\n");
    failed_connection_fails_waiting_ops(&a, closed_port, &b);
    printf("failed connection: ok\n");
    free_inside_own_callback(&a, &b);
    printf("free inside own callback: ok\n");
    free_while_sibling_callback_runs(&a, &b);
    printf("free while a sibling callback runs: ok\n");
    free_from_main_and_from_callback(&a, &b);
    printf("free from main and from a callback: ok\n");

    board_destroy(&b);
    printf("lifecycle: ok\n");
    return 0;
}
