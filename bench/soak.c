/*
 * Soak: many create + register cycles in one process against an emulator running as another
 * process, so this process's memory and descriptors are the library's own.
 *
 * Each cycle: new client, connect, CreateCertificateFromCsr (every 10th cycle
 * CreateKeysAndCertificate instead), RegisterThing, then either a clean disconnect followed by
 * fp_client_free() or fp_client_free() alone (alternating, so both ways of closing are
 * exercised). The library's shared thread therefore starts and stops once per cycle.
 *
 * Prints VmRSS, open descriptors and threads after the first (warm-up) cycle, at 10 %, 50 % and
 * the end, and cycles per second. Exits 1 if a cycle fails, 2 on usage errors, 3 if RSS grows
 * by more than the tolerance or the descriptor count changes between the 10 % mark and the end.
 *
 * Usage: soak --port N --ca FILE --cert FILE --key FILE --csr FILE [--endpoint HOST]
 *             [--template NAME]
 * Environment: SOAK_CYCLES (default 10000), SOAK_RSS_TOLERANCE_KB (default 1024).
 * Run by `make soak` (bench/soak.sh starts the emulator and makes the CSR).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "fleetprov.h"

#define DEFAULT_CYCLES 10000L
#define DEFAULT_RSS_TOLERANCE_KB 1024L

struct cycle {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int connected;  /* 1 once CONNECTION_SUCCESS or CONNECTION_FAILURE arrived */
    fp_result connect_code;
    int stopped;    /* number of FP_EVENT_STOPPED seen (must end at exactly 1) */
    int op_done;    /* number of operation callbacks for the current operation */
    fp_result op_code;
    char message[512];
    char token[512];
};

struct sample {
    long rss_kb;
    long fds;
    long threads;
    double at; /* seconds since the start of the measured run */
};

