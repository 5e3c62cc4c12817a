/* fp_provision() from C, killing itself with SIGKILL at a chosen step.
 *
 * usage: provision_kill PORT CA CLAIM_CERT CLAIM_KEY STORE SERIAL KILL_AT [rotate]
 *   KILL_AT: none, or a step name (registering, saving, verifying, ...): the process kills
 *   itself from the progress callback when that step begins, as a power cut would.
 *   rotate: a stored identity is rotated on every run (through FleetRotationTemplate), and
 *   KILL_AT counts only from the rotating step on.
 * Prints "thing=NAME reused=0|1 rotated=0|1 attempts=N", "previous=ID" (the replaced
 * certificate, or "-") and exits 0 on success; prints the error and exits 1 on failure.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleetprov.h"

struct run {
    pthread_mutex_t lock;
    pthread_cond_t done_cv;
    int done;
    int callbacks;
    int ok;
    const char *kill_at;
    int armed;
};

static const char *step_name(fp_provision_step step) {
    switch (step) {
    case FP_STEP_CONNECTING: return "connecting";
    case FP_STEP_CREATING: return "creating";
    case FP_STEP_REGISTERING: return "registering";
    case FP_STEP_SAVING: return "saving";
    case FP_STEP_VERIFYING: return "verifying";
    case FP_STEP_RETRY_SCHEDULED: return "retry";
    case FP_STEP_REUSING: return "reusing";
    case FP_STEP_ROTATING: return "rotating";
    case FP_STEP_CERTIFICATE_ABANDONED: return "abandoned";
    default: return "unknown";
    }
}

static void on_progress(void *user_data, fp_provision_step step, uint32_t attempt,
                        uint64_t delay_ms, const char *detail) {
    struct run *r = user_data;
    printf("step %s attempt=%u delay_ms=%llu detail=%s\n", step_name(step), (unsigned)attempt,
           (unsigned long long)delay_ms, detail);
    fflush(stdout);
    if (step == FP_STEP_ROTATING) r->armed = 1;
    if (r->armed && strcmp(r->kill_at, step_name(step)) == 0) {
        kill(getpid(), SIGKILL);
    }
}

static void on_done(void *user_data, const fp_provisioned *result, const fp_error *error) {
    struct run *r = user_data;
    if (result != NULL) {
        const char *previous = fp_provisioned_previous_certificate_id(result);
        printf("thing=%s reused=%d rotated=%d attempts=%u\n", fp_provisioned_thing_name(result),
               fp_provisioned_reused(result), fp_provisioned_rotated(result),
               (unsigned)fp_provisioned_attempts(result));
        printf("previous=%s\n", previous != NULL ? previous : "-");
        printf("certificate=%s\n", fp_provisioned_certificate_id(result));
        printf("key=%s\n", fp_provisioned_private_key_file(result));
        r->ok = 1;
    } else {
        printf("error %d %s: %s\n", (int)fp_error_code(error),
               fp_result_str((int)fp_error_code(error)), fp_error_message(error));
    }
    fflush(stdout);
    pthread_mutex_lock(&r->lock);
    r->callbacks++;
    r->done = 1;
    pthread_cond_signal(&r->done_cv);
    pthread_mutex_unlock(&r->lock);
}

int main(int argc, char **argv) {
    if (argc != 8 && !(argc == 9 && strcmp(argv[8], "rotate") == 0)) {
        fprintf(stderr, "usage: %s PORT CA CERT KEY STORE SERIAL KILL_AT [rotate]\n", argv[0]);
        return 2;
    }
    int rotate = argc == 9;
    struct run r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.done_cv, NULL);
    r.kill_at = argv[7];
    r.armed = !rotate;

    fp_client_options *claim = NULL;
    if (fp_client_options_new("localhost", &claim) != FP_OK) return 2;
    fp_client_options_set_port(claim, (uint16_t)atoi(argv[1]));
    fp_client_options_set_ca_file(claim, argv[2]);
    fp_client_options_set_cert_file(claim, argv[3]);
    fp_client_options_set_key_file(claim, argv[4]);

    fp_provision_options *o = NULL;
    fp_result rc = fp_provision_options_new(claim, "FleetTemplate", argv[5], &o);
    fp_client_options_free(claim);
    if (rc != FP_OK) {
        fprintf(stderr, "fp_provision_options_new: %s\n", fp_result_str((int)rc));
        return 2;
    }
    char params[256];
    snprintf(params, sizeof params, "{\"SerialNumber\":\"%s\",\"DeviceLocation\":\"Seattle\"}",
             argv[6]);
    if (fp_provision_options_set_parameters(o, params) != FP_OK) return 2;
    if (rotate && (fp_provision_options_set_rotate_before_percent(o, 100) != FP_OK ||
                   fp_provision_options_set_rotation_template(o, "FleetRotationTemplate") != FP_OK)) {
        return 2;
    }
    rc = fp_provision(o, on_progress, on_done, &r);
    fp_provision_options_free(o);
    if (rc != FP_OK) {
        fprintf(stderr, "fp_provision: %s\n", fp_result_str((int)rc));
        return 2;
    }
    pthread_mutex_lock(&r.lock);
    while (!r.done) pthread_cond_wait(&r.done_cv, &r.lock);
    pthread_mutex_unlock(&r.lock);
    if (r.callbacks != 1) return 3;
    return r.ok ? 0 : 1;
}
