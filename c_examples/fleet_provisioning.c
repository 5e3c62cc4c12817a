/*
 * Fleet provisioning demo: connect with a claim certificate, get a certificate
 * (CreateKeysAndCertificate, or CreateCertificateFromCsr with --csr), register the thing
 * with a provisioning template (RegisterThing), print the result, disconnect.
 *
 * With --output_dir DIR the directory is the device's identity store, through
 * fp_provision_start(): the first run provisions (a key made on the device and the CSR flow by
 * default, --key_type), saves the identity and proves it by connecting with it; later runs
 * reuse it, connect with it and print the thing name, without provisioning again. --force
 * provisions anew and replaces the stored identity once the new one is verified.
 * --rotate_before SECONDS renews the stored identity with itself (no claim) once its
 * certificate has at most that long left, through --rotation_template if given.
 *
 * With --output_dir, Ctrl-C (SIGINT) or SIGTERM cancels the run through its handle
 * (fp_provision_cancel): it prints why on stderr and exits 8; the store keeps the identity it
 * held before, or none, never half of one.
 *
 * With --pkcs11_lib the claim key can be a key in a PKCS#11 token (--key_label), and with
 * --output_dir too the device key is kept in the token: generated there on the first run
 * (not extractable, --device_key_label, default "fleetprov-device"), its certificate stored
 * there and in the store, and reused by later runs; no key file is written.
 *
 * Without --csr and --output_dir (the keys flow: CreateKeysAndCertificate, whose answer is
 * the only copy of the private key, then RegisterThing, which activates its certificate)
 * --identity_file FILE is required: the certificate and key are written there (0600, never
 * over an existing file) before RegisterThing is sent, so no certificate is activated for a
 * key that was thrown away.
 *
 * Exit codes: 0 success, 2 usage, 3 connection failed or lost, 4 rejected by the service,
 * 5 timeout, 6 other error, 7 identity store or --identity_file error, 8 cancelled by SIGINT
 * or SIGTERM (with --output_dir). Failures print one line on stderr.
 * The private key is never printed; --output_dir saves it (0600) with the certificate, unless
 * it is in a PKCS#11 token.
 *
 * Build: see the Makefile (`make`), which links it against libfleetprov.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "fleetprov.h"

enum {
    EXIT_USAGE = 2,
    EXIT_CONNECTION = 3,
    EXIT_REJECTED = 4,
    EXIT_TIMEOUT = 5,
    EXIT_OTHER = 6,
    EXIT_OUTPUT = 7,
    EXIT_CANCELLED = 8
};

struct args {
    const char *endpoint;
    const char *port;
    const char *cert;
    const char *key;
    const char *ca_file;
    const char *client_id;
    const char *template_name;
    const char *template_parameters;
    const char *csr;
    const char *proxy_host;
    const char *proxy_port;
    const char *verbosity;
    const char *mqtt_version;
    const char *timeout_ms;
    const char *output_dir;
    const char *payload_format;
    /* The claim key in a PKCS#11 token instead of --key (AWS's samples' flag names). */
    const char *pkcs11_lib;
    const char *pin;
    const char *token_label;
    const char *slot_id;
    const char *key_label;
    const char *device_key_label;
    const char *key_type;
    const char *max_attempts;
    const char *identity_file;
    const char *rotate_before;
    const char *rotation_template;
    int force;
};

/* A value copied out of a callback (the library's strings are borrowed for its duration). */
struct config_entry {
    char *key;
    char *value;
};

/* State shared between main and the callbacks, guarded by `lock`. */
struct demo {
    pthread_mutex_t lock;
    pthread_cond_t changed;

    int connect_done; /* 1 once connected or failed */
    fp_result connect_code;
    char connect_message[512];
    int stopped;

    int op_done; /* 1 once the current operation's callback ran */
    fp_result op_code;
    char op_message[512];
    int status_code;
    char aws_code[128];
    char aws_message[512];

    char *certificate_id;
    char *certificate_pem;
    char *private_key; /* wiped and freed by wipe_free() */
    char *token;
    char *thing_name;
    struct config_entry *config;
    size_t config_len;
};

static const char *const USAGE =
    "usage: fleet_provisioning --endpoint HOST --cert FILE --key FILE --template_name NAME\n"
    "         [--template_parameters JSON] [--csr FILE] [--ca_file FILE] [--port N]\n"
    "         [--client_id ID] [--proxy_host HOST] [--proxy_port N (8080)]\n"
    "         [--verbosity NoLogs|Fatal|Error|Warn|Info|Debug|Trace] [--mqtt_version 3|5]\n"
    "         [--timeout_ms N] [--payload_format json|cbor]\n"
    "         [--identity_file FILE] (without --csr and --output_dir: where the key goes)\n"
    "         [--output_dir DIR [--force] [--key_type ec-p256|ec-p384|rsa-2048|service]\n"
    "          [--max_attempts N] [--rotate_before SECONDS] [--rotation_template NAME]]\n"
    "         [--pkcs11_lib MODULE [--pin PIN] [--token_label LABEL] [--slot_id N]\n"
    "          [--key_label LABEL] (the claim key in the token, instead of --key)\n"
    "          [--device_key_label LABEL] (with --output_dir: the device key made and kept\n"
    "          in the token; default fleetprov-device)]\n";

