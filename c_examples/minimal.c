/*
 * The smallest complete use of the library: connect with a claim certificate, run
 * CreateKeysAndCertificate, chain RegisterThing from its callback, wait, free.
 *
 * Usage: minimal ENDPOINT PORT CA_FILE CLAIM_CERT CLAIM_KEY SERIAL_NUMBER
 * Against `fleetprov-emulator serve`, with FleetTemplate and DeviceLocation Seattle.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "fleetprov.h"

struct state {
    pthread_mutex_t lock;
    pthread_cond_t done_cv;
    int done;
    int ok;
    const char *serial;
    fp_client *client;
};

static void finish(struct state *s, int ok) {
    pthread_mutex_lock(&s->lock);
    s->ok = ok;
    s->done = 1;
    pthread_cond_signal(&s->done_cv);
    pthread_mutex_unlock(&s->lock);
}

static void report(const char *what, const fp_error *e) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, fp_error_message(e),
            fp_result_str((int)fp_error_code(e)));
}

static void on_registered(void *user_data, const fp_register_thing_response *r,
                          const fp_error *e) {
    if (r != NULL) {
        printf("registered %s\n", r->thing_name);
    } else {
        report("RegisterThing", e);
    }
    finish((struct state *)user_data, r != NULL);
}

static void on_created(void *user_data, const fp_create_keys_response *r, const fp_error *e) {
    struct state *s = (struct state *)user_data;
    char params[128];
    if (r == NULL) {
        report("CreateKeysAndCertificate", e);
        finish(s, 0);
        return;
    }
    /* A real device stores r->certificate_pem and r->private_key here (securely): both are
     * borrowed, and the key is wiped when this callback returns. */
    printf("certificate %s\n", r->certificate_id);
    snprintf(params, sizeof params, "{\"SerialNumber\":\"%s\",\"DeviceLocation\":\"Seattle\"}",
             s->serial);
    /* Calling the library from its own callback is allowed. */
    if (fp_register_thing(s->client, "FleetTemplate", r->certificate_ownership_token, params,
                          on_registered, s) != FP_OK) {
        finish(s, 0);
    }
}

static void on_lifecycle(void *user_data, fp_lifecycle_event event, const fp_error *e) {
    if (event == FP_EVENT_CONNECTION_FAILURE) {
        report("connect", e);
        finish((struct state *)user_data, 0);
    }
}

int main(int argc, char **argv) {
    struct state s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL};
    fp_client_options *opts = NULL;
    fp_result r;
    long port;

    if (argc != 7) {
        fputs("usage: minimal ENDPOINT PORT CA_FILE CLAIM_CERT CLAIM_KEY SERIAL_NUMBER\n", stderr);
        return 2;
    }
    s.serial = argv[6];
    port = strtol(argv[2], NULL, 10);
    if (fp_client_options_new(argv[1], &opts) != FP_OK || port < 1 || port > 65535 ||
        fp_client_options_set_port(opts, (uint16_t)port) != FP_OK ||
        fp_client_options_set_ca_file(opts, argv[3]) != FP_OK ||
        fp_client_options_set_cert_file(opts, argv[4]) != FP_OK ||
        fp_client_options_set_key_file(opts, argv[5]) != FP_OK ||
        fp_client_new(opts, &s.client) != FP_OK) {
        fputs("bad arguments\n", stderr);
        fp_client_options_free(opts);
        return 2;
    }
    fp_client_options_free(opts); /* the client keeps its own copy */

    /* The create operation waits for the connection; a failed connection fails it too. */
    r = fp_client_connect(s.client, on_lifecycle, &s);
    if (r == FP_OK) {
        r = fp_create_keys(s.client, on_created, &s);
    }
    if (r == FP_OK) {
        pthread_mutex_lock(&s.lock);
        while (!s.done) {
            pthread_cond_wait(&s.done_cv, &s.lock);
        }
        pthread_mutex_unlock(&s.lock);
    } else {
        fprintf(stderr, "cannot start: %s\n", fp_result_str((int)r));
    }
    /* Cancels anything pending, disconnects, and returns after the last callback. */
    fp_client_free(s.client);
    return r == FP_OK && s.ok ? 0 : 1;
}
