/* fp_provision_start(): cancelling at each step, from the progress callback and from another
 * thread, the blocking wait, and the handle's rules.
 *
 * usage: provision_cancel ENDPOINT PORT CA CERT KEY STORE_BASE SILENT_PORT LIMIT_MS
 *   STORE_BASE: a directory for the stores; SILENT_PORT: a port that accepts TCP and never
 *   answers; LIMIT_MS: the longest a cancelled run may take to deliver its callback.
 * Prints one "...: ok" line per check and "provision_cancel: ok" at the end; exits non-zero
 * naming the failed check otherwise.
 */
#include <time.h>

#include "test_util.h"

struct run {
    struct board board;
    fp_provision_op *op;
    /* The step to cancel at from the progress callback (-1: never), and which of its
     * occurrences. */
    int cancel_at;
    int cancel_nth;
    int seen;
    int stepped;     /* progress events so far */
    int done;        /* final callbacks so far */
    int code;
    int wait_inside; /* what fp_provision_wait() returned inside the callback */
    double cancelled_at, done_at;
    char thing[128];
    char cert_id[80];
};

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

static void on_progress(void *user_data, fp_provision_step step, uint32_t attempt,
                        uint64_t delay_ms, const char *detail) {
    struct run *r = (struct run *)user_data;
    (void)attempt;
    (void)delay_ms;
    (void)detail;
    if ((int)step == r->cancel_at && ++r->seen == r->cancel_nth) {
        r->cancelled_at = now_ms();
        CHECK_RESULT(fp_provision_cancel(r->op), FP_OK);
        /* Twice is harmless. */
        CHECK_RESULT(fp_provision_cancel(r->op), FP_OK);
    }
    board_lock(&r->board);
    r->stepped++;
    board_post(&r->board);
}

static void on_done(void *user_data, const fp_provisioned *result, const fp_error *error) {
    struct run *r = (struct run *)user_data;
    r->done_at = now_ms();
    r->wait_inside = (int)fp_provision_wait(r->op, NULL, NULL);
    board_lock(&r->board);
    r->done++;
    r->code = result != NULL ? FP_OK : (int)fp_error_code(error);
    if (result != NULL) {
        snprintf(r->thing, sizeof r->thing, "%s", fp_provisioned_thing_name(result));
        snprintf(r->cert_id, sizeof r->cert_id, "%s", fp_provisioned_certificate_id(result));
    }
    board_post(&r->board);
}

static fp_provision_options *make_provision_options(const struct conn_args *a, int port,
                                                    const char *store, int force) {
    fp_client_options *claim = make_options(a, port, 5);
    fp_provision_options *o = NULL;
    CHECK_RESULT(fp_provision_options_new(claim, "FleetTemplate", store, &o), FP_OK);
    fp_client_options_free(claim);
    CHECK_RESULT(fp_provision_options_set_parameters(
                     o, "{\"SerialNumber\":\"cancel\",\"DeviceLocation\":\"Seattle\"}"),
                 FP_OK);
    CHECK_RESULT(fp_provision_options_set_force(o, force), FP_OK);
    return o;
}

static void run_init(struct run *r, int cancel_at, int nth) {
    memset(r, 0, sizeof *r);
    board_init(&r->board);
    r->cancel_at = cancel_at;
    r->cancel_nth = nth;
}

/* The blocking form: provisions (or reuses) and returns the certificate id and reuse flag. */
static void provision_blocking(const struct conn_args *a, const char *store, int force,
                               char *cert_id, size_t cert_id_len, int *reused) {
    fp_provision_options *o = make_provision_options(a, 0, store, force);
    fp_provision_op *op = NULL;
    CHECK_RESULT(fp_provision_start(o, NULL, NULL, NULL, &op), FP_OK);
    fp_provision_options_free(o);
    const fp_provisioned *id = NULL;
    const fp_error *err = NULL;
    fp_result rc = fp_provision_wait(op, &id, &err);
    if (rc != FP_OK) {
        fprintf(stderr, "provisioning failed: %s\n", fp_error_message(err));
    }
    CHECK_RESULT(rc, FP_OK);
    CHECK(id != NULL && err == NULL);
    snprintf(cert_id, cert_id_len, "%s", fp_provisioned_certificate_id(id));
    *reused = fp_provisioned_reused(id);
    /* Waiting again gives the same answer; cancelling after the end does nothing. */
    const fp_provisioned *again = NULL;
    CHECK_RESULT(fp_provision_cancel(op), FP_OK);
    CHECK_RESULT(fp_provision_wait(op, &again, NULL), FP_OK);
    CHECK(again == id);
    fp_provision_op_free(op);
}

