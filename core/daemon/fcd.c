/*
 * fcd: the worker daemon's main loop, signals and pid file.
 *
 *     fcd [-c conf/fcd.conf] [-t]
 *
 * -t checks the configuration and exits.  fcd stays in the foreground
 * (a service manager or the stack script runs it) and logs to stderr
 * until the configuration names a log file.
 *
 * The loop, and why it is shaped so:
 *
 * Everything happens in one thread.  The daemon waits in ppoll() on the
 * PostgreSQL socket with the time left until the next tick; a
 * notification on fc_outbox or the tick wakes it, and it runs the job
 * table.  While the connection is down it waits out a backoff delay
 * (100 ms, doubling up to 5 s) between attempts instead, and it never
 * exits because the database is away: a restart would not bring the
 * database back sooner.
 *
 * Redis and the services the outbox is delivered to are reached only by
 * the jobs, with a timeout on every call (see fcd_redis.c and
 * fcd_http.c), so one that is down or hangs delays a round of jobs but
 * never stops the loop.
 *
 * SIGTERM, SIGINT and SIGHUP stay blocked except inside ppoll(), which
 * unblocks them atomically.  So a signal can never slip in between
 * checking the flags and going to sleep (it interrupts the sleep
 * instead), and it never interrupts a job halfway: a stop request is
 * honoured when the current job returns, and a reload happens between
 * two rounds of jobs.  A job with a long queue (the outbox) asks, through
 * fcd->stop_requested() and fcd->reload_requested(), whether a signal
 * is pending, and ends its round early so that the loop can serve it.
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fcd.h"


#define FCD_DEFAULT_CONF   "conf/fcd.conf"


static int fcd_run(fcd_t *fcd);
static void fcd_reload(fcd_t *fcd);
static int fcd_wait(fcd_t *fcd, int64_t ms);
static int fcd_stop_requested(void);
static int fcd_reload_requested(void);
static int fcd_signals_init(void);
static void fcd_signal_handler(int signo);
static int fcd_pid_file_write(const char *path);
static void fcd_exit(fcd_t *fcd);
static void fcd_usage(void);


static volatile sig_atomic_t  fcd_stop;
static volatile sig_atomic_t  fcd_hup;
static sigset_t               fcd_wait_mask;


int
main(int argc, char **argv)
{
    int          opt, test_only, rc;
    char         err[FCD_ERR_LEN];
    fcd_t        fcd;
    const char  *path;

    path = FCD_DEFAULT_CONF;
    test_only = 0;

    while ((opt = getopt(argc, argv, "c:th")) != -1) {
        switch (opt) {

        case 'c':
            path = optarg;
            break;

        case 't':
            test_only = 1;
            break;

        case 'h':
            fcd_usage();
            return 0;

        default:
            fcd_usage();
            return 1;
        }
    }

    if (optind != argc) {
        fcd_usage();
        return 1;
    }

    memset(&fcd, 0, sizeof(fcd_t));
    fcd.conf_path = path;
    fcd.stop_requested = fcd_stop_requested;
    fcd.reload_requested = fcd_reload_requested;

    /* before anything else: it is not thread-safe, and OpenSSL follows */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fc_log(FC_LOG_ERR, "curl_global_init() failed");
        return 1;
    }

    if (fcd_conf_load(path, &fcd.conf, err, sizeof(err)) != 0) {
        fc_log(FC_LOG_ERR, "%s", err);
        return 1;
    }

    if (fcd_redis_script_load(fcd.conf.release_script, &fcd.release, err,
                              sizeof(err))
        != 0)
    {
        fc_log(FC_LOG_ERR, "%s: release_script: %s", path, err);
        fcd_exit(&fcd);
        return 1;
    }

    if (test_only) {
        fprintf(stderr, "fcd: configuration file %s is valid\n", path);
        fcd_exit(&fcd);
        return 0;
    }

    if (fc_log_open(fcd.conf.log_file) != 0) {
        fc_log(FC_LOG_ERR, "cannot open log_file \"%s\": %s",
               fcd.conf.log_file, strerror(errno));
        fcd_exit(&fcd);
        return 1;
    }

    fc_log_set_level(fcd.conf.log_level);

    fcd.pending = malloc(FCD_PENDING_MAX * sizeof(fcd_hold_t));

    if (fcd.pending == NULL) {
        fc_log(FC_LOG_ERR, "cannot allocate the list of pending holds");
        fcd_exit(&fcd);
        return 1;
    }

    if (fcd_signals_init() != 0) {
        fc_log(FC_LOG_ERR, "cannot set up signal handling: %s",
               strerror(errno));
        fcd_exit(&fcd);
        return 1;
    }

    if (fcd.conf.pid_file[0] != '\0'
        && fcd_pid_file_write(fcd.conf.pid_file) != 0)
    {
        fcd_exit(&fcd);
        return 1;
    }

    /* a wrong Redis address or password shows at start, not at an expiry */
    fcd.redis_probe = 1;

    fc_log(FC_LOG_INFO, "fcd started with %s, tick %lld ms", path,
           (long long) fcd.conf.tick_interval_ms);

    rc = fcd_run(&fcd);

    fcd_pg_close(&fcd);

    if (fcd.npending > 0) {
        fc_log(FC_LOG_WARN, "%zu expired hold%s released in postgresql "
               "%s still held in redis until the contract's next "
               "authorization, fcctl rebuild is needed", fcd.npending,
               fcd.npending == 1 ? "" : "s", fcd.npending == 1 ? "is" : "are");
    }

    if (fcd.conf.pid_file[0] != '\0') {
        unlink(fcd.conf.pid_file);
    }

    fc_log(FC_LOG_INFO, "fcd stopped");

    fcd_exit(&fcd);
    curl_global_cleanup();
    fc_log_close();

    return rc;
}


