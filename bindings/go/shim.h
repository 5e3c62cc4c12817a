/* Starters that hand the library a C trampoline and a cgo.Handle (as an integer) for
 * user_data: Go code can neither take the address of an exported Go function as a C function
 * pointer nor pass a Go pointer that C keeps, so the trampolines in shim.c bridge both.
 * They return `enum fp_result`, not the typedef, so that cgo gives them the Go type of the
 * library's own functions. */
#ifndef FLEETPROV_GO_SHIM_H
#define FLEETPROV_GO_SHIM_H

#include <stdint.h>

#include "fleetprov.h"

enum fp_result fpgo_connect(fp_client *client, uintptr_t handle);
enum fp_result fpgo_create_keys(fp_client *client, uintptr_t handle);
enum fp_result fpgo_create_from_csr(fp_client *client, const char *csr_pem,
                                    uintptr_t handle);
enum fp_result fpgo_register_thing(fp_client *client, const char *template_name,
                                   const char *token, const char *parameters_json,
                                   uintptr_t handle);

/* fp_provision_start() with the trampolines for its progress and final callbacks. */
enum fp_result fpgo_provision_start(const fp_provision_options *options, uintptr_t handle,
                                    fp_provision_op **out);

/* fp_signer_new() with trampolines to a Go crypto.Signer behind the handle, deleted by the
 * release callback. */
enum fp_result fpgo_signer_new(const char *public_pem, uintptr_t handle, fp_signer **out);

/* fp_set_log_callback() with a trampoline to the Go function behind the handle, deleted by
 * the release callback. */
enum fp_result fpgo_set_log_callback(uintptr_t handle, int max_level);

#endif
