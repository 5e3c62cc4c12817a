/*
 * The signer callback through the C API against the emulator, with keys that only this
 * program holds (OpenSSL's libcrypto signs):
 * - "provision": the claim key behind a signer runs CreateKeysAndCertificate + RegisterThing;
 *   a device key generated here gets a CSR built by the library and signed through the
 *   callback, CreateCertificateFromCsr + RegisterThing, and a signer over the issued
 *   certificate and that key then connects. Each callback checks the digest it is given.
 *   Every release callback runs exactly once.
 * - "failing": a callback that returns an error, and one that signs with another key, each
 *   give FP_ERR_SIGNER (connecting and building a CSR), with a message naming the cause.
 * - "provision_device STORE": fp_provision() with the claim key behind a signer and the
 *   device key behind another (fp_provision_options_set_device_key_signer()), twice: the
 *   second run reuses the identity through the same signer. Prints "provisioned: <thing>
 *   reused=0|1 location=signer key_file=''".
 *
 * argv: ENDPOINT PORT CA CERT KEY MODE [STORE]
 * Prints "thing: <name>" per registered thing, "device connected", and "signer: ok".
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "test_util.h"

struct key {
    struct board *board;
    EVP_PKEY *pkey;
    int fail;     /* return this instead of signing, if non-zero */
    int calls;
    int released;
    int off_main_thread_calls;
    fp_signature_scheme last_scheme;
};

static int sign_cb(void *user_data, fp_signature_scheme scheme, const uint8_t *message,
                   size_t message_len, const uint8_t *digest, size_t digest_len,
                   uint8_t *signature, size_t signature_capacity, size_t *signature_len) {
    struct key *k = (struct key *)user_data;
    const EVP_MD *md = NULL;
    unsigned char expected[EVP_MAX_MD_SIZE];
    unsigned int expected_len = 0;
    EVP_PKEY_CTX *ctx;
    size_t n = signature_capacity;
    int pss = 0, rsa = 0, ok;

    switch (scheme) {
    case FP_SIGNATURE_ECDSA_P256_SHA256:
        md = EVP_sha256();
        break;
    case FP_SIGNATURE_ECDSA_P384_SHA384:
        md = EVP_sha384();
        break;
    case FP_SIGNATURE_RSA_PSS_SHA256:
        pss = 1;
        /* fall through */
    case FP_SIGNATURE_RSA_PKCS1_SHA256:
        md = EVP_sha256();
        rsa = 1;
        break;
    case FP_SIGNATURE_RSA_PSS_SHA384:
        pss = 1;
        /* fall through */
    case FP_SIGNATURE_RSA_PKCS1_SHA384:
        md = EVP_sha384();
        rsa = 1;
        break;
    case FP_SIGNATURE_RSA_PSS_SHA512:
        pss = 1;
        /* fall through */
    case FP_SIGNATURE_RSA_PKCS1_SHA512:
        md = EVP_sha512();
        rsa = 1;
        break;
    default:
        return -2;
    }
    board_lock(k->board);
    k->calls++;
    k->last_scheme = scheme;
    if (!on_main_thread(k->board)) {
        k->off_main_thread_calls++;
    }
    board_post(k->board);
    if (k->fail != 0) {
        return k->fail;
    }
    /* The digest is the scheme's hash of the message. */
    CHECK(EVP_Digest(message, message_len, expected, &expected_len, md, NULL) == 1);
    CHECK(expected_len == digest_len && memcmp(expected, digest, digest_len) == 0);

    ctx = EVP_PKEY_CTX_new(k->pkey, NULL);
    CHECK(ctx != NULL);
    ok = EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_CTX_set_signature_md(ctx, md) == 1;
    if (ok && rsa) {
        ok = EVP_PKEY_CTX_set_rsa_padding(ctx, pss ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING) ==
             1;
        if (ok && pss) {
            ok = EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) == 1;
        }
    }
    ok = ok && EVP_PKEY_sign(ctx, signature, &n, digest, digest_len) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        return -3;
    }
    *signature_len = n;
    return 0;
}

