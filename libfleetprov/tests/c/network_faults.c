/*
 * The network half of the bad-input table: what the C API reports when the broker or the
 * service misbehaves, or the TLS identities do not fit. One case per run, named on the command
 * line; the driver (tests/c_api.rs) gives each case its own emulator with the matching fault,
 * or a certificate that must fail.
 *
 * For every case:
 * - each started operation calls back exactly once, off the main thread, with exactly one of
 *   response and error, and the case's fp_result; a service rejection carries AWS's fields,
 *   any other error none;
 * - the lifecycle events arrive in the case's order, FP_EVENT_STOPPED last and once, and
 *   nothing arrives after fp_client_free() has returned;
 * - once the connection has failed or was lost, new operations are refused at once.
 *
 * argv: ENDPOINT PORT CA CERT KEY CASE [PROXY_PORT]
 *   PROXY_PORT: an HTTP CONNECT proxy to reach the endpoint through (server name case).
 * Prints "CASE: <fp_result_str> | <message>" for the operation that ran first, then
 * "network_faults: ok".
 */
#include "test_util.h"

enum op_kind { OP_KEYS, OP_CSR, OP_CSR_NOT_PEM, OP_REGISTER };

/* How the connection ends up, as the lifecycle callback sees it before fp_client_free(). */
enum ending {
    STAYS_UP,  /* CONNECTION_SUCCESS; STOPPED only after free */
    LOST,      /* CONNECTION_SUCCESS, DISCONNECTED (error), STOPPED */
    NEVER_UP,  /* CONNECTION_FAILURE (error), STOPPED */
};

struct fault_case {
    const char *name;
    int mqtt_version;
    enum op_kind op;
    int ops;                       /* operations of that kind, started back to back */
    uint32_t connect_timeout_ms;   /* 0: the default (30 s) */
    uint32_t operation_timeout_ms; /* 0: the default (30 s) */
    enum ending ending;
    fp_result connection_error;    /* the error of FAILURE or DISCONNECTED */
    fp_result expected;            /* the result of the operation that runs first */
    fp_result queued;              /* the result of the one queued behind it, if ops is 2 */
    int status;                    /* for FP_ERR_REJECTED: AWS's statusCode and errorCode */
    const char *aws_code;
};

/* A timeout is short only where that timeout is the expected outcome; the others keep the
 * defaults, so a slow run (valgrind) cannot turn another outcome into a timeout. */
static const struct fault_case CASES[] = {
    /* name, MQTT, operation, ops, connect and operation timeouts, ending, connection error,
     * result of the first operation, of the queued one, rejection */
    /* Replies that cannot be used. */
    {"reply_not_json", 5, OP_KEYS, 1, 0, 0, STAYS_UP, FP_OK, FP_ERR_BAD_REPLY, FP_OK, 0, NULL},
    {"reply_wrong_shape", 5, OP_CSR, 1, 0, 0, STAYS_UP, FP_OK, FP_ERR_BAD_REPLY, FP_OK, 0, NULL},
    {"reply_wrong_types", 3, OP_REGISTER, 1, 0, 0, STAYS_UP, FP_OK, FP_ERR_BAD_REPLY, FP_OK, 0,
     NULL},
    /* 1 MiB: on 3.1.1 the packet's length alone ends the connection (the operation queued
     * behind never got its turn: it finds the connection gone); on 5 the client announced its
     * maximum packet size, so the broker drops the reply and the operation times out. */
    {"reply_1mib_mqtt311", 3, OP_KEYS, 2, 0, 0, LOST, FP_ERR_BAD_REPLY, FP_ERR_BAD_REPLY,
     FP_ERR_DISCONNECTED, 0, NULL},
    {"reply_1mib_mqtt5", 5, OP_KEYS, 1, 0, 500, STAYS_UP, FP_OK, FP_ERR_TIMEOUT, FP_OK, 0, NULL},
    {"reply_wrong_topic", 5, OP_KEYS, 1, 0, 500, STAYS_UP, FP_OK, FP_ERR_TIMEOUT, FP_OK, 0, NULL},
    {"service_silent", 5, OP_REGISTER, 1, 0, 500, STAYS_UP, FP_OK, FP_ERR_TIMEOUT, FP_OK, 0, NULL},
    /* A refused service request: the rejection's fields reach C. */
    {"csr_not_pem", 5, OP_CSR_NOT_PEM, 1, 0, 0, STAYS_UP, FP_OK, FP_ERR_REJECTED, FP_OK, 400,
     "InvalidCsr"},
    /* The broker. */
    {"broker_closes_mid_operation", 5, OP_KEYS, 2, 0, 0, LOST, FP_ERR_DISCONNECTED,
     FP_ERR_DISCONNECTED, FP_ERR_DISCONNECTED, 0, NULL},
    {"broker_closes_mid_operation_mqtt311", 3, OP_REGISTER, 2, 0, 0, LOST, FP_ERR_DISCONNECTED,
     FP_ERR_DISCONNECTED, FP_ERR_DISCONNECTED, 0, NULL},
    {"no_connack", 5, OP_KEYS, 2, 500, 0, NEVER_UP, FP_ERR_TIMEOUT, FP_ERR_TIMEOUT, FP_ERR_TIMEOUT,
     0, NULL},
    {"no_suback", 5, OP_KEYS, 1, 0, 500, STAYS_UP, FP_OK, FP_ERR_TIMEOUT, FP_OK, 0, NULL},
    {"subscribe_refused", 5, OP_KEYS, 1, 0, 0, STAYS_UP, FP_OK, FP_ERR_SUBSCRIBE_REFUSED, FP_OK, 0,
     NULL},
    {"subscribe_refused_mqtt311", 3, OP_CSR, 1, 0, 0, STAYS_UP, FP_OK, FP_ERR_SUBSCRIBE_REFUSED,
     FP_OK, 0, NULL},
    /* TLS and the broker's admission. */
    {"server_name_mismatch", 5, OP_KEYS, 1, 0, 0, NEVER_UP, FP_ERR_TLS, FP_ERR_TLS, FP_OK, 0, NULL},
    {"expired_certificate", 5, OP_KEYS, 1, 0, 0, NEVER_UP, FP_ERR_TLS, FP_ERR_TLS, FP_OK, 0, NULL},
    {"expired_certificate_mqtt311", 3, OP_KEYS, 1, 0, 0, NEVER_UP, FP_ERR_TLS, FP_ERR_TLS, FP_OK, 0,
     NULL},
    {"unregistered_certificate", 5, OP_KEYS, 1, 0, 0, NEVER_UP, FP_ERR_CONNECTION_REFUSED,
     FP_ERR_CONNECTION_REFUSED, FP_OK, 0, NULL},
};

