/*
 * The bad-input table of the C API: NULL for every pointer of every function, invalid UTF-8,
 * empty strings, bad template names and parameters, bad numbers, and bad TLS material (a
 * missing file, a file that is not PEM, a key that does not match the certificate, a CA that
 * did not sign the server), as files and as PEM text. Each gets its documented fp_result;
 * none crashes or calls back early. (The network half is tests/c/network_faults.c.)
 *
 * argv: ENDPOINT PORT CA CERT KEY SCRATCH_DIR
 * Prints "bad_input: ok" on success.
 */
#include "test_util.h"

static const char BAD_UTF8[] = "\xff\xfe";
static const char TRUNCATED_UTF8[] = "abc\xc3";

static int callbacks; /* must stay 0: no refused start ever calls back */

static void never_keys(void *ud, const fp_create_keys_response *r, const fp_error *e) {
    (void)ud;
    (void)r;
    (void)e;
    callbacks++;
}

static void never_csr(void *ud, const fp_create_from_csr_response *r, const fp_error *e) {
    (void)ud;
    (void)r;
    (void)e;
    callbacks++;
}

static void never_register(void *ud, const fp_register_thing_response *r, const fp_error *e) {
    (void)ud;
    (void)r;
    (void)e;
    callbacks++;
}

static void quiet_log(void *ud, fp_log_level level, const char *message) {
    (void)ud;
    (void)level;
    (void)message;
}

static void count_release(void *user_data) {
    ++*(int *)user_data;
}

static void result_names(void) {
    int i, j, named;
    /* Codes are contiguous from FP_OK: name them until the first unknown one. */
    for (named = FP_OK; strcmp(fp_result_str(named), "unknown result code") != 0; named++) {
        CHECK(named < 1000);
    }
    CHECK(named > (int)FP_ERR_PUBLISH_REFUSED);
    for (i = FP_OK; i < named; i++) {
        CHECK(fp_result_str(i) != NULL);
        for (j = FP_OK; j < i; j++) {
            CHECK(strcmp(fp_result_str(i), fp_result_str(j)) != 0);
        }
    }
    CHECK_STR(fp_result_str(-1), "unknown result code");
    CHECK_STR(fp_result_str(named + 1), "unknown result code");
}

static void version(void) {
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", FP_VERSION_MAJOR, FP_VERSION_MINOR,
             FP_VERSION_PATCH);
    CHECK_STR(fp_version(), expected);
}

static void error_accessors_with_null(void) {
    CHECK_RESULT(fp_error_code(NULL), FP_ERR_NULL_ARGUMENT);
    CHECK(fp_error_message(NULL) == NULL);
    CHECK(fp_error_status_code(NULL) == 0);
    CHECK(fp_error_aws_code(NULL) == NULL);
    CHECK(fp_error_aws_message(NULL) == NULL);
}

static void logging(void) {
    {
        /* Each user_data is released exactly once: when refused, when not installed, or once
         * its callback is replaced or removed. */
        int released[4] = {0, 0, 0, 0};
        CHECK_RESULT(fp_set_log_callback(quiet_log, &released[0], count_release, 7),
                     FP_ERR_INVALID_ARGUMENT);
        CHECK(released[0] == 1);
        CHECK_RESULT(fp_set_log_callback(quiet_log, NULL, NULL, -1), FP_ERR_INVALID_ARGUMENT);
        CHECK_RESULT(fp_set_log_callback(quiet_log, &released[1], count_release, FP_LOG_TRACE),
                     FP_OK);
        CHECK(released[1] == 0);
        CHECK_RESULT(fp_set_log_callback(quiet_log, &released[2], count_release, FP_LOG_TRACE),
                     FP_OK);
        CHECK(released[1] == 1 && released[2] == 0);
        CHECK_RESULT(fp_set_log_callback(NULL, &released[3], count_release, FP_LOG_TRACE), FP_OK);
        CHECK(released[2] == 1 && released[3] == 1);
        CHECK_RESULT(fp_set_log_callback(quiet_log, NULL, NULL, FP_LOG_NONE), FP_OK);
        CHECK(released[0] == 1 && released[1] == 1 && released[2] == 1 && released[3] == 1);
    }
}

typedef fp_result (*string_setter)(fp_client_options *, const char *);

