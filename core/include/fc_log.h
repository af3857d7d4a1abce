/*
 * One-line logging for the daemon.
 *
 * Each call writes one line,
 *
 *     2026-12-04T09:15:02.117Z [info] 4711: released 3 expired holds
 *
 * (UTC time, level, process id, message) to stderr or to a file opened
 * for appending, with one write(2), so lines of several processes
 * sharing a file do not interleave.  Control characters in the message
 * become blanks, so that a value taken from outside cannot forge a
 * line, and every run of digits that could be a card number is masked
 * before the line is written (see fc_log_mask_pans()).
 *
 * The destination and level are process-wide: set them before starting
 * threads.  fc_log() itself may be called from any thread.
 */

#ifndef _FC_LOG_H_INCLUDED_
#define _FC_LOG_H_INCLUDED_


#include <stdarg.h>
#include <stddef.h>


/* longest line written, bytes; longer messages are cut */
#define FC_LOG_LINE_MAX  4096


typedef enum {
    FC_LOG_ERR = 0,
    FC_LOG_WARN,
    FC_LOG_INFO,
    FC_LOG_DEBUG
} fc_log_level_t;


/*
 * Sends the log to the file path (created with mode 0640 if missing), or
 * to stderr if path is NULL or empty.  Calling it again reopens, which
 * is how a rotated file is let go.  Returns 0, or -1 with errno set and
 * the previous destination kept.
 */
int fc_log_open(const char *path);

/* back to stderr, closing any file */
void fc_log_close(void);

/* lines above level are dropped; the default is FC_LOG_INFO */
void fc_log_set_level(fc_log_level_t level);

/* "error", "warn", "info", "debug" to a level; -1 if unknown */
int fc_log_level_parse(const char *s, size_t len, fc_log_level_t *level);

void fc_log(fc_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* fc_log() with the arguments already collected */
void fc_log_va(fc_log_level_t level, const char *fmt, va_list args);

/*
 * Masks, in place, everything in s that looks like a card number: 13 to
 * 19 digits in a row, or 13 to 19 digits written in groups separated by
 * single blanks or dashes ("4276 3800 1234 5678").  All but the first
 * six and last four digits become '*'; the Luhn checksum is not
 * consulted, because a mistyped number must not leak either.  A longer
 * digit run (a 20-digit bank account) is left alone.  Returns the
 * number of runs masked.
 */
size_t fc_log_mask_pans(char *s, size_t len);


#endif /* _FC_LOG_H_INCLUDED_ */
