/* Trampolines: the library calls these on its threads, they call the exported Go functions
 * with the cgo.Handle that travelled as user_data. */
#include "shim.h"

#include "_cgo_export.h"

/* The Go side only reads through these pointers; cgo has no const, hence the casts. */
static void on_lifecycle(void *user_data, fp_lifecycle_event event, const fp_error *error) {
    fpgoLifecycle((uintptr_t)user_data, (int)event, (fp_error *)error);
}

static void on_create_keys(void *user_data, const fp_create_keys_response *response,
                           const fp_error *error) {
    fpgoCreateKeys((uintptr_t)user_data, (fp_create_keys_response *)response,
                   (fp_error *)error);
}

static void on_create_from_csr(void *user_data, const fp_create_from_csr_response *response,
                               const fp_error *error) {
    fpgoCreateFromCsr((uintptr_t)user_data, (fp_create_from_csr_response *)response,
                      (fp_error *)error);
}

static void on_register_thing(void *user_data, const fp_register_thing_response *response,
                              const fp_error *error) {
    fpgoRegisterThing((uintptr_t)user_data, (fp_register_thing_response *)response,
                      (fp_error *)error);
}

enum fp_result fpgo_connect(fp_client *client, uintptr_t handle) {
    return fp_client_connect(client, on_lifecycle, (void *)handle);
}

enum fp_result fpgo_create_keys(fp_client *client, uintptr_t handle) {
    return fp_create_keys(client, on_create_keys, (void *)handle);
}

enum fp_result fpgo_create_from_csr(fp_client *client, const char *csr_pem,
                                    uintptr_t handle) {
    return fp_create_from_csr(client, csr_pem, on_create_from_csr, (void *)handle);
}

enum fp_result fpgo_register_thing(fp_client *client, const char *template_name,
                                   const char *token, const char *parameters_json,
                                   uintptr_t handle) {
    return fp_register_thing(client, template_name, token, parameters_json, on_register_thing,
                             (void *)handle);
}

static void on_provision_progress(void *user_data, fp_provision_step step, uint32_t attempt,
                                  uint64_t delay_ms, const char *detail) {
    fpgoProvisionProgress((uintptr_t)user_data, (int)step, attempt, delay_ms, (char *)detail);
}

static void on_provisioned(void *user_data, const fp_provisioned *result, const fp_error *error) {
    fpgoProvisioned((uintptr_t)user_data, (fp_provisioned *)result, (fp_error *)error);
}

enum fp_result fpgo_provision_start(const fp_provision_options *options, uintptr_t handle,
                                    fp_provision_op **out) {
    return fp_provision_start(options, on_provision_progress, on_provisioned, (void *)handle,
                              out);
}

/* The sign callback passes the digest on: crypto.Signer signs digests. */
static int on_sign(void *user_data, enum fp_signature_scheme scheme, const uint8_t *message,
                   size_t message_len, const uint8_t *digest, size_t digest_len,
                   uint8_t *signature, size_t signature_capacity, size_t *signature_len) {
    (void)message;
    (void)message_len;
    return fpgoSign((uintptr_t)user_data, (int)scheme, (uint8_t *)digest, digest_len, signature,
                    signature_capacity, signature_len);
}

static void on_signer_release(void *user_data) {
    fpgoSignerRelease((uintptr_t)user_data);
}

enum fp_result fpgo_signer_new(const char *public_pem, uintptr_t handle, fp_signer **out) {
    return fp_signer_new(public_pem, on_sign, (void *)handle, on_signer_release, out);
}

static void on_log(void *user_data, enum fp_log_level level, const char *message) {
    fpgoLog((uintptr_t)user_data, (int)level, (char *)message);
}

static void on_log_release(void *user_data) {
    fpgoLogRelease((uintptr_t)user_data);
}

enum fp_result fpgo_set_log_callback(uintptr_t handle, int max_level) {
    return fp_set_log_callback(on_log, (void *)handle, on_log_release, max_level);
}
