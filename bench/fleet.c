/*
 * fleet: provisions N devices at once from one process through the C API, against an emulator
 * running as another process, and measures the same N doing only the connection (the floor).
 *
 * Phase 1, floor: N clients, each fp_client_connect() and nothing else; done when every one
 * has reported CONNECTION_SUCCESS (or failure); then all are freed.
 * Phase 2, provisioning: N clients, each fp_client_connect() then at once
 * fp_create_from_csr() (the operation waits for the connection), and from its callback
 * fp_register_thing() with its own serial number; done when every RegisterThing has called
 * back; then all are freed. All devices send the same CSR, made once up front.
 *
 * For each phase: how many succeeded, wall time (first connect to last callback), rate,
 * client CPU per device (getrusage of this process, user + sys, over the same span, less the
 * sampler thread's own CPU), peak RSS (VmHWM, reset before the phase through
 * /proc/self/clear_refs) and its rise per device, and the peak number of library threads
 * (the process's Threads, sampled every 5 ms, less this program's main and sampler threads).
 * Then the provisioning phase's figures as ratios to the floor's.
 *
 * Usage: fleet --port N --ca FILE --cert FILE --key FILE --csr FILE [--devices N]
 *              [--endpoint HOST] [--template NAME]
 * Exits 0 if every device of both phases succeeded, 1 if any failed, 2 on usage errors.
 * Run by `make fleet FLEET_N=...` (bench/fleet.sh starts the emulator and makes the CSR).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "fleetprov.h"

/* Threads of this program itself: main and the sampler. */
#define OWN_THREADS 2
#define SAMPLE_NS 5000000L
#define TIMEOUT_MS 600000u

struct config {
    const char *endpoint;
    unsigned long port;
    const char *ca;
    const char *cert;
    const char *key;
    const char *template_name;
    char *csr;
    long devices;
    long rounds;
    int only; /* -1 both phases, 0 the floor only, 1 provisioning only (for profiling) */
};

/* One device. The fields below `lock`'s users are written by library threads. */
struct device {
    long index;
    fp_client *client;
    int provision; /* 0 floor, 1 provisioning */
    fp_result code;
    char message[256];
};

/* Completion count of the running phase. */
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static long done_count;
/* How many completions the main thread waits for (LONG_MAX while it is still starting
 * devices): callbacks wake it only when that many are done, not once per device, so the
 * figures do not include a thousand wake-ups of the benchmark's own thread. */
static long done_target;
static long failed_count;
static const struct config *cfg_global;
/* The round being run: part of the serial numbers, so every round registers new things. */
static long round_global;

