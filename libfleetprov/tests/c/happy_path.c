/*
 * Both provisioning flows through the C API against the emulator:
 * - CreateKeysAndCertificate started before the connection is up, with RegisterThing chained
 *   from inside the create-keys callback;
 * - CreateCertificateFromCsr, then RegisterThing from the main thread;
 * - two service rejections with their AWS fields;
 * - a clean disconnect with the lifecycle events in order.
 *
 * argv: ENDPOINT PORT CA CERT KEY MQTT_VERSION SERIAL_A SERIAL_B
 * Prints "thing: <name>" per registered thing and "happy_path: ok" on success.
 */
#include "test_util.h"

struct flow {
    struct board *board;
    fp_client *client;
    const char *parameters;
    int keys_calls;
    int register_calls;
    int csr_calls;
    fp_result chain_start; /* what fp_register_thing returned inside the callback */
    fp_result register_code;
    char *thing_name;
    char *token;
    int config_ok;
    int off_main_thread;
};

static int is_hex64(const char *s) {
    size_t i;
    if (s == NULL || strlen(s) != 64) {
        return 0;
    }
    for (i = 0; i < 64; i++) {
        if (strchr("0123456789abcdef", s[i]) == NULL) {
            return 0;
        }
    }
    return 1;
}

static int starts_with(const char *s, const char *prefix) {
    return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

static void on_register(void *user_data, const fp_register_thing_response *response,
                        const fp_error *error) {
    struct flow *f = (struct flow *)user_data;
    size_t i;
    board_lock(f->board);
    CHECK((response == NULL) != (error == NULL));
    if (on_main_thread(f->board)) {
        f->off_main_thread = 0;
    }
    if (response != NULL) {
        int fallback = 0, location = 0;
        f->register_code = FP_OK;
        f->thing_name = test_strdup(response->thing_name);
        for (i = 0; i < response->device_configuration_len; i++) {
            const fp_key_value *kv = &response->device_configuration[i];
            if (strcmp(kv->key, "FallbackUrl") == 0 &&
                strcmp(kv->value, "https://www.example.com/test-site") == 0) {
                fallback = 1;
            }
            if (strcmp(kv->key, "LocationUrl") == 0 &&
                strcmp(kv->value, "https://example.aws") == 0) {
                location = 1;
            }
        }
        f->config_ok = fallback && location && response->device_configuration_len == 2;
    } else {
        f->register_code = fp_error_code(error);
        fprintf(stderr, "RegisterThing failed: %s\n", fp_error_message(error));
    }
    f->register_calls++;
    board_post(f->board);
}

static void on_keys(void *user_data, const fp_create_keys_response *response,
                    const fp_error *error) {
    struct flow *f = (struct flow *)user_data;
    fp_result chained = FP_ERR_INTERNAL;
    CHECK((response == NULL) != (error == NULL));
    if (response != NULL) {
        CHECK(is_hex64(response->certificate_id));
        CHECK(starts_with(response->certificate_pem, "-----BEGIN CERTIFICATE-----"));
        CHECK(starts_with(response->private_key, "-----BEGIN RSA PRIVATE KEY-----"));
        CHECK(response->certificate_ownership_token != NULL &&
              response->certificate_ownership_token[0] != '\0');
        /* Chain the next operation from inside the callback, with the borrowed token. */
        chained = fp_register_thing(f->client, "FleetTemplate",
                                    response->certificate_ownership_token, f->parameters,
                                    on_register, f);
    } else {
        fprintf(stderr, "CreateKeysAndCertificate failed: %s\n", fp_error_message(error));
    }
    board_lock(f->board);
    if (on_main_thread(f->board)) {
        f->off_main_thread = 0;
    }
    f->chain_start = chained;
    f->keys_calls++;
    board_post(f->board);
}

static void on_csr(void *user_data, const fp_create_from_csr_response *response,
                   const fp_error *error) {
    struct flow *f = (struct flow *)user_data;
    board_lock(f->board);
    CHECK((response == NULL) != (error == NULL));
    if (response != NULL) {
        CHECK(is_hex64(response->certificate_id));
        CHECK(starts_with(response->certificate_pem, "-----BEGIN CERTIFICATE-----"));
        f->token = test_strdup(response->certificate_ownership_token);
    } else {
        fprintf(stderr, "CreateCertificateFromCsr failed: %s\n", fp_error_message(error));
    }
    if (on_main_thread(f->board)) {
        f->off_main_thread = 0;
    }
    f->csr_calls++;
    board_post(f->board);
}

/* A rejection as the callback saw it (the error object is only valid inside the callback). */
struct rejection {
    struct board *board;
    int calls;
    fp_result code;
    int status;
    char aws_code[128];
    int has_aws_message;
};

static void on_rejected(void *user_data, const fp_register_thing_response *response,
                        const fp_error *error) {
    struct rejection *r = (struct rejection *)user_data;
    board_lock(r->board);
    CHECK(response == NULL && error != NULL);
    r->code = fp_error_code(error);
    r->status = fp_error_status_code(error);
    CHECK(fp_error_aws_code(error) != NULL);
    strncpy(r->aws_code, fp_error_aws_code(error), sizeof r->aws_code - 1);
    r->has_aws_message = fp_error_aws_message(error) != NULL && fp_error_message(error) != NULL &&
                         fp_error_message(error)[0] != '\0';
    r->calls++;
    board_post(r->board);
}

/* For an operation started after the connection ended: an error without AWS's fields. */
static void on_not_connected(void *user_data, const fp_register_thing_response *response,
                             const fp_error *error) {
    struct rejection *r = (struct rejection *)user_data;
    board_lock(r->board);
    CHECK(response == NULL && error != NULL);
    CHECK(fp_error_aws_code(error) == NULL && fp_error_status_code(error) == 0);
    r->code = fp_error_code(error);
    r->calls++;
    board_post(r->board);
}

static void expect_rejection(struct board *b, fp_client *c, const char *template_name,
                             int status, const char *aws_code) {
    struct rejection r;
    memset(&r, 0, sizeof r);
    r.board = b;
    CHECK_RESULT(fp_register_thing(c, template_name, "not-a-token", NULL, on_rejected, &r), FP_OK);
    board_wait(b, &r.calls, 1);
    CHECK_RESULT(r.code, FP_ERR_REJECTED);
    CHECK(r.status == status);
    CHECK_STR(r.aws_code, aws_code);
    CHECK(r.has_aws_message);
}

int main(int argc, char **argv) {
    struct conn_args a;
    struct board b;
    struct lifecycle_log life;
    struct flow keys, csr;
    char params_a[128], params_b[128], name_a[64], name_b[64];
    fp_client *c;
    int version;

    parse_conn_args(argc, argv, 3, &a);
    version = atoi(argv[6]);
    snprintf(params_a, sizeof params_a, "{\"SerialNumber\":\"%s\",\"DeviceLocation\":\"Seattle\"}",
             argv[7]);
    snprintf(params_b, sizeof params_b, "{\"SerialNumber\":\"%s\",\"DeviceLocation\":\"Seattle\"}",
             argv[8]);
    snprintf(name_a, sizeof name_a, "ThingPrefix_%s", argv[7]);
    snprintf(name_b, sizeof name_b, "ThingPrefix_%s", argv[8]);
    board_init(&b);
    lifecycle_log_init(&life, &b);

    c = make_client(&a, 0, version);
    CHECK_RESULT(fp_client_connect(c, record_lifecycle, &life), FP_OK);

    /* Keys flow, started without waiting for the connection. */
    memset(&keys, 0, sizeof keys);
    keys.board = &b;
    keys.client = c;
    keys.parameters = params_a;
    keys.off_main_thread = 1;
    CHECK_RESULT(fp_create_keys(c, on_keys, &keys), FP_OK);
    board_wait(&b, &keys.keys_calls, 1);
    CHECK_RESULT(keys.chain_start, FP_OK);
    board_wait(&b, &keys.register_calls, 1);
    CHECK_RESULT(keys.register_code, FP_OK);
    CHECK_STR(keys.thing_name, name_a);
    CHECK(keys.config_ok);
    CHECK(keys.off_main_thread);
    printf("thing: %s\n", keys.thing_name);

    /* CSR flow, RegisterThing from the main thread. */
    memset(&csr, 0, sizeof csr);
    csr.board = &b;
    csr.client = c;
    csr.off_main_thread = 1;
    CHECK_RESULT(fp_create_from_csr(c, TEST_CSR_PEM, on_csr, &csr), FP_OK);
    board_wait(&b, &csr.csr_calls, 1);
    CHECK(csr.token != NULL);
    CHECK_RESULT(fp_register_thing(c, "FleetTemplate", csr.token, params_b, on_register, &csr),
                 FP_OK);
    board_wait(&b, &csr.register_calls, 1);
    CHECK_RESULT(csr.register_code, FP_OK);
    CHECK_STR(csr.thing_name, name_b);
    CHECK(csr.config_ok);
    CHECK(csr.off_main_thread);
    printf("thing: %s\n", csr.thing_name);

    /* Rejections carry AWS's fields as received. */
    expect_rejection(&b, c, "FleetTemplate", 400, "InvalidCertificateOwnershipToken");
    expect_rejection(&b, c, "NoSuchTemplate", 404, "ResourceNotFound");

    /* Clean stop: events in order, exactly one STOPPED, none on the main thread. */
    CHECK_RESULT(fp_client_disconnect(c), FP_OK);
    board_wait(&b, &life.count, 2);
    CHECK(life.events[0] == FP_EVENT_CONNECTION_SUCCESS);
    CHECK(life.events[1] == FP_EVENT_STOPPED);
    CHECK(life.off_main_thread);
    /* After the stop, a new operation is still accepted and its callback says why it could
     * not run: the start call's result never depends on the library thread's timing. */
    {
        struct rejection late;
        memset(&late, 0, sizeof late);
        late.board = &b;
        CHECK_RESULT(fp_register_thing(c, "FleetTemplate", "t", NULL, on_not_connected, &late),
                     FP_OK);
        board_wait(&b, &late.calls, 1);
        CHECK_RESULT(late.code, FP_ERR_NOT_CONNECTED);
    }
    fp_client_free(c);
    CHECK(life.count == 2);
    CHECK(keys.keys_calls == 1 && keys.register_calls == 1);
    CHECK(csr.csr_calls == 1 && csr.register_calls == 1);

    free(keys.thing_name);
    free(csr.thing_name);
    free(csr.token);
    board_destroy(&b);
    printf("happy_path: ok\n");
    return 0;
}