static double now_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads one "Name:   value kB" line of /proc/self/status; -1 if absent. */
static long proc_status_field(const char *name) {
    char line[256];
    size_t len = strlen(name);
    long value = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, name, len) == 0 && line[len] == ':') {
            value = strtol(line + len + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return value;
}

/* Open descriptors, not counting the one opendir() itself holds while counting. */
static long count_fds(void) {
    long n = 0;
    struct dirent *e;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1;
}

static struct sample take_sample(double start) {
    struct sample s;
    s.rss_kb = proc_status_field("VmRSS");
    s.fds = count_fds();
    s.threads = proc_status_field("Threads");
    s.at = now_secs() - start;
    return s;
}

static void print_sample(const char *label, long cycles_done, const struct sample *s) {
    printf("%-8s cycle %6ld  VmRSS %6ld kB  fds %3ld  threads %2ld  t %8.2f s\n", label,
           cycles_done, s->rss_kb, s->fds, s->threads, s->at);
    fflush(stdout);
}

static void copy_message(struct cycle *c, const fp_error *error) {
    const char *m = fp_error_message(error);
    const char *aws = fp_error_aws_code(error);
    snprintf(c->message, sizeof c->message, "%s%s%s", m != NULL ? m : "", aws != NULL ? " / " : "",
             aws != NULL ? aws : "");
}

/* ---------- callbacks (library threads) ---------- */

static void on_lifecycle(void *user_data, fp_lifecycle_event event, const fp_error *error) {
    struct cycle *c = (struct cycle *)user_data;
    pthread_mutex_lock(&c->lock);
    switch (event) {
    case FP_EVENT_CONNECTION_SUCCESS:
        c->connected = 1;
        c->connect_code = FP_OK;
        break;
    case FP_EVENT_CONNECTION_FAILURE:
        c->connected = 1;
        c->connect_code = fp_error_code(error);
        copy_message(c, error);
        break;
    case FP_EVENT_STOPPED:
        c->stopped++;
        break;
    default:
        /* FP_EVENT_DISCONNECTED and anything newer: nothing to wait for here. */
        break;
    }
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

/* Records an operation's outcome; `text` (the ownership token or the thing name) is copied
 * because the library's strings are borrowed for the callback's duration only. */
static void finish_op(struct cycle *c, const char *text, const fp_error *error) {
    pthread_mutex_lock(&c->lock);
    if (error == NULL) {
        c->op_code = FP_OK;
        snprintf(c->token, sizeof c->token, "%s", text != NULL ? text : "");
    } else {
        c->op_code = fp_error_code(error);
        copy_message(c, error);
    }
    c->op_done++;
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

static void on_create_keys(void *user_data, const fp_create_keys_response *r,
                           const fp_error *error) {
    finish_op((struct cycle *)user_data, r != NULL ? r->certificate_ownership_token : NULL,
              error);
}

static void on_create_from_csr(void *user_data, const fp_create_from_csr_response *r,
                               const fp_error *error) {
    finish_op((struct cycle *)user_data, r != NULL ? r->certificate_ownership_token : NULL,
              error);
}

static void on_register(void *user_data, const fp_register_thing_response *r,
                        const fp_error *error) {
    finish_op((struct cycle *)user_data, r != NULL ? r->thing_name : NULL, error);
}

/* ---------- one cycle ---------- */

struct config {
    const char *endpoint;
    const char *port;
    const char *ca;
    const char *cert;
    const char *key;
    const char *csr_path;
    const char *template_name;
    char *csr;
};

/* Blocks until `*counter` is non-zero; every wake-up comes from a callback's broadcast. */
static void wait_for(struct cycle *c, const int *counter) {
    pthread_mutex_lock(&c->lock);
    while (*counter == 0) {
        pthread_cond_wait(&c->changed, &c->lock);
    }
    pthread_mutex_unlock(&c->lock);
}

static int fail(long i, const char *what, fp_result code, const char *message) {
    fprintf(stderr, "soak: cycle %ld: %s: %s%s%s\n", i, what, fp_result_str((int)code),
            message != NULL && *message != '\0' ? ": " : "", message != NULL ? message : "");
    return -1;
}

static fp_client_options *make_options(const struct config *cfg, unsigned long port) {
    fp_client_options *o = NULL;
    if (fp_client_options_new(cfg->endpoint, &o) != FP_OK) {
        return NULL;
    }
    if (fp_client_options_set_port(o, (uint16_t)port) != FP_OK ||
        fp_client_options_set_ca_file(o, cfg->ca) != FP_OK ||
        fp_client_options_set_cert_file(o, cfg->cert) != FP_OK ||
        fp_client_options_set_key_file(o, cfg->key) != FP_OK) {
        fp_client_options_free(o);
        return NULL;
    }
    return o;
}

static int run_cycle(const struct config *cfg, unsigned long port, struct cycle *c, long i) {
    fp_client_options *opts;
    fp_client *client = NULL;
    fp_result r;
    char params[128];
    int keys = i % 10 == 0;
    int rc = -1;

    c->connected = 0;
    c->stopped = 0;
    c->op_done = 0;
    c->message[0] = '\0';
    c->token[0] = '\0';

    opts = make_options(cfg, port);
    if (opts == NULL) {
        return fail(i, "options", FP_ERR_INVALID_ARGUMENT, NULL);
    }
    r = fp_client_new(opts, &client);
    fp_client_options_free(opts);
    if (r != FP_OK) {
        return fail(i, "fp_client_new", r, NULL);
    }
    r = fp_client_connect(client, on_lifecycle, c);
    if (r != FP_OK) {
        fp_client_free(client);
        return fail(i, "fp_client_connect", r, NULL);
    }
    wait_for(c, &c->connected);
    if (c->connect_code != FP_OK) {
        fail(i, "connect", c->connect_code, c->message);
        goto out;
    }

    r = keys ? fp_create_keys(client, on_create_keys, c)
             : fp_create_from_csr(client, cfg->csr, on_create_from_csr, c);
    if (r != FP_OK) {
        fail(i, keys ? "fp_create_keys" : "fp_create_from_csr", r, NULL);
        goto out;
    }
    wait_for(c, &c->op_done);
    if (c->op_code != FP_OK) {
        fail(i, keys ? "CreateKeysAndCertificate" : "CreateCertificateFromCsr", c->op_code,
             c->message);
        goto out;
    }

    /* Distinct serial numbers: each cycle registers its own thing. */
    snprintf(params, sizeof params, "{\"SerialNumber\":\"soak-%ld\",\"DeviceLocation\":\"Seattle\"}",
             i);
    pthread_mutex_lock(&c->lock);
    c->op_done = 0;
    pthread_mutex_unlock(&c->lock);
    r = fp_register_thing(client, cfg->template_name, c->token, params, on_register, c);
    if (r != FP_OK) {
        fail(i, "fp_register_thing", r, NULL);
        goto out;
    }
    wait_for(c, &c->op_done);
    if (c->op_code != FP_OK) {
        fail(i, "RegisterThing", c->op_code, c->message);
        goto out;
    }
    rc = 0;

out:
    /* Even cycles close cleanly first; odd ones leave it all to fp_client_free(). */
    if (i % 2 == 0 && fp_client_disconnect(client) == FP_OK) {
        wait_for(c, &c->stopped);
    }
    fp_client_free(client);
    /* fp_client_free() returns after the client's last callback: STOPPED came exactly once. */
    if (c->stopped != 1) {
        fprintf(stderr, "soak: cycle %ld: FP_EVENT_STOPPED seen %d times\n", i, c->stopped);
        rc = -1;
    }
    return rc;
}

/* ---------- main ---------- */

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long len;
    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    buf = (char *)malloc((size_t)len + 1);
    if (buf != NULL && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[len] = '\0';
    }
    return buf;
}

static long env_long(const char *name, long fallback) {
    const char *s = getenv(name);
    char *end = NULL;
    long v;
    if (s == NULL || *s == '\0') {
        return fallback;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0) {
        return -1;
    }
    return v;
}

static int parse_args(int argc, char **argv, struct config *cfg) {
    int i;
    memset(cfg, 0, sizeof *cfg);
    cfg->endpoint = "localhost";
    cfg->template_name = "FleetTemplate";
    for (i = 1; i + 1 < argc; i += 2) {
        const char *flag = argv[i], *value = argv[i + 1];
        if (strcmp(flag, "--port") == 0) {
            cfg->port = value;
        } else if (strcmp(flag, "--ca") == 0) {
            cfg->ca = value;
        } else if (strcmp(flag, "--cert") == 0) {
            cfg->cert = value;
        } else if (strcmp(flag, "--key") == 0) {
            cfg->key = value;
        } else if (strcmp(flag, "--csr") == 0) {
            cfg->csr_path = value;
        } else if (strcmp(flag, "--endpoint") == 0) {
            cfg->endpoint = value;
        } else if (strcmp(flag, "--template") == 0) {
            cfg->template_name = value;
        } else {
            return -1;
        }
    }
    if (i != argc || cfg->port == NULL || cfg->ca == NULL || cfg->cert == NULL ||
        cfg->key == NULL || cfg->csr_path == NULL) {
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    struct config cfg;
    struct cycle c;
    struct sample warm, at10, at50, end;
    long cycles, tolerance_kb, i, mark10, mark50;
    double kind_secs[2] = {0, 0}; /* [0] CSR cycles, [1] CreateKeysAndCertificate cycles */
    long kind_count[2] = {0, 0};
    struct rusage usage;
    unsigned long port;
    double start, t10;
    char *endp = NULL;
    int verdict_ok;

    if (parse_args(argc, argv, &cfg) != 0) {
        fputs("usage: soak --port N --ca FILE --cert FILE --key FILE --csr FILE "
              "[--endpoint HOST] [--template NAME]\n",
              stderr);
        return 2;
    }
    port = strtoul(cfg.port, &endp, 10);
    cycles = env_long("SOAK_CYCLES", DEFAULT_CYCLES);
    tolerance_kb = env_long("SOAK_RSS_TOLERANCE_KB", DEFAULT_RSS_TOLERANCE_KB);
    if (*endp != '\0' || port == 0 || port > 65535 || cycles < 10 || tolerance_kb < 0) {
        fputs("soak: bad --port, SOAK_CYCLES (at least 10) or SOAK_RSS_TOLERANCE_KB\n", stderr);
        return 2;
    }
    cfg.csr = read_file(cfg.csr_path);
    if (cfg.csr == NULL) {
        fprintf(stderr, "soak: cannot read %s: %s\n", cfg.csr_path, strerror(errno));
        return 2;
    }

    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.changed, NULL);

    printf("soak: %ld cycles against %s:%lu (CSR flow, every 10th CreateKeysAndCertificate); "
           "RSS tolerance %ld kB\n",
           cycles, cfg.endpoint, port, tolerance_kb);
    /* Cycle 0 warms up: first-use allocations (TLS provider, allocator arenas) are not leaks. */
    start = now_secs();
    if (run_cycle(&cfg, port, &c, 0) != 0) {
        return 1;
    }
    start = now_secs();
    warm = take_sample(start);
    print_sample("start", 1, &warm);

    mark10 = cycles / 10;
    mark50 = cycles / 2;
    at10 = warm;
    at50 = warm;
    t10 = start;
    for (i = 1; i < cycles; i++) {
        double t0 = now_secs();
        if (run_cycle(&cfg, port, &c, i) != 0) {
            printf("verdict: FAIL (cycle %ld failed)\n", i);
            free(cfg.csr);
            return 1;
        }
        kind_secs[i % 10 == 0] += now_secs() - t0;
        kind_count[i % 10 == 0]++;
        if (i + 1 == mark10) {
            at10 = take_sample(start);
            t10 = now_secs();
            print_sample("10%", i + 1, &at10);
        } else if (i + 1 == mark50) {
            at50 = take_sample(start);
            print_sample("50%", i + 1, &at50);
        }
    }
    end = take_sample(start);
    print_sample("end", cycles, &end);

    printf("rate: %.1f cycles/s overall, %.1f cycles/s from 10%% to the end\n",
           (double)(cycles - 1) / end.at,
           (double)(cycles - mark10) / (now_secs() - t10));
    printf("mean cycle: %.2f ms with CreateCertificateFromCsr, %.2f ms with "
           "CreateKeysAndCertificate (the emulator's RSA key generation)\n",
           kind_count[0] > 0 ? 1e3 * kind_secs[0] / (double)kind_count[0] : 0.0,
           kind_count[1] > 0 ? 1e3 * kind_secs[1] / (double)kind_count[1] : 0.0);
    if (getrusage(RUSAGE_SELF, &usage) == 0) {
        double cpu = (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 +
                     (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
        printf("cpu: %.2f s user+sys in this process, %.2f ms per cycle; peak RSS %ld kB\n", cpu,
               1e3 * cpu / (double)cycles, usage.ru_maxrss);
    }
    verdict_ok = end.rss_kb - at10.rss_kb <= tolerance_kb && end.fds == at10.fds;
    printf("verdict: %s (RSS %+ld kB from 10%% to end, tolerance %ld kB; fds %+ld, must be 0)\n",
           verdict_ok ? "PASS" : "FAIL", end.rss_kb - at10.rss_kb, tolerance_kb,
           end.fds - at10.fds);

    free(cfg.csr);
    pthread_cond_destroy(&c.changed);
    pthread_mutex_destroy(&c.lock);
    return verdict_ok ? 0 : 3;
}
