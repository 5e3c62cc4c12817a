/* N devices provisioned at once through fp_provision(), each with its own identity store,
 * against an emulator whose RegisterThing is rate-limited. Prints the time to the last
 * device against the floor N / rate (what the limit allows at best), and the attempts.
 *
 * usage: provision_fleet PORT CA CLAIM_CERT CLAIM_KEY WORK_DIR N RATE
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fleetprov.h"

struct fleet {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    long remaining;
    long failed;
    unsigned long long attempts;
    unsigned max_attempts;
    double last_done;
    struct timespec start;
};

static double since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void on_done(void *user_data, const fp_provisioned *result, const fp_error *error) {
    struct fleet *f = user_data;
    double t = since(&f->start);
    pthread_mutex_lock(&f->lock);
    if (result != NULL) {
        unsigned a = fp_provisioned_attempts(result);
        f->attempts += a;
        if (a > f->max_attempts) f->max_attempts = a;
    } else {
        f->failed++;
        fprintf(stderr, "provision_fleet: %s\n", fp_error_message(error));
    }
    f->last_done = t;
    f->remaining--;
    pthread_cond_signal(&f->changed);
    pthread_mutex_unlock(&f->lock);
}

int main(int argc, char **argv) {
    struct fleet f;
    long n, i;
    double rate;
    fp_client_options *claim = NULL;
    if (argc != 8) {
        fprintf(stderr, "usage: %s PORT CA CERT KEY WORK_DIR N RATE\n", argv[0]);
        return 2;
    }
    n = atol(argv[6]);
    rate = atof(argv[7]);
    if (n <= 0 || rate <= 0) return 2;
    memset(&f, 0, sizeof f);
    pthread_mutex_init(&f.lock, NULL);
    pthread_cond_init(&f.changed, NULL);
    if (fp_client_options_new("localhost", &claim) != FP_OK) return 2;
    fp_client_options_set_port(claim, (uint16_t)atoi(argv[1]));
    fp_client_options_set_ca_file(claim, argv[2]);
    fp_client_options_set_cert_file(claim, argv[3]);
    fp_client_options_set_key_file(claim, argv[4]);
    fp_client_options_set_operation_timeout_ms(claim, 60000);
    fp_client_options_set_connect_timeout_ms(claim, 60000);
    f.remaining = n;
    clock_gettime(CLOCK_MONOTONIC, &f.start);
    for (i = 0; i < n; i++) {
        char dir[4096], params[128];
        fp_provision_options *o = NULL;
        snprintf(dir, sizeof dir, "%s/dev%ld", argv[5], i);
        snprintf(params, sizeof params, "{\"SerialNumber\":\"bench-%ld\",\"DeviceLocation\":\"Seattle\"}",
                 i);
        if (fp_provision_options_new(claim, "FleetTemplate", dir, &o) != FP_OK ||
            fp_provision_options_set_parameters(o, params) != FP_OK ||
            fp_provision_options_set_max_attempts(o, 60) != FP_OK ||
            fp_provision_options_set_backoff_ms(o, 500, 10000) != FP_OK ||
            fp_provision_options_set_deadline_ms(o, 600000) != FP_OK ||
            fp_provision(o, NULL, on_done, &f) != FP_OK) {
            fprintf(stderr, "provision_fleet: cannot start device %ld\n", i);
            return 1;
        }
        fp_provision_options_free(o);
    }
    fp_client_options_free(claim);
    pthread_mutex_lock(&f.lock);
    while (f.remaining > 0) pthread_cond_wait(&f.changed, &f.lock);
    pthread_mutex_unlock(&f.lock);
    {
        double floor_s = (double)n / rate;
        printf("devices %ld, RegisterThing limit %.1f/s, failed %ld\n", n, rate, f.failed);
        printf("time to the last device: %.2f s; floor N/rate: %.2f s; ratio %.2f\n",
               f.last_done, floor_s, f.last_done / floor_s);
        printf("attempts: %.2f per device on average, %u at most\n",
               (double)f.attempts / (double)(n - f.failed > 0 ? n - f.failed : 1), f.max_attempts);
    }
    return f.failed == 0 ? 0 : 1;
}