/* lets go of what main() set up: connections, secrets, memory */

static void
fcd_exit(fcd_t *fcd)
{
    fcd_redis_close(fcd);
    fcd_http_close(fcd);
    fcd_atol_forget_token(fcd);
    fcd_redis_script_free(&fcd->release);
    free(fcd->pending);
    fcd->pending = NULL;
    fcd_conf_clear(&fcd->conf);
}


static int
fcd_run(fcd_t *fcd)
{
    int      n;
    char     err[FCD_ERR_LEN];
    int64_t  now, next_tick;

    fcd->backoff_ms = FCD_BACKOFF_MIN_MS;
    next_tick = 0;

    while (!fcd_stop) {

        if (fcd_hup) {
            fcd_hup = 0;
            fcd_reload(fcd);
            continue;
        }

        if (fcd->pg == NULL) {

            if (fcd_pg_connect(fcd, err, sizeof(err)) != 0) {
                fcd->failures++;
                now = fcd_now_ms();

                /* each new delay is logged, the longest once a minute */
                if (fcd->backoff_ms != fcd->backoff_logged
                    || now - fcd->failure_logged >= FCD_LOG_FAILURE_MS)
                {
                    fc_log(FC_LOG_ERR, "%s; attempt %u, next in %lld ms",
                           err, fcd->failures, (long long) fcd->backoff_ms);
                    fcd->failure_logged = now;
                    fcd->backoff_logged = fcd->backoff_ms;
                }

                (void) fcd_wait(fcd, fcd->backoff_ms);

                fcd->backoff_ms *= 2;

                if (fcd->backoff_ms > FCD_BACKOFF_MAX_MS) {
                    fcd->backoff_ms = FCD_BACKOFF_MAX_MS;
                }

                continue;
            }

            fcd->failures = 0;
            fcd->backoff_ms = FCD_BACKOFF_MIN_MS;
            fcd->backoff_logged = 0;

            /* whatever fell due while away is done at once */
            next_tick = 0;
        }

        now = fcd_now_ms();

        if (fcd->notified == 0 && now < next_tick) {
            n = fcd_wait(fcd, next_tick - now);

            if (n == -1 || fcd_stop || fcd_hup) {
                continue;
            }

            if (n > 0 && fcd_pg_consume(fcd) != 0) {
                continue;
            }

            if (fcd->notified == 0 && fcd_now_ms() < next_tick) {
                continue;
            }

        } else {
            /*
             * No sleep this time, but the signals a job saw pending
             * must be let in, or the loop would run the jobs again
             * without ever serving them.
             */
            n = fcd_wait(fcd, 0);

            if (n == -1 || fcd_stop || fcd_hup) {
                continue;
            }

            if (n > 0 && fcd_pg_consume(fcd) != 0) {
                continue;
            }
        }

        fcd->notified = 0;
        fcd_jobs_run(fcd, fcd_stop_requested);
        next_tick = fcd_now_ms() + fcd->conf.tick_interval_ms;
    }

    return 0;
}