static void fail_line(const char *fmt, ...) {
    va_list ap;
    fputs("fleet_provisioning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static char *dup_str(const char *s) {
    size_t n;
    char *out;
    if (s == NULL) {
        return NULL;
    }
    n = strlen(s) + 1;
    out = (char *)malloc(n);
    if (out != NULL) {
        memcpy(out, s, n);
    }
    return out;
}

/* Overwrites a secret before freeing it; volatile so the compiler cannot drop the stores. */
static void wipe_free(char *secret) {
    if (secret != NULL) {
        volatile char *p = secret;
        while (*p != '\0') {
            *p++ = '\0';
        }
        free(secret);
    }
}

static void copy_bounded(char *dst, size_t cap, const char *src) {
    if (src == NULL) {
        src = "";
    }
    strncpy(dst, src, cap - 1);
    dst[cap - 1] = '\0';
}

/* ---------- arguments ---------- */

static int parse_args(int argc, char **argv, struct args *a) {
    struct flag {
        const char *name;
        const char **slot;
    } flags[32];
    int i;
    size_t nflags = 0;

    memset(a, 0, sizeof *a);
    a->proxy_port = "8080";
    a->verbosity = "NoLogs";
    a->mqtt_version = "5";
    /* A flag beyond the table's room is a bug of this program: stop rather than overrun. */
#define FLAG(n, s)                                                                                 \
    do {                                                                                           \
        if (nflags == sizeof flags / sizeof flags[0]) {                                            \
            abort();                                                                               \
        }                                                                                          \
        flags[nflags].name = (n);                                                                  \
        flags[nflags].slot = (s);                                                                  \
        nflags++;                                                                                  \
    } while (0)
    FLAG("--endpoint", &a->endpoint);
    FLAG("--port", &a->port);
    FLAG("--cert", &a->cert);
    FLAG("--key", &a->key);
    FLAG("--ca_file", &a->ca_file);
    FLAG("--client_id", &a->client_id);
    FLAG("--template_name", &a->template_name);
    FLAG("--template_parameters", &a->template_parameters);
    FLAG("--csr", &a->csr);
    FLAG("--proxy_host", &a->proxy_host);
    FLAG("--proxy_port", &a->proxy_port);
    FLAG("--verbosity", &a->verbosity);
    FLAG("--mqtt_version", &a->mqtt_version);
    FLAG("--timeout_ms", &a->timeout_ms);
    FLAG("--output_dir", &a->output_dir);
    FLAG("--payload_format", &a->payload_format);
    FLAG("--pkcs11_lib", &a->pkcs11_lib);
    FLAG("--pin", &a->pin);
    FLAG("--token_label", &a->token_label);
    FLAG("--slot_id", &a->slot_id);
    FLAG("--key_label", &a->key_label);
    FLAG("--device_key_label", &a->device_key_label);
    FLAG("--key_type", &a->key_type);
    FLAG("--max_attempts", &a->max_attempts);
    FLAG("--identity_file", &a->identity_file);
    FLAG("--rotate_before", &a->rotate_before);
    FLAG("--rotation_template", &a->rotation_template);
#undef FLAG

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = NULL;
        size_t f, name_len;
        int matched = 0;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(USAGE, stdout);
            exit(0);
        }
        if (strcmp(arg, "--force") == 0) {
            a->force = 1;
            continue;
        }
        for (f = 0; f < nflags; f++) {
            name_len = strlen(flags[f].name);
            if (strncmp(arg, flags[f].name, name_len) != 0) {
                continue;
            }
            if (arg[name_len] == '=') {
                value = arg + name_len + 1;
            } else if (arg[name_len] == '\0') {
                if (i + 1 >= argc) {
                    fail_line("%s needs a value", flags[f].name);
                    return -1;
                }
                value = argv[++i];
            } else {
                continue;
            }
            *flags[f].slot = value;
            matched = 1;
            break;
        }
        if (!matched) {
            fail_line("unknown argument %s", arg);
            return -1;
        }
    }
    if (a->endpoint == NULL || a->cert == NULL || a->template_name == NULL ||
        (a->key == NULL) == (a->key_label == NULL)) {
        fail_line("--endpoint, --cert, --template_name and one of --key and --key_label "
                  "(with --pkcs11_lib) are required");
        return -1;
    }
    if (a->pkcs11_lib == NULL && (a->key_label != NULL || a->device_key_label != NULL)) {
        fail_line("--key_label and --device_key_label need --pkcs11_lib");
        return -1;
    }
    if (a->device_key_label != NULL && a->output_dir == NULL) {
        fail_line("--device_key_label needs --output_dir (the identity store)");
        return -1;
    }
    return 0;
}

/* Parses a decimal number in [min, max]; -1 on anything else. */
static long parse_number(const char *s, long min, long max) {
    char *end = NULL;
    long v;
    if (s == NULL || *s == '\0') {
        return -1;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -1;
    }
    return v;
}

static int parse_verbosity(const char *s) {
    static const char *const names[] = {"NoLogs", "Fatal", "Error", "Warn",
                                        "Info",   "Debug", "Trace"};
    static const fp_log_level levels[] = {FP_LOG_NONE, FP_LOG_FATAL, FP_LOG_ERROR, FP_LOG_WARN,
                                          FP_LOG_INFO, FP_LOG_DEBUG, FP_LOG_TRACE};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i]) == 0) {
            return (int)levels[i];
        }
    }
    return -1;
}