enum { MAX_OPS = 2 };

struct op {
    struct board *board;
    int calls;
    fp_result code;
    int off_main_thread;
    int status;
    int has_aws_code;
    char aws_code[64];
    char message[512];
};

static struct board board;
static int ops_done; /* operations that have called back, under board.lock */

static void op_done(struct op *o, const void *response, const fp_error *error) {
    board_lock(o->board);
    CHECK((response == NULL) != (error == NULL));
    if (on_main_thread(o->board)) {
        o->off_main_thread = 0;
    }
    o->code = error != NULL ? fp_error_code(error) : FP_OK;
    if (error != NULL) {
        const char *aws_code = fp_error_aws_code(error);
        CHECK(fp_error_message(error) != NULL);
        strncpy(o->message, fp_error_message(error), sizeof o->message - 1);
        o->status = fp_error_status_code(error);
        o->has_aws_code = aws_code != NULL;
        if (aws_code != NULL) {
            strncpy(o->aws_code, aws_code, sizeof o->aws_code - 1);
        }
        /* AWS's fields travel with rejections only. */
        CHECK((o->code == FP_ERR_REJECTED) == (aws_code != NULL));
        CHECK((o->code == FP_ERR_REJECTED) == (fp_error_aws_message(error) != NULL));
    }
    o->calls++;
    ops_done++;
    board_post(o->board);
}

DEFINE_OP_CALLBACKS(op_done)

static fp_result start(fp_client *c, enum op_kind kind, struct op *o) {
    switch (kind) {
    case OP_KEYS:
        return fp_create_keys(c, on_keys, o);
    case OP_CSR:
        return fp_create_from_csr(c, TEST_CSR_PEM, on_csr, o);
    case OP_CSR_NOT_PEM:
        return fp_create_from_csr(c, "this is not a certificate signing request", on_csr, o);
    case OP_REGISTER:
        return fp_register_thing(c, "FleetTemplate", "token",
                                 "{\"SerialNumber\":\"1\",\"DeviceLocation\":\"Seattle\"}",
                                 on_register, o);
    }
    return FP_ERR_INTERNAL;
}

static const struct fault_case *find_case(const char *name) {
    size_t i;
    for (i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        if (strcmp(CASES[i].name, name) == 0) {
            return &CASES[i];
        }
    }
    fprintf(stderr, "unknown case %s\n", name);
    exit(2);
}

static void check_events(const struct lifecycle_log *life, const fp_lifecycle_event *want,
                         const fp_result *codes, int n) {
    int i;
    if (life->count != n) {
        fprintf(stderr, "%d lifecycle events, expected %d\n", life->count, n);
        exit(1);
    }
    for (i = 0; i < n; i++) {
        if (life->events[i] != want[i] || life->codes[i] != codes[i]) {
            fprintf(stderr, "lifecycle event %d: %d (%s), expected %d (%s)\n", i,
                    (int)life->events[i], fp_result_str((int)life->codes[i]), (int)want[i],
                    fp_result_str((int)codes[i]));
            exit(1);
        }
    }
    CHECK(life->off_main_thread);
}