static void string_setter_table(fp_client_options *o, string_setter set, const char *name) {
    int r;
    r = (int)set(NULL, "x");
    if (r != FP_ERR_NULL_ARGUMENT) {
        fprintf(stderr, "%s(NULL options) gave %d\n", name, r);
        exit(1);
    }
    r = (int)set(o, NULL);
    if (r != FP_ERR_NULL_ARGUMENT) {
        fprintf(stderr, "%s(NULL string) gave %d\n", name, r);
        exit(1);
    }
    r = (int)set(o, "");
    if (r != FP_ERR_INVALID_ARGUMENT) {
        fprintf(stderr, "%s(\"\") gave %d\n", name, r);
        exit(1);
    }
    r = (int)set(o, BAD_UTF8);
    if (r != FP_ERR_INVALID_UTF8) {
        fprintf(stderr, "%s(invalid UTF-8) gave %d\n", name, r);
        exit(1);
    }
    r = (int)set(o, TRUNCATED_UTF8);
    if (r != FP_ERR_INVALID_UTF8) {
        fprintf(stderr, "%s(truncated UTF-8) gave %d\n", name, r);
        exit(1);
    }
}

static void options(void) {
    fp_client_options *o;
    fp_client *c = (fp_client *)&callbacks; /* a sentinel: must stay untouched on failure */
    fp_client *const sentinel = c;

    /* Each failure has its own code, and *out is written only on success. */
    o = (fp_client_options *)&callbacks;
    CHECK_RESULT(fp_client_options_new(NULL, &o), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_new("localhost", NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_new("", &o), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_new(BAD_UTF8, &o), FP_ERR_INVALID_UTF8);
    CHECK_RESULT(fp_client_options_new("two words", &o), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_new("host/path", &o), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_new("host:8883", &o), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_new("mqtts://host", &o), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_new(TRUNCATED_UTF8, &o), FP_ERR_INVALID_UTF8);
    CHECK(o == (fp_client_options *)&callbacks);

    CHECK_RESULT(fp_client_options_new("localhost", &o), FP_OK);
    string_setter_table(o, fp_client_options_set_cert_file, "set_cert_file");
    string_setter_table(o, fp_client_options_set_key_file, "set_key_file");
    string_setter_table(o, fp_client_options_set_ca_file, "set_ca_file");
    string_setter_table(o, fp_client_options_set_cert_pem, "set_cert_pem");
    string_setter_table(o, fp_client_options_set_key_pem, "set_key_pem");
    string_setter_table(o, fp_client_options_set_ca_pem, "set_ca_pem");
    string_setter_table(o, fp_client_options_set_client_id, "set_client_id");

    CHECK_RESULT(fp_client_options_set_port(NULL, 1), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_port(o, 0), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_mqtt_version(NULL, 5), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_mqtt_version(o, 4), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_mqtt_version(o, 0), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_keep_alive_secs(NULL, 30), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_keep_alive_secs(o, 4), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_keep_alive_secs(o, 5), FP_OK);
    CHECK_RESULT(fp_client_options_set_operation_timeout_ms(NULL, 1), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_operation_timeout_ms(o, 0), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_connect_timeout_ms(NULL, 1), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_connect_timeout_ms(o, 0), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_proxy(NULL, "p", 8080), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_proxy(o, NULL, 8080), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_proxy(o, "", 8080), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_proxy(o, BAD_UTF8, 8080), FP_ERR_INVALID_UTF8);
    CHECK_RESULT(fp_client_options_set_proxy(o, "proxy", 0), FP_ERR_INVALID_ARGUMENT);

    /* fp_client_new: NULLs, and a certificate without its key. */
    CHECK_RESULT(fp_client_new(NULL, &c), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_new(o, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_cert_file(o, "cert.pem"), FP_OK);
    CHECK_RESULT(fp_client_new(o, &c), FP_ERR_INVALID_ARGUMENT);
    CHECK(c == sentinel);
    fp_client_options_free(o);

    /* A key without its certificate. */
    CHECK_RESULT(fp_client_options_new("localhost", &o), FP_OK);
    CHECK_RESULT(fp_client_options_set_key_file(o, "key.pem"), FP_OK);
    CHECK_RESULT(fp_client_new(o, &c), FP_ERR_INVALID_ARGUMENT);
    CHECK(c == sentinel);
    fp_client_options_free(o);

    /* A client id longer than an MQTT string can carry (65,535 bytes), and the longest. */
    {
        enum { MQTT_MAX = 65535 };
        char *id = (char *)malloc(MQTT_MAX + 2);
        CHECK(id != NULL);
        memset(id, 'a', MQTT_MAX + 1);
        id[MQTT_MAX + 1] = '\0';
        CHECK_RESULT(fp_client_options_new("localhost", &o), FP_OK);
        CHECK_RESULT(fp_client_options_set_client_id(o, id), FP_ERR_INVALID_ARGUMENT);
        id[MQTT_MAX] = '\0';
        CHECK_RESULT(fp_client_options_set_client_id(o, id), FP_OK);
        free(id); /* copied by the setter */
        fp_client_options_free(o);
    }
}

static void operations_without_a_client(void) {
    CHECK_RESULT(fp_client_connect(NULL, NULL, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_client_disconnect(NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_create_keys(NULL, never_keys, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_create_from_csr(NULL, "csr", never_csr, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_register_thing(NULL, "FleetTemplate", "t", NULL, never_register, NULL),
                 FP_ERR_NULL_ARGUMENT);
}

/* Arguments are checked before the connection state, so an unconnected client shows which
 * arguments pass (FP_ERR_NOT_CONNECTED) and which do not. */
static void operation_arguments(const struct conn_args *a) {
    static const char name36[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    static const char name37[] = "abcdefghijklmnopqrstuvwxyz0123456789_";
    struct {
        const char *name;
        const char *token;
        const char *params;
        fp_result expected;
    } cases[] = {
        {NULL, "t", NULL, FP_ERR_NULL_ARGUMENT},
        {"FleetTemplate", NULL, NULL, FP_ERR_NULL_ARGUMENT},
        {"", "t", NULL, FP_ERR_INVALID_ARGUMENT},
        {"a/b", "t", NULL, FP_ERR_INVALID_ARGUMENT},
        {"a+b", "t", NULL, FP_ERR_INVALID_ARGUMENT},
        {"a#b", "t", NULL, FP_ERR_INVALID_ARGUMENT},
        {"a b", "t", NULL, FP_ERR_INVALID_ARGUMENT},
        {name37, "t", NULL, FP_ERR_INVALID_ARGUMENT},
        {BAD_UTF8, "t", NULL, FP_ERR_INVALID_UTF8},
        {"FleetTemplate", "", NULL, FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", BAD_UTF8, NULL, FP_ERR_INVALID_UTF8},
        {"FleetTemplate", "t", "", FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", "t", "not json", FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", "t", "{\"a\":\"b\"", FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", "t", "[\"a\"]", FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", "t", "\"a\"", FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", "t", "{\"a\":1}", FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", "t", "{\"a\":{\"b\":\"c\"}}", FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", "t", "{\"a\":null}", FP_ERR_INVALID_ARGUMENT},
        {"FleetTemplate", "t", BAD_UTF8, FP_ERR_INVALID_UTF8},
        {"FleetTemplate", "t", NULL, FP_ERR_NOT_CONNECTED},
        {"FleetTemplate", "t", "{}", FP_ERR_NOT_CONNECTED},
        {"FleetTemplate", "t", "{\"SerialNumber\":\"1\"}", FP_ERR_NOT_CONNECTED},
        {name36, "t", NULL, FP_ERR_NOT_CONNECTED},
        {"Fleet-Template_2", "t", NULL, FP_ERR_NOT_CONNECTED},
    };
    size_t i;
    fp_client *c = make_client(a, 0, 5);

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = (int)fp_register_thing(c, cases[i].name, cases[i].token, cases[i].params,
                                         never_register, NULL);
        int checked = (int)fp_register_thing_check(cases[i].name, cases[i].params);
        int want_check =
            cases[i].expected == FP_ERR_NOT_CONNECTED ? (int)FP_OK : (int)cases[i].expected;
        if (cases[i].token == NULL || (cases[i].token[0] == '\0') ||
            strcmp(cases[i].token, BAD_UTF8) == 0) {
            want_check = FP_OK; /* the token is not part of the check */
        }
        if (got != (int)cases[i].expected || checked != want_check) {
            fprintf(stderr, "register case %u: got %d / check %d, expected %d / %d\n",
                    (unsigned)i, got, checked, (int)cases[i].expected, want_check);
            exit(1);
        }
    }
    CHECK_RESULT(fp_register_thing(c, "FleetTemplate", "t", NULL, NULL, NULL),
                 FP_ERR_NULL_ARGUMENT);

    CHECK_RESULT(fp_create_from_csr(c, NULL, never_csr, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_create_from_csr(c, "", never_csr, NULL), FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_create_from_csr(c, BAD_UTF8, never_csr, NULL), FP_ERR_INVALID_UTF8);
    CHECK_RESULT(fp_create_from_csr(c, "csr", NULL, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_create_from_csr(c, "csr", never_csr, NULL), FP_ERR_NOT_CONNECTED);
    CHECK_RESULT(fp_create_keys(c, NULL, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_create_keys(c, never_keys, NULL), FP_ERR_NOT_CONNECTED);
    fp_client_free(c);
}

/* Bad TLS material: the connection fails with the given code, and an operation that was
 * waiting for it fails with the same code. */
struct outcome {
    struct board *board;
    int calls;
    fp_result code;
    char message[256];
};

static void on_keys_outcome(void *ud, const fp_create_keys_response *r, const fp_error *e) {
    struct outcome *o = (struct outcome *)ud;
    board_lock(o->board);
    CHECK(r == NULL && e != NULL);
    o->code = fp_error_code(e);
    CHECK(fp_error_message(e) != NULL);
    strncpy(o->message, fp_error_message(e), sizeof o->message - 1);
    o->calls++;
    board_post(o->board);
}

/* Connects with options `o` (freed here) and expects the connection to fail with `expected`. */
static void connect_expecting_failure(fp_client_options *o, struct board *b, fp_result expected,
                                      const char *what) {
    struct lifecycle_log life;
    struct outcome op;
    fp_client *c = NULL;
    CHECK_RESULT(fp_client_new(o, &c), FP_OK);
    fp_client_options_free(o);

    lifecycle_log_init(&life, b);
    memset(&op, 0, sizeof op);
    op.board = b;
    CHECK_RESULT(fp_client_connect(c, record_lifecycle, &life), FP_OK);
    /* Accepted even if the connect has already failed (a missing file is found before any
     * network I/O): the callback then reports the connect error. */
    CHECK_RESULT(fp_create_keys(c, on_keys_outcome, &op), FP_OK);
    board_wait(b, &life.count, 2);
    board_wait(b, &op.calls, 1);
    if (life.events[0] != FP_EVENT_CONNECTION_FAILURE || life.codes[0] != expected ||
        op.code != expected) {
        fprintf(stderr, "%s: event %d code %d op %d (%s), expected failure %d\n", what,
                (int)life.events[0], (int)life.codes[0], (int)op.code, op.message,
                (int)expected);
        exit(1);
    }
    CHECK(life.events[1] == FP_EVENT_STOPPED);
    fp_client_free(c);
    CHECK(op.calls == 1 && life.count == 2);
    printf("%s: %s | %s\n", what, fp_result_str((int)expected), op.message);
}

static fp_client_options *options_for(const struct conn_args *a) {
    fp_client_options *o = NULL;
    CHECK_RESULT(fp_client_options_new(a->endpoint, &o), FP_OK);
    CHECK_RESULT(fp_client_options_set_port(o, (uint16_t)a->port), FP_OK);
    return o;
}

/* The TLS material given as file paths. */
static void expect_connect_failure(const struct conn_args *a, struct board *b, const char *ca,
                                   const char *cert, const char *key, fp_result expected,
                                   const char *what) {
    fp_client_options *o = options_for(a);
    CHECK_RESULT(fp_client_options_set_ca_file(o, ca), FP_OK);
    CHECK_RESULT(fp_client_options_set_cert_file(o, cert), FP_OK);
    CHECK_RESULT(fp_client_options_set_key_file(o, key), FP_OK);
    connect_expecting_failure(o, b, expected, what);
}

/* The TLS material given as PEM text in memory. */
static void expect_connect_failure_pem(const struct conn_args *a, struct board *b,
                                       const char *ca, const char *cert, const char *key,
                                       fp_result expected, const char *what) {
    fp_client_options *o = options_for(a);
    CHECK_RESULT(fp_client_options_set_ca_pem(o, ca), FP_OK);
    CHECK_RESULT(fp_client_options_set_cert_pem(o, cert), FP_OK);
    CHECK_RESULT(fp_client_options_set_key_pem(o, key), FP_OK);
    connect_expecting_failure(o, b, expected, what);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *text;
    long n;
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    n = ftell(f);
    CHECK(n >= 0 && fseek(f, 0, SEEK_SET) == 0);
    text = (char *)malloc((size_t)n + 1);
    CHECK(text != NULL);
    CHECK(fread(text, 1, (size_t)n, f) == (size_t)n);
    text[n] = '\0';
    CHECK(fclose(f) == 0);
    return text;
}

static void write_file(const char *path, const char *content) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fputs(content, f) >= 0);
    CHECK(fclose(f) == 0);
}

static void tls_material(const struct conn_args *a, const char *scratch) {
    struct board b;
    char missing[1024], not_pem[1024], empty[1024];
    char *ca_pem, *cert_pem, *key_pem;
    snprintf(missing, sizeof missing, "%s/does-not-exist.pem", scratch);
    snprintf(not_pem, sizeof not_pem, "%s/not-pem.pem", scratch);
    snprintf(empty, sizeof empty, "%s/empty.pem", scratch);
    write_file(not_pem, "this is not a certificate\n");
    write_file(empty, "");
    board_init(&b);
    expect_connect_failure(a, &b, a->ca, missing, a->key, FP_ERR_IO, "missing certificate file");
    expect_connect_failure(a, &b, a->ca, a->cert, missing, FP_ERR_IO, "missing key file");
    expect_connect_failure(a, &b, missing, a->cert, a->key, FP_ERR_IO, "missing CA file");
    expect_connect_failure(a, &b, a->ca, not_pem, a->key, FP_ERR_TLS, "certificate not PEM");
    expect_connect_failure(a, &b, a->ca, a->cert, not_pem, FP_ERR_TLS, "key not PEM");
    /* The CA certificate with the claim's key: a key that does not match its certificate. */
    expect_connect_failure(a, &b, a->ca, a->ca, a->key, FP_ERR_TLS, "mismatched key");
    /* Trusting only the claim certificate: the server's certificate does not verify. */
    expect_connect_failure(a, &b, a->cert, a->cert, a->key, FP_ERR_TLS, "wrong CA");
    expect_connect_failure(a, &b, a->ca, empty, a->key, FP_ERR_TLS, "empty certificate file");
    expect_connect_failure(a, &b, not_pem, a->cert, a->key, FP_ERR_TLS, "CA not PEM");
    expect_connect_failure(a, &b, a->ca, scratch, a->key, FP_ERR_IO,
                           "certificate path is a directory");

    /* The same mistakes with PEM text in memory. */
    ca_pem = read_file(a->ca);
    cert_pem = read_file(a->cert);
    key_pem = read_file(a->key);
    expect_connect_failure_pem(a, &b, ca_pem, "not a certificate", key_pem, FP_ERR_TLS,
                               "certificate PEM text not PEM");
    expect_connect_failure_pem(a, &b, ca_pem, cert_pem, "not a key", FP_ERR_TLS,
                               "key PEM text not PEM");
    expect_connect_failure_pem(a, &b, ca_pem, ca_pem, key_pem, FP_ERR_TLS,
                               "key PEM text of another certificate");
    expect_connect_failure_pem(a, &b, "not a CA", cert_pem, key_pem, FP_ERR_TLS,
                               "CA PEM text not PEM");
    expect_connect_failure_pem(a, &b, cert_pem, cert_pem, key_pem, FP_ERR_TLS,
                               "wrong CA PEM text");
    free(ca_pem);
    free(cert_pem);
    free(key_pem);
    board_destroy(&b);
}

int main(int argc, char **argv) {
    struct conn_args a;
    parse_conn_args(argc, argv, 1, &a);

    result_names();
    version();
    error_accessors_with_null();
    logging();
    options();
    operations_without_a_client();
    operation_arguments(&a);
    tls_material(&a, argv[6]);
    CHECK(callbacks == 0);
    printf("bad_input: ok\n");
    return 0;
}