/* Until the demo's own log callback goes in: keeps the last reason the library logged, the
 * why behind a call that returns only a code (fp_register_thing_check(),
 * fp_client_options_new()). `user_data` is a buffer of REASON_LEN bytes. */
enum { REASON_LEN = 512 };

static void remember_reason(void *user_data, fp_log_level level, const char *message) {
    (void)level;
    copy_bounded((char *)user_data, REASON_LEN, message);
}

/* The library's reason if it gave one, else the name of the code. */
static const char *reason_or_code(const char *reason, fp_result r) {
    return reason[0] != '\0' ? reason : fp_result_str((int)r);
}

/* The template name, then the parameters, checked before anything is sent: each mistake
 * (a bad name; parameters that are not JSON, not an object, or with a value that is not a
 * string) gets its own line, with the library's reason. */
static int check_template(const struct args *a, char *reason) {
    fp_result r;
    reason[0] = '\0';
    r = fp_register_thing_check(a->template_name, NULL);
    if (r != FP_OK) {
        fail_line("--template_name %s: %s", a->template_name, reason_or_code(reason, r));
        return EXIT_USAGE;
    }
    r = fp_register_thing_check(a->template_name, a->template_parameters);
    if (r != FP_OK) {
        fail_line("--template_parameters: %s", reason_or_code(reason, r));
        return EXIT_USAGE;
    }
    return 0;
}