static double now_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_secs(int who) {
    struct rusage u;
    if (getrusage(who, &u) != 0) {
        return 0.0;
    }
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

/* Context switches (voluntary and not) of the process or the thread. */
static long switches(int who) {
    struct rusage u;
    if (getrusage(who, &u) != 0) {
        return 0;
    }
    return u.ru_nvcsw + u.ru_nivcsw;
}

/* One "Name:   value" line of /proc/self/status; -1 if absent. */
static long status_field(const char *name) {
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

/* Resets VmHWM to the current RSS (Linux 4.0+); returns 0 on success. */
static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    int ok;
    if (f == NULL) {
        return -1;
    }
    ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* ---------- thread sampler ---------- */

static pthread_mutex_t sampler_lock = PTHREAD_MUTEX_INITIALIZER;
static int sampler_stop;
static long sampler_peak;
static double sampler_cpu;
static long sampler_switches;

static void *sampler(void *arg) {
    struct timespec pause = {0, SAMPLE_NS};
    (void)arg;
    for (;;) {
        long t = status_field("Threads");
        pthread_mutex_lock(&sampler_lock);
        if (t > sampler_peak) {
            sampler_peak = t;
        }
        if (sampler_stop) {
            sampler_cpu = cpu_secs(RUSAGE_THREAD);
            sampler_switches = switches(RUSAGE_THREAD);
            pthread_mutex_unlock(&sampler_lock);
            return NULL;
        }
        pthread_mutex_unlock(&sampler_lock);
        nanosleep(&pause, NULL);
    }
}

/* ---------- callbacks (library threads) ---------- */

static void finish(struct device *d, const fp_error *error) {
    pthread_mutex_lock(&done_lock);
    if (error != NULL) {
        const char *m = fp_error_message(error);
        d->code = fp_error_code(error);
        snprintf(d->message, sizeof d->message, "%s", m != NULL ? m : "");
        failed_count++;
    } else {
        d->code = FP_OK;
    }
    done_count++;
    if (done_count >= done_target) {
        pthread_cond_broadcast(&done_cond);
    }
    pthread_mutex_unlock(&done_lock);
}

static void on_lifecycle(void *user_data, fp_lifecycle_event event, const fp_error *error) {
    struct device *d = (struct device *)user_data;
    if (d->provision) {
        return; /* the operations report the outcome */
    }
    if (event == FP_EVENT_CONNECTION_SUCCESS) {
        finish(d, NULL);
    } else if (event == FP_EVENT_CONNECTION_FAILURE) {
        finish(d, error);
    }
}

static void on_register(void *user_data, const fp_register_thing_response *r,
                        const fp_error *error) {
    (void)r;
    finish((struct device *)user_data, error);
}

static void on_created(void *user_data, const fp_create_from_csr_response *r,
                       const fp_error *error) {
    struct device *d = (struct device *)user_data;
    char params[96];
    fp_result rc;
    if (error != NULL) {
        finish(d, error);
        return;
    }
    snprintf(params, sizeof params, "{\"SerialNumber\":\"fleet-%ld-%ld\",\"DeviceLocation\":\"Seattle\"}",
             round_global, d->index);
    rc = fp_register_thing(d->client, cfg_global->template_name, r->certificate_ownership_token,
                           params, on_register, d);
    if (rc != FP_OK) {
        pthread_mutex_lock(&done_lock);
        d->code = rc;
        snprintf(d->message, sizeof d->message, "fp_register_thing returned %s",
                 fp_result_str((int)rc));
        failed_count++;
        done_count++;
        pthread_cond_broadcast(&done_cond);
        pthread_mutex_unlock(&done_lock);
    }
}

/* ---------- one phase ---------- */

struct figures {
    long ok;
    long switches;
    double wall;
    double free_wall;
    double cpu;
    long rss_before_kb;
    long peak_rss_kb;
    long lib_threads;
};

static fp_client_options *make_options(const struct config *cfg) {
    fp_client_options *o = NULL;
    if (fp_client_options_new(cfg->endpoint, &o) != FP_OK) {
        return NULL;
    }
    if (fp_client_options_set_port(o, (uint16_t)cfg->port) != FP_OK ||
        fp_client_options_set_ca_file(o, cfg->ca) != FP_OK ||
        fp_client_options_set_cert_file(o, cfg->cert) != FP_OK ||
        fp_client_options_set_key_file(o, cfg->key) != FP_OK ||
        fp_client_options_set_template_name(o, cfg->template_name) != FP_OK ||
        fp_client_options_set_connect_timeout_ms(o, TIMEOUT_MS) != FP_OK ||
        fp_client_options_set_operation_timeout_ms(o, TIMEOUT_MS) != FP_OK) {
        fp_client_options_free(o);
        return NULL;
    }
    return o;
}

static int run_phase(const struct config *cfg, int provision, struct device *devs,
                     struct figures *out) {
    fp_client_options *opts = make_options(cfg);
    pthread_t sampler_thread;
    double t0, cpu0, t1;
    long sw0;
    long i, started = 0, printed = 0;

    if (opts == NULL) {
        fputs("fleet: cannot build the client options\n", stderr);
        return -1;
    }
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&done_lock);
    done_count = 0;
    done_target = LONG_MAX;
    pthread_mutex_unlock(&done_lock);
    failed_count = 0;
    sampler_stop = 0;
    sampler_peak = 0;
    out->rss_before_kb = status_field("VmRSS");
    if (reset_peak_rss() != 0) {
        fputs("fleet: cannot reset VmHWM (/proc/self/clear_refs); peak RSS covers the whole "
              "run so far\n",
              stderr);
    }
    if (pthread_create(&sampler_thread, NULL, sampler, NULL) != 0) {
        fp_client_options_free(opts);
        return -1;
    }

    t0 = now_secs();
    cpu0 = cpu_secs(RUSAGE_SELF);
    sw0 = switches(RUSAGE_SELF);
    for (i = 0; i < cfg->devices; i++) {
        struct device *d = &devs[i];
        fp_result r;
        memset(d, 0, sizeof *d);
        d->index = i;
        d->provision = provision;
        r = fp_client_new(opts, &d->client);
        if (r == FP_OK) {
            r = fp_client_connect(d->client, on_lifecycle, d);
        }
        if (r == FP_OK && provision) {
            r = fp_create_from_csr(d->client, cfg->csr, on_created, d);
        }
        if (r != FP_OK) {
            fprintf(stderr, "fleet: device %ld: start failed: %s\n", i, fp_result_str((int)r));
            break;
        }
        started++;
    }
    pthread_mutex_lock(&done_lock);
    done_target = started;
    while (done_count < started) {
        pthread_cond_wait(&done_cond, &done_lock);
    }
    pthread_mutex_unlock(&done_lock);
    t1 = now_secs();
    out->cpu = cpu_secs(RUSAGE_SELF) - cpu0;
    out->switches = switches(RUSAGE_SELF) - sw0;
    out->wall = t1 - t0;
    out->peak_rss_kb = status_field("VmHWM");

    pthread_mutex_lock(&sampler_lock);
    sampler_stop = 1;
    pthread_mutex_unlock(&sampler_lock);
    pthread_join(sampler_thread, NULL);
    out->cpu -= sampler_cpu;
    out->switches -= sampler_switches;
    out->lib_threads = sampler_peak - OWN_THREADS;

    for (i = 0; i < started; i++) {
        if (devs[i].code != FP_OK && printed < 5) {
            fprintf(stderr, "fleet: device %ld: %s: %s\n", i, fp_result_str((int)devs[i].code),
                    devs[i].message);
            printed++;
        }
    }
    out->ok = started - failed_count;
    for (i = 0; i < started; i++) {
        fp_client_free(devs[i].client);
    }
    out->free_wall = now_secs() - t1;
    fp_client_options_free(opts);
    return 0;
}

static void print_figures(const char *label, const struct config *cfg, const struct figures *f) {
    long n = cfg->devices;
    printf("%-9s %ld/%ld ok  wall %7.3f s  rate %8.1f /s  cpu %6.3f ms/device  "
           "switches %5.1f/device  peak RSS %7.1f MiB (%+.1f KiB/device)  library threads %ld  "
           "(free %.3f s)\n",
           label, f->ok, n, f->wall, (double)n / f->wall, 1e3 * f->cpu / (double)n,
           (double)f->switches / (double)n,
           (double)f->peak_rss_kb / 1024.0,
           (double)(f->peak_rss_kb - f->rss_before_kb) / (double)n, f->lib_threads, f->free_wall);
}

static double ratio(double a, double b) {
    return b > 0 ? a / b : 0.0;
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

static int parse_args(int argc, char **argv, struct config *cfg, const char **csr_path) {
    int i;
    char *end;
    memset(cfg, 0, sizeof *cfg);
    cfg->endpoint = "localhost";
    cfg->template_name = "FleetTemplate";
    cfg->devices = 1000;
    cfg->rounds = 1;
    cfg->only = -1;
    *csr_path = NULL;
    for (i = 1; i + 1 < argc; i += 2) {
        const char *flag = argv[i], *value = argv[i + 1];
        if (strcmp(flag, "--port") == 0) {
            cfg->port = strtoul(value, &end, 10);
            if (*end != '\0' || cfg->port == 0 || cfg->port > 65535) {
                return -1;
            }
        } else if (strcmp(flag, "--devices") == 0) {
            cfg->devices = strtol(value, &end, 10);
            if (*end != '\0' || cfg->devices < 1) {
                return -1;
            }
        } else if (strcmp(flag, "--rounds") == 0) {
            cfg->rounds = strtol(value, &end, 10);
            if (*end != '\0' || cfg->rounds < 1 || cfg->rounds > 99) {
                return -1;
            }
        } else if (strcmp(flag, "--only") == 0) {
            if (strcmp(value, "floor") == 0) {
                cfg->only = 0;
            } else if (strcmp(value, "provision") == 0) {
                cfg->only = 1;
            } else {
                return -1;
            }
        } else if (strcmp(flag, "--ca") == 0) {
            cfg->ca = value;
        } else if (strcmp(flag, "--cert") == 0) {
            cfg->cert = value;
        } else if (strcmp(flag, "--key") == 0) {
            cfg->key = value;
        } else if (strcmp(flag, "--csr") == 0) {
            *csr_path = value;
        } else if (strcmp(flag, "--endpoint") == 0) {
            cfg->endpoint = value;
        } else if (strcmp(flag, "--template") == 0) {
            cfg->template_name = value;
        } else {
            return -1;
        }
    }
    if (i != argc || cfg->port == 0 || cfg->ca == NULL || cfg->cert == NULL ||
        cfg->key == NULL || *csr_path == NULL) {
        return -1;
    }
    return 0;
}

/* One descriptor per connection plus room for files, the runtime and stdio. */
static int raise_nofile(long devices) {
    struct rlimit rl;
    rlim_t want = (rlim_t)devices + 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return -1;
    }
    if (rl.rlim_cur >= want) {
        return 0;
    }
    if (rl.rlim_max < want) {
        rl.rlim_max = want; /* needs privilege; fails cleanly without it */
    }
    rl.rlim_cur = want;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of `n` values (sorts them). */
static double median(double *v, long n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    struct config cfg;
    struct device *devs;
    struct figures floor_f, prov_f;
    double floor_cpu[99], prov_cpu[99];
    const char *csr_path;
    int all_ok;

    if (parse_args(argc, argv, &cfg, &csr_path) != 0) {
        fputs("usage: fleet --port N --ca FILE --cert FILE --key FILE --csr FILE "
              "[--devices N] [--rounds N] [--only floor|provision] [--endpoint HOST] "
              "[--template NAME]\n",
              stderr);
        return 2;
    }
    cfg.csr = read_file(csr_path);
    if (cfg.csr == NULL) {
        fprintf(stderr, "fleet: cannot read %s: %s\n", csr_path, strerror(errno));
        return 2;
    }
    if (raise_nofile(cfg.devices) != 0) {
        fprintf(stderr, "fleet: cannot raise RLIMIT_NOFILE to %ld: %s\n", cfg.devices + 256,
                strerror(errno));
        return 2;
    }
    devs = (struct device *)calloc((size_t)cfg.devices, sizeof *devs);
    if (devs == NULL) {
        fputs("fleet: out of memory\n", stderr);
        return 2;
    }
    cfg_global = &cfg;

    printf("fleet: %ld devices at once against %s:%lu (floor: connect only; provisioning: "
           "CreateCertificateFromCsr + RegisterThing)\n",
           cfg.devices, cfg.endpoint, cfg.port);
    fflush(stdout);
    memset(&floor_f, 0, sizeof floor_f);
    memset(&prov_f, 0, sizeof prov_f);
    floor_f.ok = prov_f.ok = cfg.devices; /* a phase not run does not fail the run */
    for (round_global = 0; round_global < cfg.rounds; round_global++) {
        if (cfg.only != 1) {
            if (run_phase(&cfg, 0, devs, &floor_f) != 0) {
                return 1;
            }
            print_figures("floor", &cfg, &floor_f);
            fflush(stdout);
        }
        if (cfg.only != 0) {
            if (run_phase(&cfg, 1, devs, &prov_f) != 0) {
                return 1;
            }
            print_figures("provision", &cfg, &prov_f);
        }
        if (cfg.only == -1) {
            printf("ratio provision/floor: wall %.2fx  cpu/device %.2fx  peak RSS %.2fx  "
                   "library threads %.2fx\n",
                   ratio(prov_f.wall, floor_f.wall), ratio(prov_f.cpu, floor_f.cpu),
                   ratio((double)prov_f.peak_rss_kb, (double)floor_f.peak_rss_kb),
                   ratio((double)prov_f.lib_threads, (double)floor_f.lib_threads));
        }
        fflush(stdout);
        floor_cpu[round_global] = floor_f.cpu;
        prov_cpu[round_global] = prov_f.cpu;
        if (floor_f.ok != cfg.devices || prov_f.ok != cfg.devices) {
            break;
        }
    }
    if (cfg.rounds > 1 && round_global == cfg.rounds) {
        double f = median(floor_cpu, cfg.rounds), p = median(prov_cpu, cfg.rounds);
        double per = 1e3 / (double)cfg.devices;
        printf("median of %ld rounds: cpu", cfg.rounds);
        if (cfg.only != 1) {
            printf(" floor %.3f ms/device", f * per);
        }
        if (cfg.only != 0) {
            printf(" provision %.3f ms/device", p * per);
        }
        if (cfg.only == -1) {
            printf(" (%.2fx)", ratio(p, f));
        }
        printf("\n");
    }
    all_ok = floor_f.ok == cfg.devices && prov_f.ok == cfg.devices;
    printf("result: %s (floor %ld/%ld connected, provisioning %ld/%ld registered)\n",
           all_ok ? "all succeeded" : "FAILURES", floor_f.ok, cfg.devices, prov_f.ok,
           cfg.devices);
    free(devs);
    free(cfg.csr);
    return all_ok ? 0 : 1;
}