int main(int argc, char **argv) {
    struct conn_args a;
    const struct fault_case *fc;
    struct lifecycle_log life;
    struct op ops[MAX_OPS];
    fp_client_options *o;
    fp_client *c = NULL;
    int i, first;

    parse_conn_args(argc, argv, 1, &a);
    fc = find_case(argv[6]);
    CHECK(fc->ops >= 1 && fc->ops <= MAX_OPS);
    board_init(&board);
    lifecycle_log_init(&life, &board);

    o = make_options(&a, 0, fc->mqtt_version);
    if (argc > 7) {
        CHECK_RESULT(fp_client_options_set_proxy(o, "127.0.0.1", (uint16_t)atoi(argv[7])), FP_OK);
    }
    if (fc->connect_timeout_ms != 0) {
        CHECK_RESULT(fp_client_options_set_connect_timeout_ms(o, fc->connect_timeout_ms), FP_OK);
    }
    if (fc->operation_timeout_ms != 0) {
        CHECK_RESULT(fp_client_options_set_operation_timeout_ms(o, fc->operation_timeout_ms),
                     FP_OK);
    }
    CHECK_RESULT(fp_client_new(o, &c), FP_OK);
    fp_client_options_free(o);

    CHECK_RESULT(fp_client_connect(c, record_lifecycle, &life), FP_OK);
    /* Started before the connection is up: they wait for it, queued one behind the other. */
    for (i = 0; i < fc->ops; i++) {
        memset(&ops[i], 0, sizeof ops[i]);
        ops[i].board = &board;
        ops[i].off_main_thread = 1;
        CHECK_RESULT(start(c, fc->op, &ops[i]), FP_OK);
    }
    board_wait(&board, &ops_done, fc->ops);

    /* A connection that failed or was lost: its events, before the owner stops it. (One that
     * stays up is checked after free: SUCCESS then STOPPED, nothing in between.) */
    if (fc->ending != STAYS_UP) {
        fp_lifecycle_event want[3];
        fp_result codes[3] = {FP_OK, FP_OK, FP_OK};
        struct op late;
        int n = 0;
        if (fc->ending == LOST) {
            want[n++] = FP_EVENT_CONNECTION_SUCCESS;
            want[n] = FP_EVENT_DISCONNECTED;
        } else {
            want[n] = FP_EVENT_CONNECTION_FAILURE;
        }
        codes[n++] = fc->connection_error;
        want[n++] = FP_EVENT_STOPPED;
        board_wait(&board, &life.count, n);
        board_lock(&board);
        check_events(&life, want, codes, n);
        pthread_mutex_unlock(&board.lock);
        /* The client does not reconnect: a later operation is accepted and its callback says
         * why it could not run (the connect error, or NOT_CONNECTED after a lost connection). */
        memset(&late, 0, sizeof late);
        late.board = &board;
        CHECK_RESULT(start(c, fc->op, &late), FP_OK);
        board_wait(&board, &late.calls, 1);
        CHECK_RESULT(late.code,
                     fc->ending == LOST ? FP_ERR_NOT_CONNECTED : fc->connection_error);
    }

    fp_client_free(c);

    /* free returned: every callback has run, exactly once, and nothing more will come. */
    /* Operations of one kind run one at a time, in no promised order: the one that got its
     * turn first is the one the fault hit. */
    first = 0;
    if (fc->ops == 2 && ops[0].code != fc->expected && ops[1].code == fc->expected) {
        first = 1;
    }
    for (i = 0; i < fc->ops; i++) {
        fp_result want = i == first ? fc->expected : fc->queued;
        /* The second operation is started right after the first, but not atomically with the
         * library's thread: on a loaded machine the loss the first one met can be known
         * before the second starts. Then the second is refused at once as not connected,
         * naming the loss (the library's contract for an operation started after a loss). */
        if (i != first && fc->ending == LOST && ops[i].code == FP_ERR_NOT_CONNECTED &&
            strstr(ops[i].message, "the connection was lost: ") != NULL) {
            want = FP_ERR_NOT_CONNECTED;
        }
        if (ops[i].calls != 1 || ops[i].code != want) {
            fprintf(stderr, "%s: operation %d called back %d times with %d (%s: %s), expected %d\n",
                    fc->name, i, ops[i].calls, (int)ops[i].code,
                    fp_result_str((int)ops[i].code), ops[i].message, (int)want);
            exit(1);
        }
        CHECK(ops[i].off_main_thread);
        CHECK(ops[i].message[0] != '\0');
        if (want == FP_ERR_REJECTED) {
            CHECK(ops[i].status == fc->status);
            CHECK_STR(ops[i].aws_code, fc->aws_code);
        } else {
            CHECK(ops[i].status == 0 && !ops[i].has_aws_code);
        }
    }
    if (fc->ending == STAYS_UP) {
        const fp_lifecycle_event want[2] = {FP_EVENT_CONNECTION_SUCCESS, FP_EVENT_STOPPED};
        const fp_result codes[2] = {FP_OK, FP_OK};
        check_events(&life, want, codes, 2);
    } else {
        /* No event after STOPPED. */
        CHECK(life.count == (fc->ending == LOST ? 3 : 2));
    }
    board_destroy(&board);

    printf("%s: %s | %s\n", fc->name, fp_result_str((int)ops[first].code), ops[first].message);
    printf("network_faults: ok\n");
    return 0;
}