static int has_identity(const char *store) {
    char path[1024];
    snprintf(path, sizeof path, "%s/identity.json", store);
    FILE *f = fopen(path, "r");
    if (f != NULL) fclose(f);
    return f != NULL;
}

/* Starts a run that cancels itself at the `nth` event of `step`; checks FP_ERR_CANCELLED,
 * one callback, within the limit. */
static void cancel_at(const struct conn_args *a, const char *store, int force,
                      fp_provision_step step, int nth, double limit_ms) {
    struct run r;
    run_init(&r, (int)step, nth);
    fp_provision_options *o = make_provision_options(a, 0, store, force);
    CHECK_RESULT(fp_provision_start(o, on_progress, on_done, &r, &r.op), FP_OK);
    fp_provision_options_free(o);
    const fp_error *err = NULL;
    const fp_provisioned *id = NULL;
    CHECK_RESULT(fp_provision_wait(r.op, &id, &err), FP_ERR_CANCELLED);
    CHECK(id == NULL && err != NULL);
    CHECK_RESULT(fp_error_code(err), FP_ERR_CANCELLED);
    CHECK(r.done == 1 && r.code == FP_ERR_CANCELLED);
    CHECK_RESULT(r.wait_inside, FP_ERR_INVALID_ARGUMENT);
    CHECK(r.cancelled_at > 0);
    double took = r.done_at - r.cancelled_at;
    if (took > limit_ms) {
        fprintf(stderr, "cancel at %s: the callback came %.1f ms after the cancel\n",
                fp_provision_step_str((int)step), took);
        exit(1);
    }
    fp_provision_op_free(r.op);
    board_destroy(&r.board);
    printf("cancel at %s #%d%s: ok (%.1f ms)\n", fp_provision_step_str((int)step), nth,
           force ? " with an identity" : "", took);
}