/*
 * Rereads the configuration file and the release script.  A file that
 * does not load, or a script that cannot be read, leaves the running
 * configuration as it was.  The pid file is not moved: the one
 * written at start is the one removed at exit.
 */

static void
fcd_reload(fcd_t *fcd)
{
    char          err[FCD_ERR_LEN];
    fcd_conf_t    conf;
    fcd_script_t  release;

    if (fcd_conf_load(fcd->conf_path, &conf, err, sizeof(err)) != 0) {
        fc_log(FC_LOG_ERR, "reload failed: %s; keeping the running "
               "configuration", err);
        return;
    }

    memset(&release, 0, sizeof(fcd_script_t));

    if (fcd_redis_script_load(conf.release_script, &release, err,
                              sizeof(err))
        != 0)
    {
        fc_log(FC_LOG_ERR, "reload failed: release_script: %s; keeping the "
               "running configuration", err);
        fcd_conf_clear(&conf);
        return;
    }

    /* reopened even if unchanged: this is how a rotated log is let go */
    if (fc_log_open(conf.log_file) != 0) {
        fc_log(FC_LOG_ERR, "reload failed: cannot open log_file \"%s\": %s; "
               "keeping the running configuration", conf.log_file,
               strerror(errno));
        fcd_redis_script_free(&release);
        fcd_conf_clear(&conf);
        return;
    }

    if (strcmp(conf.pid_file, fcd->conf.pid_file) != 0) {
        fc_log(FC_LOG_WARN, "pid_file changes take effect on restart only");
        memcpy(conf.pid_file, fcd->conf.pid_file, sizeof(conf.pid_file));
    }

    fc_log_set_level(conf.log_level);

    if (fcd->pg != NULL && fcd_conf_pg_changed(&fcd->conf, &conf)) {
        fc_log(FC_LOG_INFO, "postgresql settings changed, reconnecting");
        fcd_pg_close(fcd);
    }

    if (fcd_conf_redis_changed(&fcd->conf, &conf)) {
        if (fcd->redis != NULL) {
            fc_log(FC_LOG_INFO, "redis settings changed, reconnecting");
            fcd_redis_close(fcd);
        }

        fcd->redis_probe = 1;
    }

    if (fcd_conf_atol_changed(&fcd->conf, &conf)) {
        fcd_atol_forget_token(fcd);
    }

    /* a changed script has a new SHA1: Redis answers NOSCRIPT, once */
    fcd_redis_script_free(&fcd->release);
    fcd->release = release;

    fcd->backoff_ms = FCD_BACKOFF_MIN_MS;
    fcd->failures = 0;

    fcd_conf_clear(&fcd->conf);
    fcd->conf = conf;
    fcd_conf_clear(&conf);

    fc_log(FC_LOG_INFO, "configuration reloaded from %s", fcd->conf_path);
}


/*
 * Sleeps up to ms milliseconds, or until the PostgreSQL socket is
 * readable (if connected) or a signal arrives.  Returns what ppoll()
 * does: 1 readable, 0 timed out, -1 interrupted.
 */

