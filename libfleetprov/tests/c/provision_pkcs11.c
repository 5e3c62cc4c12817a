/*
 * fp_provision() with keys in a PKCS#11 token (SoftHSM2 in the tests): the claim key is the
 * token's (fp_client_options_set_pkcs11_*), and the device key is generated in the token
 * (fp_provision_options_set_device_key_pkcs11()); no key file is written. Before that, the
 * new setters' argument checks.
 *
 * argv: ENDPOINT PORT CA CLAIM_CERT MODULE TOKEN PIN CLAIM_LABEL DEVICE_LABEL STORE SERIAL
 * Prints "thing: <name>", "reused: 0|1", "location: pkcs11", "key file: <path>" and
 * "pkcs11: ok"; on a failure "error: <code name>: <message>" and exit 1.
 */
#include "test_util.h"

struct outcome {
    struct board *board;
    int done;
    int ok;
};

static void on_done(void *user_data, const fp_provisioned *result, const fp_error *error) {
    struct outcome *o = (struct outcome *)user_data;
    if (result != NULL) {
        printf("thing: %s\n", fp_provisioned_thing_name(result));
        printf("reused: %d\n", fp_provisioned_reused(result));
        printf("location: %s\n",
               fp_provisioned_key_location(result) == FP_KEY_LOCATION_PKCS11 ? "pkcs11" : "other");
        printf("key file: %s\n", fp_provisioned_private_key_file(result));
    } else {
        printf("error: %s: %s\n", fp_result_str((int)fp_error_code(error)),
               fp_error_message(error));
    }
    fflush(stdout);
    board_lock(o->board);
    o->ok = result != NULL;
    o->done++;
    board_post(o->board);
}

/* PKCS#11 settings: module, token, PIN and `label`. */
static fp_client_options *token_options(char **argv, const char *label) {
    fp_client_options *o = NULL;
    CHECK_RESULT(fp_client_options_new(argv[1], &o), FP_OK);
    CHECK_RESULT(fp_client_options_set_pkcs11_module(o, argv[5]), FP_OK);
    CHECK_RESULT(fp_client_options_set_pkcs11_token_label(o, argv[6]), FP_OK);
    CHECK_RESULT(fp_client_options_set_pkcs11_pin(o, argv[7]), FP_OK);
    CHECK_RESULT(fp_client_options_set_pkcs11_key_label(o, label), FP_OK);
    return o;
}

static void setter_checks(fp_provision_options *p, fp_client_options *token) {
    fp_client_options *plain = NULL;
    CHECK_RESULT(fp_client_options_new("localhost", &plain), FP_OK);
    CHECK_RESULT(fp_provision_options_set_device_key_pkcs11(NULL, token, FP_PKCS11_KEY_EC_P256, 1),
                 FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_provision_options_set_device_key_pkcs11(p, NULL, FP_PKCS11_KEY_EC_P256, 1),
                 FP_ERR_NULL_ARGUMENT);
    /* Options without PKCS#11 settings, and a key type outside the enum. */
    CHECK_RESULT(fp_provision_options_set_device_key_pkcs11(p, plain, FP_PKCS11_KEY_EC_P256, 1),
                 FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_provision_options_set_device_key_pkcs11(p, token, 99, 1),
                 FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_provision_options_set_device_key_signer(p, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_provision_options_set_device_key_signer(NULL, NULL), FP_ERR_NULL_ARGUMENT);
    CHECK(fp_provisioned_key_location(NULL) == FP_KEY_LOCATION_FILE);
    /* PKCS#11 settings without a key label. */
    CHECK_RESULT(fp_client_options_set_pkcs11_module(plain, "/nonexistent.so"), FP_OK);
    CHECK_RESULT(fp_provision_options_set_device_key_pkcs11(p, plain, FP_PKCS11_KEY_EC_P256, 1),
                 FP_ERR_INVALID_ARGUMENT);
    fp_client_options_free(plain);
}

int main(int argc, char **argv) {
    struct board b;
    struct outcome out;
    fp_client_options *claim;
    fp_client_options *device;
    fp_provision_options *p = NULL;
    char params[128];
    if (argc != 12) {
        fprintf(stderr, "usage: %s ENDPOINT PORT CA CLAIM_CERT MODULE TOKEN PIN CLAIM_LABEL "
                        "DEVICE_LABEL STORE SERIAL\n", argv[0]);
        return 2;
    }
    board_init(&b);
    memset(&out, 0, sizeof out);
    out.board = &b;

    claim = token_options(argv, argv[8]);
    CHECK_RESULT(fp_client_options_set_port(claim, (uint16_t)atoi(argv[2])), FP_OK);
    CHECK_RESULT(fp_client_options_set_ca_file(claim, argv[3]), FP_OK);
    /* A claim with a key but no certificate is refused. */
    CHECK_RESULT(fp_provision_options_new(claim, "FleetTemplate", argv[10], &p),
                 FP_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(fp_client_options_set_cert_file(claim, argv[4]), FP_OK);
    /* The claim key in the token is accepted. */
    CHECK_RESULT(fp_provision_options_new(claim, "FleetTemplate", argv[10], &p), FP_OK);
    fp_client_options_free(claim);

    device = token_options(argv, argv[9]);
    setter_checks(p, device);
    CHECK_RESULT(fp_provision_options_set_device_key_pkcs11(p, device, FP_PKCS11_KEY_EC_P256, 1),
                 FP_OK);
    /* The provisioning options copied the settings. */
    fp_client_options_free(device);
    snprintf(params, sizeof params, "{\"SerialNumber\":\"%s\",\"DeviceLocation\":\"Seattle\"}",
             argv[11]);
    CHECK_RESULT(fp_provision_options_set_parameters(p, params), FP_OK);

    CHECK_RESULT(fp_provision(p, NULL, on_done, &out), FP_OK);
    fp_provision_options_free(p);
    board_wait(&b, &out.done, 1);
    board_destroy(&b);
    if (!out.ok) {
        return 1;
    }
    printf("pkcs11: ok\n");
    return 0;
}