int main(int argc, char **argv) {
    struct conn_args a;
    parse_conn_args(argc, argv, 3, &a);
    const char *base = argv[6];
    int silent_port = atoi(argv[7]);
    double limit_ms = atof(argv[8]);
    char store[1024];

    /* Names and the handle's NULL rules. */
    CHECK_STR(fp_provision_step_str(FP_STEP_CONNECTING), "connecting");
    CHECK_STR(fp_provision_step_str(FP_STEP_VERIFYING), "verifying");
    CHECK_STR(fp_provision_step_str(FP_STEP_REUSING), "reusing");
    CHECK_STR(fp_provision_step_str(FP_STEP_ROTATING), "rotating");
    CHECK_STR(fp_provision_step_str(FP_STEP_CERTIFICATE_ABANDONED), "certificate abandoned");
    CHECK_STR(fp_provision_step_str(99), "unknown step");
    CHECK_RESULT(fp_provision_cancel(NULL), FP_ERR_NULL_ARGUMENT);
    CHECK_RESULT(fp_provision_wait(NULL, NULL, NULL), FP_ERR_NULL_ARGUMENT);
    fp_provision_op_free(NULL);
    snprintf(store, sizeof store, "%s/unused", base);
    {
        fp_provision_options *o = make_provision_options(&a, 0, store, 0);
        CHECK_RESULT(fp_provision_start(o, NULL, NULL, NULL, NULL), FP_ERR_NULL_ARGUMENT);
        CHECK_RESULT(fp_provision_start(NULL, NULL, NULL, NULL, NULL), FP_ERR_NULL_ARGUMENT);
        fp_provision_op *op = NULL;
        CHECK_RESULT(fp_provision_start(NULL, NULL, on_done, NULL, &op), FP_ERR_NULL_ARGUMENT);
        CHECK(op == NULL);
        fp_provision_options_free(o);
    }
    printf("null arguments: ok\n");

    const fp_provision_step steps[] = {FP_STEP_CONNECTING, FP_STEP_CREATING,
                                       FP_STEP_REGISTERING, FP_STEP_SAVING, FP_STEP_VERIFYING};
    const size_t n_steps = sizeof steps / sizeof steps[0];

    /* A first run cancelled at each step leaves no identity, and the next run provisions;
     * once the cancelled run had saved its registered identity (saving, verifying) it is
     * kept pending, and the next run verifies and keeps it instead. */
    for (size_t i = 0; i < n_steps; i++) {
        snprintf(store, sizeof store, "%s/fresh-%d", base, (int)i);
        cancel_at(&a, store, 0, steps[i], 1, limit_ms);
        CHECK(!has_identity(store));
        char id[80];
        int reused = -1;
        provision_blocking(&a, store, 0, id, sizeof id, &reused);
        CHECK(reused == 0 || steps[i] == FP_STEP_SAVING || steps[i] == FP_STEP_VERIFYING);
        CHECK(has_identity(store));
    }
    printf("cancelled first runs leave no identity: ok\n");

    /* With an identity in the store, a forced run cancelled at each step (the device
     * connection's own "connecting" too) keeps it. */
    snprintf(store, sizeof store, "%s/kept", base);
    char first[80];
    int reused = -1;
    provision_blocking(&a, store, 0, first, sizeof first, &reused);
    CHECK(reused == 0);
    for (size_t i = 0; i <= n_steps; i++) {
        if (i < n_steps) {
            cancel_at(&a, store, 1, steps[i], 1, limit_ms);
        } else {
            cancel_at(&a, store, 1, FP_STEP_CONNECTING, 2, limit_ms);
        }
        char now[80];
        provision_blocking(&a, store, 0, now, sizeof now, &reused);
        CHECK(reused == 1);
        if (strcmp(now, first) != 0) {
            /* The cancelled run's identity, saved and pending: verified and kept now. */
            CHECK(i == n_steps || steps[i] == FP_STEP_SAVING || steps[i] == FP_STEP_VERIFYING);
            snprintf(first, sizeof first, "%s", now);
        }
    }
    printf("cancelled forced runs keep the identity: ok\n");

    /* Cancelled from another thread while the run waits on the network (a server that
     * never answers the TLS handshake). */
    {
        struct run r;
        run_init(&r, -1, 0);
        snprintf(store, sizeof store, "%s/silent", base);
        fp_provision_options *o = make_provision_options(&a, silent_port, store, 0);
        CHECK_RESULT(fp_provision_start(o, on_progress, on_done, &r, &r.op), FP_OK);
        fp_provision_options_free(o);
        board_wait(&r.board, &r.stepped, 1);
        r.cancelled_at = now_ms();
        CHECK_RESULT(fp_provision_cancel(r.op), FP_OK);
        CHECK_RESULT(fp_provision_wait(r.op, NULL, NULL), FP_ERR_CANCELLED);
        CHECK(r.done == 1 && r.code == FP_ERR_CANCELLED);
        double took = r.done_at - r.cancelled_at;
        if (took > limit_ms) {
            fprintf(stderr, "cancel while connecting: %.1f ms\n", took);
            exit(1);
        }
        fp_provision_op_free(r.op);
        board_destroy(&r.board);
        printf("cancel from another thread while connecting: ok (%.1f ms)\n", took);
    }

    /* A handle freed while its run goes on: the callback still comes, once. */
    {
        struct run r;
        run_init(&r, -1, 0);
        snprintf(store, sizeof store, "%s/kept", base);
        fp_provision_options *o = make_provision_options(&a, 0, store, 0);
        fp_provision_op *op = NULL;
        CHECK_RESULT(fp_provision_start(o, NULL, on_done, &r, &op), FP_OK);
        fp_provision_options_free(o);
        /* The callback's own wait needs the handle: it may use r.op, left NULL here. */
        fp_provision_op_free(op);
        board_wait(&r.board, &r.done, 1);
        CHECK(r.code == FP_OK && r.done == 1);
        CHECK_STR(r.cert_id, first);
        printf("free without cancel: ok\n");
        board_destroy(&r.board);
    }

    printf("provision_cancel: ok\n");
    return 0;
}
