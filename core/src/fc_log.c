/*
 * Line-at-a-time logging to stderr or a file.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fc_log.h"


#define FC_PAN_RUN_MIN  13
#define FC_PAN_RUN_MAX  19


static void fc_log_mask_run(char *s, size_t from, size_t to, size_t ndigits);
static int fc_log_is_digit(char c);


static int              fc_log_fd = STDERR_FILENO;
static fc_log_level_t   fc_log_max = FC_LOG_INFO;

static const char      *fc_log_names[] = {
    "error", "warn", "info", "debug"
};


int
fc_log_open(const char *path)
{
    int  fd;

    if (path == NULL || path[0] == '\0') {
        fc_log_close();
        return 0;
    }

    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

    if (fd == -1) {
        return -1;
    }

    if (fc_log_fd != STDERR_FILENO) {
        close(fc_log_fd);
    }

    fc_log_fd = fd;

    return 0;
}


void
fc_log_close(void)
{
    if (fc_log_fd != STDERR_FILENO) {
        close(fc_log_fd);
        fc_log_fd = STDERR_FILENO;
    }
}


void
fc_log_set_level(fc_log_level_t level)
{
    fc_log_max = level;
}


int
fc_log_level_parse(const char *s, size_t len, fc_log_level_t *level)
{
    size_t  i;

    for (i = 0; i < sizeof(fc_log_names) / sizeof(fc_log_names[0]); i++) {
        if (strlen(fc_log_names[i]) == len
            && memcmp(fc_log_names[i], s, len) == 0)
        {
            *level = (fc_log_level_t) i;
            return 0;
        }
    }

    return -1;
}


void
fc_log(fc_log_level_t level, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    fc_log_va(level, fmt, args);
    va_end(args);
}


void
fc_log_va(fc_log_level_t level, const char *fmt, va_list args)
{
    int              n, m;
    char             line[FC_LOG_LINE_MAX];
    size_t           len, i;
    struct tm        tm;
    struct timespec  ts;

    if (level > fc_log_max || (size_t) level >= 4) {
        return;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %ld: ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                 fc_log_names[level], (long) getpid());

    if (n < 0) {
        return;
    }

    /* one byte is kept for the newline */
    m = vsnprintf(line + n, sizeof(line) - (size_t) n - 1, fmt, args);

    if (m < 0) {
        return;
    }

    len = (size_t) n + (size_t) m;

    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
        memcpy(line + len - 3, "...", 3);
    }

    for (i = (size_t) n; i < len; i++) {
        if ((unsigned char) line[i] < 0x20 || line[i] == 0x7f) {
            line[i] = ' ';
        }
    }

    fc_log_mask_pans(line + n, len - (size_t) n);

    line[len++] = '\n';

    /* a log that cannot be written has nowhere to report it */
    while (write(fc_log_fd, line, len) == -1 && errno == EINTR) {
        /* void */
    }
}


/*
 * Two kinds of run are masked: plain digit runs, and runs of digit
 * groups joined by single blanks or dashes.  Both are checked, so that a
 * number that stands next to other digits ("4276380012345678 2031") is
 * still caught as a plain run when the joined run is too long.
 */

size_t
fc_log_mask_pans(char *s, size_t len)
{
    size_t  i, j, start, end, ndigits, masked;

    masked = 0;

    /* digit groups joined by single separators */
    for (i = 0; i < len; i = end) {
        if (!fc_log_is_digit(s[i])) {
            end = i + 1;
            continue;
        }

        start = i;
        ndigits = 0;
        end = i;

        for (j = i; j < len; j++) {
            if (fc_log_is_digit(s[j])) {
                ndigits++;
                end = j + 1;
                continue;
            }

            if ((s[j] == ' ' || s[j] == '-') && j + 1 < len
                && fc_log_is_digit(s[j + 1]))
            {
                continue;
            }

            break;
        }

        if (ndigits >= FC_PAN_RUN_MIN && ndigits <= FC_PAN_RUN_MAX) {
            fc_log_mask_run(s, start, end, ndigits);
            masked++;
        }
    }

    /* plain runs; digits masked above are '*' now and end a run */
    for (i = 0; i < len; i = end) {
        if (!fc_log_is_digit(s[i])) {
            end = i + 1;
            continue;
        }

        for (end = i; end < len && fc_log_is_digit(s[end]); end++) {
            /* void */
        }

        if (end - i >= FC_PAN_RUN_MIN && end - i <= FC_PAN_RUN_MAX) {
            fc_log_mask_run(s, i, end, end - i);
            masked++;
        }
    }

    return masked;
}


static void
fc_log_mask_run(char *s, size_t from, size_t to, size_t ndigits)
{
    size_t  i, k;

    for (i = from, k = 0; i < to; i++) {
        if (!fc_log_is_digit(s[i])) {
            continue;
        }

        if (k >= 6 && k < ndigits - 4) {
            s[i] = '*';
        }

        k++;
    }
}


static int
fc_log_is_digit(char c)
{
    return c >= '0' && c <= '9';
}