static int
fcd_wait(fcd_t *fcd, int64_t ms)
{
    int              n;
    nfds_t           nfds;
    struct pollfd    pfd;
    struct timespec  ts;

    if (ms < 0) {
        ms = 0;
    }

    ts.tv_sec = (time_t) (ms / 1000);
    ts.tv_nsec = (long) (ms % 1000) * 1000000;

    nfds = 0;

    if (fcd->pg != NULL) {
        pfd.fd = PQsocket(fcd->pg);
        pfd.events = POLLIN;
        pfd.revents = 0;
        nfds = 1;
    }

    n = ppoll(nfds ? &pfd : NULL, nfds, &ts, &fcd_wait_mask);

    if (n == -1 && errno != EINTR) {
        fc_log(FC_LOG_ERR, "ppoll() failed: %s", strerror(errno));
    }

    return n > 0 ? 1 : n;
}


/* called between jobs, while the stop signals are blocked */

static int
fcd_stop_requested(void)
{
    sigset_t  pending;

    if (fcd_stop) {
        return 1;
    }

    if (sigpending(&pending) == 0
        && (sigismember(&pending, SIGTERM) == 1
            || sigismember(&pending, SIGINT) == 1))
    {
        return 1;
    }

    return 0;
}


static int
fcd_reload_requested(void)
{
    sigset_t  pending;

    if (fcd_hup) {
        return 1;
    }

    return sigpending(&pending) == 0 && sigismember(&pending, SIGHUP) == 1;
}


static int
fcd_signals_init(void)
{
    sigset_t          block;
    struct sigaction  sa;

    memset(&sa, 0, sizeof(struct sigaction));
    sa.sa_handler = fcd_signal_handler;
    sigemptyset(&sa.sa_mask);

    /* no SA_RESTART: ppoll() must return when a signal arrives */
    if (sigaction(SIGTERM, &sa, NULL) == -1
        || sigaction(SIGINT, &sa, NULL) == -1
        || sigaction(SIGHUP, &sa, NULL) == -1)
    {
        return -1;
    }

    sa.sa_handler = SIG_IGN;

    if (sigaction(SIGPIPE, &sa, NULL) == -1) {
        return -1;
    }

    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);

    if (sigprocmask(SIG_BLOCK, &block, &fcd_wait_mask) == -1) {
        return -1;
    }

    /* the mask in ppoll(): the original one, our three unblocked */
    sigdelset(&fcd_wait_mask, SIGTERM);
    sigdelset(&fcd_wait_mask, SIGINT);
    sigdelset(&fcd_wait_mask, SIGHUP);

    return 0;
}


static void
fcd_signal_handler(int signo)
{
    if (signo == SIGHUP) {
        fcd_hup = 1;

    } else {
        fcd_stop = 1;
    }
}


/*
 * Refuses to start if the pid file names a live process, so that two
 * daemons never work the same queue by accident.
 */

static int
fcd_pid_file_write(const char *path)
{
    int    fd, n;
    char   buf[32];
    long   pid;
    FILE  *f;

    f = fopen(path, "r");

    if (f != NULL) {
        if (fscanf(f, "%ld", &pid) == 1 && pid > 0 && pid != (long) getpid()
            && (kill((pid_t) pid, 0) == 0 || errno == EPERM))
        {
            fclose(f);
            fc_log(FC_LOG_ERR, "pid file \"%s\" names running process %ld, "
                   "is fcd already running?", path, pid);
            return -1;
        }

        fclose(f);
    }

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    if (fd == -1) {
        fc_log(FC_LOG_ERR, "cannot write pid file \"%s\": %s", path,
               strerror(errno));
        return -1;
    }

    n = snprintf(buf, sizeof(buf), "%ld\n", (long) getpid());

    if (write(fd, buf, (size_t) n) != n) {
        fc_log(FC_LOG_ERR, "cannot write pid file \"%s\": %s", path,
               strerror(errno));
        close(fd);
        return -1;
    }

    close(fd);

    return 0;
}


static void
fcd_usage(void)
{
    fprintf(stderr, "usage: fcd [-c config] [-t]\n"
            "  -c config  configuration file (default " FCD_DEFAULT_CONF ")\n"
            "  -t         check the configuration and exit\n");
}