static void log_to_stderr(void *user_data, fp_log_level level, const char *message) {
    static const char *const names[] = {"NONE", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
    const char *name = ((int)level >= 0 && (int)level <= 6) ? names[level] : "?";
    (void)user_data;
    fprintf(stderr, "[fleetprov %s] %s\n", name, message);
}

/* Reads a whole file into a NUL-terminated buffer; NULL (errno set) on failure. */
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (f == NULL) {
        return NULL;
    }
    for (;;) {
        size_t n;
        if (cap - len < 4096) {
            char *grown;
            cap = cap == 0 ? 8192 : cap * 2;
            grown = (char *)realloc(buf, cap);
            if (grown == NULL) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return NULL;
            }
            buf = grown;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        errno = EIO;
        return NULL;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* ---------- identity store (--output_dir, through fp_provision_start) ---------- */

static fp_result configure_pkcs11(const struct args *a, fp_client_options *opts,
                                  const char *label);

/* Ctrl-C. SIGINT and SIGTERM are blocked before the library starts its threads (which inherit
 * the mask), and one thread of ours takes them with sigwait() and cancels the run: nothing
 * runs in a signal handler, so nothing needs to be async-signal-safe. */
struct stopper {
    sigset_t signals;
    pthread_t thread;
    pthread_mutex_t lock;
    fp_provision_op *op;
    int finished; /* the run has ended: a signal now only ends the thread */
    int signal;   /* the signal that cancelled the run, 0 if none */
};

static void *stopper_main(void *arg) {
    struct stopper *st = arg;
    int sig = 0;
    if (sigwait(&st->signals, &sig) != 0) {
        return NULL;
    }
    pthread_mutex_lock(&st->lock);
    if (!st->finished) {
        st->signal = sig;
        fp_provision_cancel(st->op);
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

static void on_store_progress(void *user_data, fp_provision_step step, uint32_t attempt,
                              uint64_t delay_ms, const char *detail) {
    (void)user_data;
    if (step == FP_STEP_RETRY_SCHEDULED) {
        printf("[attempt %u] retry in %llu ms: %s\n", (unsigned)attempt,
               (unsigned long long)delay_ms, detail);
    } else {
        printf("[attempt %u] %s (%s)\n", (unsigned)attempt, fp_provision_step_str((int)step),
               detail);
    }
    fflush(stdout);
}

static int exit_code_of(fp_result r) {
    switch (r) {
    case FP_ERR_CONNECTION:
    case FP_ERR_CONNECTION_REFUSED:
    case FP_ERR_TLS:
    case FP_ERR_DISCONNECTED:
    case FP_ERR_NOT_CONNECTED: return EXIT_CONNECTION;
    case FP_ERR_REJECTED: return EXIT_REJECTED;
    case FP_ERR_TIMEOUT: return EXIT_TIMEOUT;
    case FP_ERR_STORE: return EXIT_OUTPUT;
    case FP_ERR_INVALID_ARGUMENT: return EXIT_USAGE;
    case FP_ERR_CANCELLED: return EXIT_CANCELLED;
    default: return EXIT_OTHER;
    }
}

static void print_identity(const fp_provisioned *result) {
    size_t i, n;
    const char *previous = fp_provisioned_previous_certificate_id(result);
    printf("Thing: %s\n", fp_provisioned_thing_name(result));
    printf("%s (connected as %s, %u attempt%s).\n",
           fp_provisioned_reused(result)    ? "Reused the stored identity, verified by connecting"
           : fp_provisioned_rotated(result) ? "Rotated the stored identity without the claim, "
                                              "saved and verified by connecting"
                                            : "Provisioned, saved and verified by connecting",
           fp_provisioned_client_id(result), (unsigned)fp_provisioned_attempts(result),
           fp_provisioned_attempts(result) == 1 ? "" : "s");
    printf("Certificate id: %s\n", fp_provisioned_certificate_id(result));
    if (previous != NULL) {
        printf("Replaced certificate id: %s (still active in the account: deactivate it once "
               "the device uses the new one)\n",
               previous);
    }
    if (fp_provisioned_key_location(result) == FP_KEY_LOCATION_PKCS11) {
        printf("Stored: %s, %s; the private key stays in the PKCS#11 token\n",
               fp_provisioned_metadata_file(result), fp_provisioned_certificate_file(result));
    } else {
        printf("Stored: %s, %s, %s\n", fp_provisioned_metadata_file(result),
               fp_provisioned_certificate_file(result), fp_provisioned_private_key_file(result));
    }
    n = fp_provisioned_device_configuration_len(result);
    printf("Device configuration:\n");
    for (i = 0; i < n; i++) {
        const fp_key_value *kv = fp_provisioned_device_configuration_at(result, i);
        printf("  %s = %s\n", kv->key, kv->value);
    }
    /* Certificates the run obtained and did not keep: deactivate them from a backend. */
    n = fp_provisioned_abandoned_certificate_count(result);
    for (i = 0; i < n; i++) {
        printf("Abandoned certificate (not kept, may be Active): %s\n",
               fp_provisioned_abandoned_certificate_at(result, i));
    }
    fflush(stdout);
}

/* Runs the provisioning `o` describes until it ends or SIGINT/SIGTERM cancels it. `reason`
 * holds the last error the library logged, read if the run cannot start. */
static int run_cancellable(const fp_provision_options *o, const char *store,
                           const char *reason) {
    struct stopper st;
    const fp_provisioned *result = NULL;
    const fp_error *error = NULL;
    fp_result r;
    int code = 0;

    memset(&st, 0, sizeof st);
    sigemptyset(&st.signals);
    sigaddset(&st.signals, SIGINT);
    sigaddset(&st.signals, SIGTERM);
    pthread_mutex_init(&st.lock, NULL);
    if (pthread_sigmask(SIG_BLOCK, &st.signals, NULL) != 0) {
        fail_line("cannot block SIGINT and SIGTERM");
        return EXIT_OTHER;
    }
    /* The handle is written before the run starts; the stopper starts after. */
    r = fp_provision_start(o, on_store_progress, NULL, NULL, &st.op);
    if (r != FP_OK) {
        fail_line("cannot start provisioning: %s", reason_or_code(reason, r));
        code = exit_code_of(r);
    } else {
        int stopper = pthread_create(&st.thread, NULL, stopper_main, &st) == 0;
        r = fp_provision_wait(st.op, &result, &error);
        if (stopper) {
            pthread_mutex_lock(&st.lock);
            st.finished = 1;
            pthread_mutex_unlock(&st.lock);
            pthread_kill(st.thread, SIGTERM); /* ends its sigwait() */
            pthread_join(st.thread, NULL);
        }
        if (r == FP_OK) {
            print_identity(result);
        } else if (r == FP_ERR_CANCELLED && st.signal != 0) {
            fail_line("interrupted by %s: provisioning cancelled; %s keeps the identity it "
                      "held before, if any",
                      st.signal == SIGINT ? "SIGINT" : "SIGTERM", store);
            code = EXIT_CANCELLED;
        } else if (r == FP_ERR_REJECTED) {
            fail_line("provisioning failed (%s): statusCode=%d errorCode=%s: %s",
                      fp_result_str((int)r), fp_error_status_code(error),
                      fp_error_aws_code(error), fp_error_message(error));
            code = exit_code_of(r);
        } else {
            fail_line("provisioning failed (%s): %s", fp_result_str((int)r),
                      fp_error_message(error));
            code = exit_code_of(r);
        }
        fp_provision_op_free(st.op);
    }
    pthread_mutex_destroy(&st.lock);
    return code;
}

/* With --pkcs11_lib: the device key made (or found) in the token, labelled
 * --device_key_label, and its certificate stored there too. */
static fp_result device_key_in_token(const struct args *a, fp_provision_options *o,
                                     int key_type) {
    fp_client_options *token = NULL;
    fp_pkcs11_key_type type;
    fp_result r;
    switch (key_type) {
    case FP_KEY_EC_P256: type = FP_PKCS11_KEY_EC_P256; break;
    case FP_KEY_EC_P384: type = FP_PKCS11_KEY_EC_P384; break;
    case FP_KEY_RSA_2048: type = FP_PKCS11_KEY_RSA_2048; break;
    default: return FP_ERR_INVALID_ARGUMENT;
    }
    r = fp_client_options_new(a->endpoint, &token);
    if (r == FP_OK) {
        r = configure_pkcs11(a, token, a->device_key_label != NULL ? a->device_key_label
                                                                   : "fleetprov-device");
    }
    if (r == FP_OK) {
        r = fp_provision_options_set_device_key_pkcs11(o, token, (int)type, 1);
    }
    fp_client_options_free(token);
    return r;
}

/* The store run's log: what --verbosity asks for on stderr, and the last error kept, the why
 * behind fp_provision() refusing to start (a key type not built in, ...). */
struct store_log {
    int level;
    char reason[REASON_LEN];
};

static void log_for_store(void *user_data, fp_log_level level, const char *message) {
    struct store_log *l = (struct store_log *)user_data;
    if (level == FP_LOG_ERROR || level == FP_LOG_FATAL) {
        copy_bounded(l->reason, REASON_LEN, message);
    }
    if ((int)level <= l->level) {
        log_to_stderr(NULL, level, message);
    }
}

/* Provisions into, or reuses, the identity store a->output_dir. */
static int provision_to_store(const struct args *a, const fp_client_options *claim, int level) {
    struct store_log log;
    static const char *const key_names[] = {"ec-p256", "ec-p384", "rsa-2048", "service"};
    static const fp_key_type key_types[] = {FP_KEY_EC_P256, FP_KEY_EC_P384, FP_KEY_RSA_2048,
                                            FP_KEY_SERVICE};
    fp_provision_options *o = NULL;
    fp_result r;
    size_t i;
    int key_type = -1;
    int code;
    long attempts = -1;
    long rotate_before = -1;

    for (i = 0; i < sizeof key_names / sizeof key_names[0]; i++) {
        if (strcmp(a->key_type != NULL ? a->key_type : "ec-p256", key_names[i]) == 0) {
            key_type = (int)key_types[i];
        }
    }
    if (key_type < 0) {
        fail_line("--key_type must be ec-p256, ec-p384, rsa-2048 or service");
        return EXIT_USAGE;
    }
    if (a->max_attempts != NULL && (attempts = parse_number(a->max_attempts, 1, 1000)) < 0) {
        fail_line("--max_attempts must be 1-1000");
        return EXIT_USAGE;
    }
    /* Up to about 31 years: more than an AWS IoT certificate lasts (to the end of 2049). */
    if (a->rotate_before != NULL &&
        (rotate_before = parse_number(a->rotate_before, 0, 1000000000L)) < 0) {
        fail_line("--rotate_before must be 0-1000000000 seconds");
        return EXIT_USAGE;
    }
    r = fp_provision_options_new(claim, a->template_name, a->output_dir, &o);
    if (r == FP_OK) {
        r = fp_provision_options_set_parameters(o, a->template_parameters);
    }
    if (r == FP_OK && a->pkcs11_lib != NULL) {
        r = device_key_in_token(a, o, key_type);
        if (r == FP_ERR_INVALID_ARGUMENT && key_type == (int)FP_KEY_SERVICE) {
            fail_line("--key_type service gives a key in a file: with --pkcs11_lib the device "
                      "key is made in the token (ec-p256, ec-p384 or rsa-2048)");
            fp_provision_options_free(o);
            return EXIT_USAGE;
        }
    } else if (r == FP_OK) {
        r = fp_provision_options_set_key_type(o, key_type);
    }
    if (r == FP_OK) {
        r = fp_provision_options_set_force(o, a->force);
    }
    if (r == FP_OK && attempts > 0) {
        r = fp_provision_options_set_max_attempts(o, (uint32_t)attempts);
    }
    if (r == FP_OK && rotate_before >= 0) {
        r = fp_provision_options_set_rotate_before_ms(o, (uint64_t)rotate_before * 1000u);
    }
    if (r == FP_OK && a->rotation_template != NULL) {
        r = fp_provision_options_set_rotation_template(o, a->rotation_template);
        if (r != FP_OK) {
            fail_line("--rotation_template %s: 1-36 characters of A-Z a-z 0-9 _ -",
                      a->rotation_template);
            fp_provision_options_free(o);
            return EXIT_USAGE;
        }
    }
    if (r != FP_OK) {
        fail_line("invalid provisioning option: %s", fp_result_str((int)r));
        fp_provision_options_free(o);
        return EXIT_USAGE;
    }
    log.level = level;
    log.reason[0] = '\0';
    fp_set_log_callback(log_for_store, &log, NULL,
                        level > (int)FP_LOG_ERROR ? (fp_log_level)level : FP_LOG_ERROR);
    code = run_cancellable(o, a->output_dir, log.reason);
    fp_provision_options_free(o);
    /* `log` ends with this function: the library must not keep it. */
    fp_set_log_callback(log_to_stderr, NULL, NULL, (fp_log_level)level);
    return code;
}

/* ---------- callbacks (library threads) ---------- */

static void on_lifecycle(void *user_data, fp_lifecycle_event event, const fp_error *error) {
    struct demo *d = (struct demo *)user_data;
    pthread_mutex_lock(&d->lock);
    switch (event) {
    case FP_EVENT_CONNECTION_SUCCESS:
        d->connect_done = 1;
        d->connect_code = FP_OK;
        break;
    case FP_EVENT_CONNECTION_FAILURE:
        d->connect_done = 1;
        d->connect_code = fp_error_code(error);
        copy_bounded(d->connect_message, sizeof d->connect_message, fp_error_message(error));
        break;
    case FP_EVENT_DISCONNECTED:
        copy_bounded(d->connect_message, sizeof d->connect_message, fp_error_message(error));
        break;
    case FP_EVENT_STOPPED:
        d->stopped = 1;
        break;
    }
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
}

/* Records an operation's error; caller holds the lock. */
static void record_error(struct demo *d, const fp_error *error) {
    const char *aws_code = fp_error_aws_code(error);
    const char *aws_message = fp_error_aws_message(error);
    d->op_code = fp_error_code(error);
    copy_bounded(d->op_message, sizeof d->op_message, fp_error_message(error));
    d->status_code = fp_error_status_code(error);
    copy_bounded(d->aws_code, sizeof d->aws_code, aws_code);
    copy_bounded(d->aws_message, sizeof d->aws_message, aws_message);
}

static void record_out_of_memory(struct demo *d) {
    d->op_code = FP_ERR_INTERNAL;
    copy_bounded(d->op_message, sizeof d->op_message, "out of memory");
}

/* Ends every operation callback: marks the operation done, wakes main and unlocks. */
static void finish_op(struct demo *d) {
    d->op_done = 1;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
}

/* Copies what both create operations return (the private key, if any, is the caller's);
 * returns 0 when out of memory. */
static int keep_certificate(struct demo *d, const char *certificate_id,
                            const char *certificate_pem, const char *token) {
    d->op_code = FP_OK;
    d->certificate_id = dup_str(certificate_id);
    d->certificate_pem = dup_str(certificate_pem);
    d->token = dup_str(token);
    return d->certificate_id != NULL && d->certificate_pem != NULL && d->token != NULL;
}

static void on_create_keys(void *user_data, const fp_create_keys_response *response,
                           const fp_error *error) {
    struct demo *d = (struct demo *)user_data;
    pthread_mutex_lock(&d->lock);
    if (response != NULL) {
        int kept = keep_certificate(d, response->certificate_id, response->certificate_pem,
                                    response->certificate_ownership_token);
        d->private_key = dup_str(response->private_key);
        if (!kept || d->private_key == NULL) {
            record_out_of_memory(d);
        }
    } else {
        record_error(d, error);
    }
    finish_op(d);
}

static void on_create_from_csr(void *user_data, const fp_create_from_csr_response *response,
                               const fp_error *error) {
    struct demo *d = (struct demo *)user_data;
    pthread_mutex_lock(&d->lock);
    if (response != NULL) {
        if (!keep_certificate(d, response->certificate_id, response->certificate_pem,
                              response->certificate_ownership_token)) {
            record_out_of_memory(d);
        }
    } else {
        record_error(d, error);
    }
    finish_op(d);
}

static void on_register_thing(void *user_data, const fp_register_thing_response *response,
                              const fp_error *error) {
    struct demo *d = (struct demo *)user_data;
    pthread_mutex_lock(&d->lock);
    if (response != NULL) {
        size_t i;
        d->op_code = FP_OK;
        d->thing_name = dup_str(response->thing_name);
        d->config_len = 0;
        if (response->device_configuration_len > 0) {
            d->config = (struct config_entry *)calloc(response->device_configuration_len,
                                                      sizeof *d->config);
        }
        if (d->thing_name == NULL ||
            (response->device_configuration_len > 0 && d->config == NULL)) {
            record_out_of_memory(d);
        } else {
            for (i = 0; i < response->device_configuration_len; i++) {
                d->config[i].key = dup_str(response->device_configuration[i].key);
                d->config[i].value = dup_str(response->device_configuration[i].value);
                d->config_len = i + 1;
                if (d->config[i].key == NULL || d->config[i].value == NULL) {
                    record_out_of_memory(d);
                    break;
                }
            }
        }
    } else {
        record_error(d, error);
    }
    finish_op(d);
}

/* ---------- main flow ---------- */

static void wait_until(struct demo *d, const int *flag) {
    pthread_mutex_lock(&d->lock);
    while (!*flag) {
        pthread_cond_wait(&d->changed, &d->lock);
    }
    pthread_mutex_unlock(&d->lock);
}

/* Maps a failed operation to its exit code and prints the one-line reason. */
static int operation_failure(const struct demo *d, const char *operation) {
    switch (d->op_code) {
    case FP_ERR_REJECTED:
        fail_line("%s rejected: statusCode=%d errorCode=%s errorMessage=%s", operation,
                  d->status_code, d->aws_code, d->aws_message);
        return EXIT_REJECTED;
    case FP_ERR_TIMEOUT:
        fail_line("%s timed out: %s", operation, d->op_message);
        return EXIT_TIMEOUT;
    case FP_ERR_DISCONNECTED:
    case FP_ERR_CONNECTION:
    case FP_ERR_NOT_CONNECTED:
        fail_line("%s failed, connection lost: %s", operation, d->op_message);
        return EXIT_CONNECTION;
    default:
        fail_line("%s failed (%s): %s", operation, fp_result_str((int)d->op_code),
                  d->op_message);
        return EXIT_OTHER;
    }
}

static int start_failure(fp_result r, const char *what) {
    fail_line("%s: %s", what, fp_result_str((int)r));
    if (r == FP_ERR_NOT_CONNECTED) {
        return EXIT_CONNECTION;
    }
    return r == FP_ERR_INVALID_ARGUMENT || r == FP_ERR_INVALID_UTF8 ? EXIT_USAGE : EXIT_OTHER;
}

/* Writes the certificate and its key to `path` (0600, never over an existing file), fsynced:
 * done before RegisterThing activates the certificate. */
static int save_identity(const char *path, const char *certificate_pem, const char *key_pem) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    FILE *f;
    int ok;
    if (fd < 0) {
        fail_line("cannot create --identity_file %s: %s (RegisterThing not sent)", path,
                  strerror(errno));
        return EXIT_OUTPUT;
    }
    f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        fail_line("cannot write --identity_file %s: %s (RegisterThing not sent)", path,
                  strerror(errno));
        return EXIT_OUTPUT;
    }
    ok = fputs(certificate_pem, f) >= 0 && fputs(key_pem, f) >= 0 && fflush(f) == 0 &&
         fsync(fd) == 0;
    if (fclose(f) != 0) {
        ok = 0;
    }
    if (!ok) {
        fail_line("cannot write --identity_file %s: %s (RegisterThing not sent)", path,
                  strerror(errno));
        return EXIT_OUTPUT;
    }
    return 0;
}

static int provision(const struct args *a, struct demo *d, fp_client *client, const char *csr) {
    fp_result r;
    size_t i;

    r = fp_client_connect(client, on_lifecycle, d);
    if (r != FP_OK) {
        return start_failure(r, "cannot start connecting");
    }
    wait_until(d, &d->connect_done);
    if (d->connect_code != FP_OK) {
        fail_line("connection to %s failed (%s): %s", a->endpoint,
                  fp_result_str((int)d->connect_code), d->connect_message);
        /* An unreadable certificate or key file is a local problem, not the connection's. */
        return d->connect_code == FP_ERR_IO ? EXIT_OTHER : EXIT_CONNECTION;
    }
    printf("Connected to %s.\n", a->endpoint);

    d->op_done = 0;
    if (csr != NULL) {
        r = fp_create_from_csr(client, csr, on_create_from_csr, d);
    } else {
        r = fp_create_keys(client, on_create_keys, d);
    }
    if (r != FP_OK) {
        return start_failure(r, "cannot start creating the certificate");
    }
    wait_until(d, &d->op_done);
    if (d->op_code != FP_OK) {
        return operation_failure(d, csr != NULL ? "CreateCertificateFromCsr"
                                                : "CreateKeysAndCertificate");
    }
    printf("Certificate created: %s\n", d->certificate_id);
    if (d->private_key != NULL) {
        int saved = save_identity(a->identity_file, d->certificate_pem, d->private_key);
        if (saved != 0) {
            return saved;
        }
        printf("Certificate and private key saved to %s (not shown).\n", a->identity_file);
    }

    d->op_done = 0;
    r = fp_register_thing(client, a->template_name, d->token, a->template_parameters,
                          on_register_thing, d);
    if (r != FP_OK) {
        return start_failure(r, "cannot start RegisterThing");
    }
    wait_until(d, &d->op_done);
    if (d->op_code != FP_OK) {
        return operation_failure(d, "RegisterThing");
    }
    printf("Thing registered: %s\n", d->thing_name);
    printf("Device configuration:\n");
    for (i = 0; i < d->config_len; i++) {
        printf("  %s = %s\n", d->config[i].key, d->config[i].value);
    }

    return 0;
}

/* The key `label` in the PKCS#11 token: loaded, logged in to and found when used. */
static fp_result configure_pkcs11(const struct args *a, fp_client_options *opts,
                                  const char *label) {
    fp_result r = fp_client_options_set_pkcs11_module(opts, a->pkcs11_lib);
    long slot;
    if (r == FP_OK) {
        r = fp_client_options_set_pkcs11_key_label(opts, label);
    }
    if (r == FP_OK && a->pin != NULL) {
        r = fp_client_options_set_pkcs11_pin(opts, a->pin);
    }
    if (r == FP_OK && a->token_label != NULL) {
        r = fp_client_options_set_pkcs11_token_label(opts, a->token_label);
    }
    if (r == FP_OK && a->slot_id != NULL) {
        slot = parse_number(a->slot_id, 0, 2147483647L);
        r = slot < 0 ? FP_ERR_INVALID_ARGUMENT
                     : fp_client_options_set_pkcs11_slot_id(opts, (uint64_t)slot);
    }
    return r;
}

static int configure(const struct args *a, fp_client_options *opts) {
    long port = -1, version, proxy_port, timeout_ms;
    fp_result r = FP_OK;

    if (a->port != NULL && (port = parse_number(a->port, 1, 65535)) < 0) {
        fail_line("--port must be 1-65535");
        return EXIT_USAGE;
    }
    version = parse_number(a->mqtt_version, 3, 5);
    if (version != 3 && version != 5) {
        fail_line("--mqtt_version must be 3 or 5");
        return EXIT_USAGE;
    }
    if (port > 0) {
        r = fp_client_options_set_port(opts, (uint16_t)port);
    }
    if (r == FP_OK) {
        r = fp_client_options_set_mqtt_version(opts, (int)version);
    }
    if (r == FP_OK) {
        r = fp_client_options_set_cert_file(opts, a->cert);
    }
    if (r == FP_OK && a->key != NULL) {
        r = fp_client_options_set_key_file(opts, a->key);
    }
    if (r == FP_OK && a->key_label != NULL) {
        r = configure_pkcs11(a, opts, a->key_label);
    }
    if (r == FP_OK && a->ca_file != NULL) {
        r = fp_client_options_set_ca_file(opts, a->ca_file);
    }
    if (r == FP_OK && a->client_id != NULL) {
        r = fp_client_options_set_client_id(opts, a->client_id);
    }
    if (r == FP_OK) {
        /* RegisterThing's reply topics are subscribed together with the create operation's. */
        r = fp_client_options_set_template_name(opts, a->template_name);
    }
    if (r == FP_OK && a->proxy_host != NULL) {
        proxy_port = parse_number(a->proxy_port, 1, 65535);
        if (proxy_port < 0) {
            fail_line("--proxy_port must be 1-65535");
            return EXIT_USAGE;
        }
        r = fp_client_options_set_proxy(opts, a->proxy_host, (uint16_t)proxy_port);
    }
    if (r == FP_OK && a->timeout_ms != NULL) {
        timeout_ms = parse_number(a->timeout_ms, 1, 3600000L);
        if (timeout_ms < 0) {
            fail_line("--timeout_ms must be 1-3600000");
            return EXIT_USAGE;
        }
        r = fp_client_options_set_operation_timeout_ms(opts, (uint32_t)timeout_ms);
        if (r == FP_OK) {
            r = fp_client_options_set_connect_timeout_ms(opts, (uint32_t)timeout_ms);
        }
    }
    if (r == FP_OK && a->payload_format != NULL) {
        if (strcmp(a->payload_format, "json") != 0 && strcmp(a->payload_format, "cbor") != 0) {
            fail_line("--payload_format must be json or cbor");
            return EXIT_USAGE;
        }
        r = fp_client_options_set_payload_format(
            opts, strcmp(a->payload_format, "cbor") == 0 ? FP_PAYLOAD_CBOR : FP_PAYLOAD_JSON);
    }
    if (r != FP_OK) {
        fail_line("invalid option: %s", fp_result_str((int)r));
        return EXIT_USAGE;
    }
    return 0;
}

int main(int argc, char **argv) {
    static char reason[REASON_LEN];
    struct args a;
    struct demo d;
    fp_client_options *opts = NULL;
    fp_client *client = NULL;
    char *csr = NULL;
    int level, code;
    fp_result r;
    size_t i;

    if (parse_args(argc, argv, &a) != 0) {
        fputs(USAGE, stderr);
        return EXIT_USAGE;
    }
    level = parse_verbosity(a.verbosity);
    if (level < 0) {
        fail_line("--verbosity must be one of NoLogs, Fatal, Error, Warn, Info, Debug, Trace");
        return EXIT_USAGE;
    }
    if (a.output_dir == NULL && (a.force || a.key_type != NULL || a.max_attempts != NULL ||
                                 a.rotate_before != NULL || a.rotation_template != NULL)) {
        fail_line("--force, --key_type, --max_attempts, --rotate_before and --rotation_template "
                  "need --output_dir");
        return EXIT_USAGE;
    }
    if (a.output_dir != NULL && a.csr != NULL) {
        fail_line("--csr and --output_dir do not mix: the store needs the CSR's key; with "
                  "--output_dir the key is made on the device (--key_type)");
        return EXIT_USAGE;
    }
    /* The checks' reasons come through the log callback: caught here, printed as one line. */
    fp_set_log_callback(remember_reason, reason, NULL, FP_LOG_ERROR);
    code = check_template(&a, reason);
    if (code == 0) {
        reason[0] = '\0';
        r = fp_client_options_new(a.endpoint, &opts);
        if (r != FP_OK) {
            /* e.g. "--endpoint https://host: drop the https:// scheme: ..." */
            fail_line("--endpoint %s: %s", a.endpoint, reason_or_code(reason, r));
            code = EXIT_USAGE;
        }
    }
    fp_set_log_callback(NULL, NULL, NULL, FP_LOG_NONE);
    if (code == 0 && a.identity_file != NULL && (a.csr != NULL || a.output_dir != NULL)) {
        fail_line("--identity_file is for the keys flow only: with --csr the key is yours, "
                  "with --output_dir the store keeps it");
        code = EXIT_USAGE;
    }
    if (code == 0 && a.identity_file == NULL && a.csr == NULL && a.output_dir == NULL) {
        /* The service's answer is the only copy of the key; RegisterThing activates its
         * certificate: never one without the other. */
        fail_line("the keys flow (no --csr) needs --identity_file FILE, where the new private "
                  "key and certificate are saved, or --output_dir DIR (--key_type service)");
        code = EXIT_USAGE;
    }
    if (code != 0) {
        fp_client_options_free(opts);
        return code;
    }
    if (a.csr != NULL) {
        csr = read_file(a.csr);
        if (csr == NULL) {
            fail_line("cannot read --csr %s: %s", a.csr, strerror(errno));
            fp_client_options_free(opts);
            return EXIT_OTHER;
        }
    }
    fp_set_log_callback(log_to_stderr, NULL, NULL, level);
    code = configure(&a, opts);
    if (code == 0 && a.output_dir != NULL) {
        code = provision_to_store(&a, opts, level);
        fp_client_options_free(opts);
        fp_set_log_callback(NULL, NULL, NULL, FP_LOG_NONE);
        return code;
    }
    if (code == 0) {
        r = fp_client_new(opts, &client);
        if (r != FP_OK) {
            fail_line("cannot create the client: %s", fp_result_str((int)r));
            code = r == FP_ERR_INVALID_ARGUMENT ? EXIT_USAGE : EXIT_OTHER;
        }
    }
    fp_client_options_free(opts);
    if (code != 0) {
        free(csr);
        return code;
    }

    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.lock, NULL);
    pthread_cond_init(&d.changed, NULL);

    code = provision(&a, &d, client, csr);

    /* Clean MQTT disconnect; fp_client_free() then waits for the last lifecycle event. */
    if (fp_client_disconnect(client) == FP_OK) {
        wait_until(&d, &d.stopped);
    }
    fp_client_free(client);
    fp_set_log_callback(NULL, NULL, NULL, FP_LOG_NONE);

    wipe_free(d.private_key);
    free(d.certificate_id);
    free(d.certificate_pem);
    free(d.token);
    free(d.thing_name);
    for (i = 0; i < d.config_len; i++) {
        free(d.config[i].key);
        free(d.config[i].value);
    }
    free(d.config);
    free(csr);
    pthread_cond_destroy(&d.changed);
    pthread_mutex_destroy(&d.lock);
    return code;
}