static void release_cb(void *user_data) {
    struct key *k = (struct key *)user_data;
    board_lock(k->board);
    k->released++;
    board_post(k->board);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    n = ftell(f);
    CHECK(n > 0);
    rewind(f);
    buf = (char *)malloc((size_t)n + 1);
    CHECK(buf != NULL);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static EVP_PKEY *read_key(const char *path) {
    FILE *f = fopen(path, "rb");
    EVP_PKEY *k;
    CHECK(f != NULL);
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    CHECK(k != NULL);
    return k;
}

static char *public_key_pem(EVP_PKEY *k) {
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    char *out;
    long n;
    CHECK(bio != NULL);
    CHECK(PEM_write_bio_PUBKEY(bio, k) == 1);
    n = BIO_get_mem_data(bio, &data);
    CHECK(n > 0);
    out = (char *)malloc((size_t)n + 1);
    CHECK(out != NULL);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

static void key_init(struct key *k, struct board *b, EVP_PKEY *pkey) {
    memset(k, 0, sizeof *k);
    k->board = b;
    k->pkey = pkey;
}

static fp_signer *make_signer(const char *pem, struct key *k) {
    fp_signer *s = NULL;
    CHECK_RESULT(fp_signer_new(pem, sign_cb, k, release_cb, &s), FP_OK);
    CHECK(s != NULL);
    return s;
}

/* A client of the emulator that authenticates through `signer` (which carries the
 * certificate); the signer handle is freed here at once: the options share it. */
static fp_client *signer_client(const struct conn_args *a, fp_signer *signer) {
    fp_client_options *o = NULL;
    fp_client *c = NULL;
    CHECK_RESULT(fp_client_options_new(a->endpoint, &o), FP_OK);
    CHECK_RESULT(fp_client_options_set_port(o, (uint16_t)a->port), FP_OK);
    CHECK_RESULT(fp_client_options_set_ca_file(o, a->ca), FP_OK);
    CHECK_RESULT(fp_client_options_set_connect_timeout_ms(o, 10000), FP_OK);
    CHECK_RESULT(fp_client_options_set_signer(o, signer), FP_OK);
    fp_signer_free(signer);
    CHECK_RESULT(fp_client_new(o, &c), FP_OK);
    fp_client_options_free(o);
    return c;
}

/* The first lifecycle event of a connection, with its message. */
struct first_event {
    struct board *board;
    int count;
    fp_lifecycle_event event;
    fp_result code;
    char *message;
};

static void on_lifecycle(void *user_data, fp_lifecycle_event event, const fp_error *error) {
    struct first_event *f = (struct first_event *)user_data;
    board_lock(f->board);
    if (f->count == 0) {
        f->event = event;
        f->code = error != NULL ? fp_error_code(error) : FP_OK;
        f->message = error != NULL ? test_strdup(fp_error_message(error)) : NULL;
    }
    f->count++;
    board_post(f->board);
}

/* Connects `c` and waits for the first lifecycle event, recorded in `f`. */
static void connect_and_wait(fp_client *c, struct board *b, struct first_event *f) {
    memset(f, 0, sizeof *f);
    f->board = b;
    CHECK_RESULT(fp_client_connect(c, on_lifecycle, f), FP_OK);
    board_wait(b, &f->count, 1);
    if (f->code != FP_OK) {
        fprintf(stderr, "connection: %s: %s\n", fp_result_str(f->code), f->message);
    }
}

struct op {
    struct board *board;
    int done;
    fp_result code;
    char *message;
    char *token;
    char *cert;
    char *thing;
};

static void finish(struct op *op, const char *token, const char *cert, const char *thing,
                   const fp_error *e) {
    board_lock(op->board);
    op->code = e != NULL ? fp_error_code(e) : FP_OK;
    op->message = e != NULL ? test_strdup(fp_error_message(e)) : NULL;
    op->token = test_strdup(token);
    op->cert = test_strdup(cert);
    op->thing = test_strdup(thing);
    op->done = 1;
    board_post(op->board);
}

static void on_keys(void *ud, const fp_create_keys_response *r, const fp_error *e) {
    finish((struct op *)ud, r ? r->certificate_ownership_token : NULL,
           r ? r->certificate_pem : NULL, NULL, e);
}

static void on_csr(void *ud, const fp_create_from_csr_response *r, const fp_error *e) {
    finish((struct op *)ud, r ? r->certificate_ownership_token : NULL,
           r ? r->certificate_pem : NULL, NULL, e);
}

static void on_register(void *ud, const fp_register_thing_response *r, const fp_error *e) {
    finish((struct op *)ud, NULL, NULL, r ? r->thing_name : NULL, e);
}

static void op_init(struct op *op, struct board *b) {
    memset(op, 0, sizeof *op);
    op->board = b;
}

static void op_free(struct op *op) {
    free(op->message);
    free(op->token);
    free(op->cert);
    free(op->thing);
}

static void expect_ok(struct op *op) {
    board_wait(op->board, &op->done, 1);
    if (op->code != FP_OK) {
        fprintf(stderr, "operation failed: %s: %s\n", fp_result_str(op->code), op->message);
        exit(1);
    }
}

static void register_thing(fp_client *c, struct board *b, const char *token, const char *serial) {
    struct op op;
    char params[128];
    op_init(&op, b);
    snprintf(params, sizeof params, "{\"SerialNumber\":\"%s\",\"DeviceLocation\":\"Seattle\"}",
             serial);
    CHECK_RESULT(fp_register_thing(c, "FleetTemplate", token, params, on_register, &op), FP_OK);
    expect_ok(&op);
    printf("thing: %s\n", op.thing);
    op_free(&op);
}

static void provision(const struct conn_args *a, struct board *b) {
    struct key claim, device;
    struct first_event ev;
    struct op keys, csr;
    char *cert_pem = read_file(a->cert);
    char *device_public;
    char csr_pem[FP_CSR_PEM_MAX_LEN];
    size_t csr_len = 0;
    fp_signer *device_signer;
    fp_client *c;

    key_init(&claim, b, read_key(a->key));
    c = signer_client(a, make_signer(cert_pem, &claim));
    connect_and_wait(c, b, &ev);
    CHECK_RESULT(ev.code, FP_OK);
    CHECK(ev.event == FP_EVENT_CONNECTION_SUCCESS);
    CHECK(claim.calls == 1 && claim.last_scheme == FP_SIGNATURE_ECDSA_P256_SHA256);
    CHECK(claim.off_main_thread_calls == 1); /* the handshake ran on the library's thread */

    /* CreateKeysAndCertificate with the claim signer. */
    op_init(&keys, b);
    CHECK_RESULT(fp_create_keys(c, on_keys, &keys), FP_OK);
    expect_ok(&keys);
    register_thing(c, b, keys.token, "c-signer-keys");

    /* CreateCertificateFromCsr: the device key never leaves this program. */
    key_init(&device, b, EVP_EC_gen("P-256"));
    CHECK(device.pkey != NULL);
    device_public = public_key_pem(device.pkey);
    device_signer = make_signer(device_public, &device);
    CHECK_RESULT(fp_signer_create_csr(device_signer, "c-signer-device", csr_pem, 16, &csr_len),
                 FP_ERR_INVALID_ARGUMENT);
    CHECK(csr_len == 0);
    CHECK(device.calls == 1); /* signed, then found not to fit */
    CHECK_RESULT(fp_signer_create_csr(device_signer, "c-signer-device", csr_pem, sizeof csr_pem,
                                      &csr_len),
                 FP_OK);
    CHECK(device.calls == 2 && device.off_main_thread_calls == 0);
    CHECK(csr_len == strlen(csr_pem));
    CHECK(strncmp(csr_pem, "-----BEGIN CERTIFICATE REQUEST-----", 35) == 0);
    fp_signer_free(device_signer);
    CHECK(device.released == 1); /* nothing else held it */

    op_init(&csr, b);
    CHECK_RESULT(fp_create_from_csr(c, csr_pem, on_csr, &csr), FP_OK);
    expect_ok(&csr);
    register_thing(c, b, csr.token, "c-signer-csr");
    fp_client_free(c);
    board_wait(b, &claim.released, 1);
    CHECK(claim.calls == 1);

    /* The new identity: the issued certificate, the key still only here. */
    c = signer_client(a, make_signer(csr.cert, &device));
    connect_and_wait(c, b, &ev);
    CHECK_RESULT(ev.code, FP_OK);
    CHECK(ev.event == FP_EVENT_CONNECTION_SUCCESS);
    CHECK(device.calls == 3);
    printf("device connected\n");
    fp_client_free(c);
    board_wait(b, &device.released, 2);

    op_free(&keys);
    op_free(&csr);
    free(device_public);
    free(cert_pem);
    EVP_PKEY_free(claim.pkey);
    EVP_PKEY_free(device.pkey);
}

static void expect_connect_signer_error(const struct conn_args *a, struct board *b, struct key *k,
                                        const char *cert_pem, const char *needle) {
    struct first_event ev;
    fp_client *c = signer_client(a, make_signer(cert_pem, k));
    connect_and_wait(c, b, &ev);
    CHECK(ev.event == FP_EVENT_CONNECTION_FAILURE);
    CHECK_RESULT(ev.code, FP_ERR_SIGNER);
    CHECK(ev.message != NULL && strstr(ev.message, needle) != NULL);
    printf("signer error: %s\n", ev.message);
    free(ev.message);
    fp_client_free(c);
    board_wait(b, &k->released, 1);
}

static void failing(const struct conn_args *a, struct board *b) {
    struct key broken, other;
    char *cert_pem = read_file(a->cert);
    char csr_pem[FP_CSR_PEM_MAX_LEN];
    size_t n = 0;
    fp_signer *s = NULL;
    fp_client_options *o = NULL;

    /* Argument checks: nothing is taken on failure. */
    key_init(&broken, b, read_key(a->key));
    CHECK_RESULT(fp_signer_new(NULL, sign_cb, &broken, release_cb, &s), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_signer_new(cert_pem, NULL, &broken, release_cb, &s), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_signer_new("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                               sign_cb, &broken, release_cb, &s),
                 FP_ERR_INVALID_ARGUMENT);
    CHECK(s == NULL && broken.released == 0);
    CHECK_RESULT(fp_client_options_new(a->endpoint, &o), FP_OK);
    CHECK_RESULT(fp_client_options_set_signer(o, NULL), FP_ERR_NULL_ARGUMENT);
    fp_client_options_free(o);

    /* The callback fails: connecting and a CSR both give FP_ERR_SIGNER. */
    broken.fail = -5;
    expect_connect_signer_error(a, b, &broken, cert_pem, "the sign callback returned -5");
    CHECK(broken.calls == 1);
    s = make_signer(cert_pem, &broken);
    CHECK_RESULT(fp_signer_create_csr(s, NULL, csr_pem, sizeof csr_pem, &n), FP_ERR_SIGNER);
    fp_signer_free(s);
    CHECK(broken.released == 2);

    /* The callback signs with a key that is not the certificate's. */
    key_init(&other, b, EVP_EC_gen("P-256"));
    expect_connect_signer_error(a, b, &other, cert_pem, "does not verify");
    CHECK(other.calls == 1);

    EVP_PKEY_free(broken.pkey);
    EVP_PKEY_free(other.pkey);
    free(cert_pem);
}

struct provision_outcome {
    struct board *board;
    int done;
    int ok;
};

static void on_provisioned(void *user_data, const fp_provisioned *result, const fp_error *error) {
    struct provision_outcome *o = (struct provision_outcome *)user_data;
    if (result != NULL) {
        printf("provisioned: %s reused=%d location=%s key_file='%s'\n",
               fp_provisioned_thing_name(result), fp_provisioned_reused(result),
               fp_provisioned_key_location(result) == FP_KEY_LOCATION_SIGNER ? "signer" : "other",
               fp_provisioned_private_key_file(result));
    } else {
        printf("provision error: %s\n", fp_error_message(error));
    }
    fflush(stdout);
    board_lock(o->board);
    o->ok = result != NULL;
    o->done++;
    board_post(o->board);
}

/* fp_provision() with both keys behind signers, run twice with the same signers. */
static void provision_device(const struct conn_args *a, struct board *b, const char *store) {
    struct key claim, device;
    char *cert_pem = read_file(a->cert);
    char *device_public;
    fp_signer *claim_signer, *device_signer;
    fp_client_options *o = NULL;
    fp_provision_options *p = NULL;
    int run;

    key_init(&claim, b, read_key(a->key));
    key_init(&device, b, EVP_EC_gen("P-256"));
    CHECK(device.pkey != NULL);
    device_public = public_key_pem(device.pkey);
    claim_signer = make_signer(cert_pem, &claim);
    device_signer = make_signer(device_public, &device);
    CHECK_RESULT(fp_client_options_new(a->endpoint, &o), FP_OK);
    CHECK_RESULT(fp_client_options_set_port(o, (uint16_t)a->port), FP_OK);
    CHECK_RESULT(fp_client_options_set_ca_file(o, a->ca), FP_OK);
    CHECK_RESULT(fp_client_options_set_signer(o, claim_signer), FP_OK);
    fp_signer_free(claim_signer);
    /* The claim key behind a signer is accepted. */
    CHECK_RESULT(fp_provision_options_new(o, "FleetTemplate", store, &p), FP_OK);
    fp_client_options_free(o);
    CHECK_RESULT(fp_provision_options_set_device_key_signer(p, device_signer), FP_OK);
    fp_signer_free(device_signer);
    CHECK_RESULT(fp_provision_options_set_parameters(
                     p, "{\"SerialNumber\":\"c-signer-device\",\"DeviceLocation\":\"Seattle\"}"),
                 FP_OK);
    for (run = 1; run <= 2; run++) {
        struct provision_outcome out;
        memset(&out, 0, sizeof out);
        out.board = b;
        CHECK_RESULT(fp_provision(p, NULL, on_provisioned, &out), FP_OK);
        board_wait(b, &out.done, 1);
        CHECK(out.ok);
    }
    /* The CSR and one verifying handshake per run. */
    board_lock(b);
    CHECK(device.calls == 3);
    CHECK(claim.calls == 1);
    pthread_mutex_unlock(&b->lock);
    /* The options held the last references: freeing them releases both signers. */
    fp_provision_options_free(p);
    board_wait(b, &device.released, 1);
    board_wait(b, &claim.released, 1);
    EVP_PKEY_free(device.pkey);
    EVP_PKEY_free(claim.pkey);
    free(device_public);
    free(cert_pem);
}

static void log_to_stderr(void *user_data, fp_log_level level, const char *message) {
    (void)user_data;
    if (level <= FP_LOG_ERROR) {
        fprintf(stderr, "log: %s\n", message);
    }
}

int main(int argc, char **argv) {
    struct conn_args a;
    struct board b;
    parse_conn_args(argc, argv, 1, &a);
    board_init(&b);
    CHECK_RESULT(fp_set_log_callback(log_to_stderr, NULL, NULL, FP_LOG_ERROR), FP_OK);
    if (strcmp(argv[6], "provision") == 0) {
        provision(&a, &b);
    } else if (strcmp(argv[6], "failing") == 0) {
        failing(&a, &b);
    } else if (strcmp(argv[6], "provision_device") == 0 && argc == 8) {
        provision_device(&a, &b, argv[7]);
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[6]);
        return 2;
    }
    CHECK_RESULT(fp_set_log_callback(NULL, NULL, NULL, 0), FP_OK);
    board_destroy(&b);
    printf("signer: ok\n");
    return 0;
}
